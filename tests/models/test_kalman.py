"""Kalman baseline: oracles are pykalman, a dense Gaussian over the whole sequence and Pyro's
GaussianHMM; then EM, gradient fitting, forecasting, imputation and input checks."""

import numpy as np
import pyro.distributions as dist
import pytest
import torch
from pykalman import KalmanFilter
from pyro import poutine

from alternators_ppl.models.kalman import LinearGaussianSSM

F64 = torch.float64


def np_(t):
    return t.detach().cpu().numpy()


# ---------------------------------------------------------------------- helpers
def spd(rng, dim, floor):
    m = rng.normal(size=(dim, dim))
    return m @ m.T / dim + floor * np.eye(dim)


def random_system(rng, obs_dim, latent_dim):
    """A random stable system (spectral norm of A <= 0.95) as a dict of float64 arrays."""
    u, _, vt = np.linalg.svd(rng.normal(size=(latent_dim, latent_dim)))
    A = u @ np.diag(rng.uniform(0.5, 0.95, latent_dim)) @ vt
    return {
        "A": A,
        "H": rng.normal(size=(obs_dim, latent_dim)),
        "Q": spd(rng, latent_dim, 0.1),
        "R": spd(rng, obs_dim, 0.2),
        "m0": rng.normal(size=latent_dim),
        "P0": spd(rng, latent_dim, 0.3),
    }


def pykalman_of(p):
    return KalmanFilter(
        transition_matrices=p["A"],
        observation_matrices=p["H"],
        transition_covariance=p["Q"],
        observation_covariance=p["R"],
        initial_state_mean=p["m0"],
        initial_state_covariance=p["P0"],
    )


def simulate(p, batch, steps, rng):
    dz, dx = p["A"].shape[0], p["H"].shape[0]
    z = rng.multivariate_normal(p["m0"], p["P0"], size=batch)
    xs = []
    for t in range(steps):
        if t > 0:
            z = z @ p["A"].T + rng.multivariate_normal(np.zeros(dz), p["Q"], size=batch)
        xs.append(z @ p["H"].T + rng.multivariate_normal(np.zeros(dx), p["R"], size=batch))
    return np.stack(xs, 1)


def dense_joint(p, steps):
    """Mean and covariance of the stacked vector (z_1..z_T, x_1..x_T), built directly."""
    A, H, Q, R, m0, P0 = (p[k] for k in ("A", "H", "Q", "R", "m0", "P0"))
    dz = A.shape[0]
    means, covs = [m0], [P0]
    for _ in range(1, steps):
        means.append(A @ means[-1])
        covs.append(A @ covs[-1] @ A.T + Q)
    czz = np.zeros((steps * dz, steps * dz))
    for t in range(steps):
        for s in range(t + 1):
            block = np.linalg.matrix_power(A, t - s) @ covs[s]  # Cov(z_t, z_s)
            czz[t * dz : (t + 1) * dz, s * dz : (s + 1) * dz] = block
            czz[s * dz : (s + 1) * dz, t * dz : (t + 1) * dz] = block.T
    big_h = np.kron(np.eye(steps), H)
    cxz = big_h @ czz
    cxx = big_h @ czz @ big_h.T + np.kron(np.eye(steps), R)
    mean = np.concatenate([np.concatenate(means), big_h @ np.concatenate(means)])
    cov = np.block([[czz, cxz.T], [cxz, cxx]])
    return mean, cov, steps * dz


def condition(mean, cov, observed_idx, values):
    """Gaussian conditioning on the entries observed_idx = values: mean, cov, log marginal."""
    rest = np.setdiff1d(np.arange(mean.size), observed_idx)
    s_oo = cov[np.ix_(observed_idx, observed_idx)]
    s_ro = cov[np.ix_(rest, observed_idx)]
    resid = values - mean[observed_idx]
    sol = np.linalg.solve(s_oo, resid)
    cond_mean = mean[rest] + s_ro @ sol
    cond_cov = cov[np.ix_(rest, rest)] - s_ro @ np.linalg.solve(s_oo, s_ro.T)
    _, logdet = np.linalg.slogdet(s_oo)
    logp = -0.5 * (resid @ sol + logdet + len(observed_idx) * np.log(2 * np.pi))
    return rest, cond_mean, cond_cov, logp


def assert_moments(samples, mean, cov, k=5.0):
    """Sample mean and covariance of samples (N, D) within k standard errors of mean, cov."""
    num = samples.shape[0]
    mean_se = np.sqrt(np.diag(cov) / num)
    cov_se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / num)
    mean_err = np.abs(samples.mean(0) - mean) / mean_se
    cov_err = np.abs(np.cov(samples, rowvar=False) - cov) / cov_se
    assert mean_err.max() < k, f"sample mean off by {mean_err.max():.1f} standard errors"
    assert cov_err.max() < k, f"sample covariance off by {cov_err.max():.1f} standard errors"


# ---------------------------------------------------------------------- oracle: pykalman
@pytest.mark.parametrize("obs_dim,latent_dim,steps", [(1, 1, 1), (3, 2, 15), (2, 4, 30)])
@pytest.mark.parametrize("missing", [False, True])
def test_filter_smoother_loglik_match_pykalman(obs_dim, latent_dim, steps, missing):
    rng = np.random.default_rng(obs_dim + 10 * latent_dim + steps)
    p = random_system(rng, obs_dim, latent_dim)
    batch = 3
    x = simulate(p, batch, steps, rng)
    step_mask = np.ones((batch, steps), bool)
    if missing:
        step_mask = rng.random((batch, steps)) > 0.3
        step_mask[0, 0] = False  # a missing first step
        if steps > 1:
            step_mask[1, -1] = False  # a missing last step
    x_nan = np.where(step_mask[..., None], x, np.nan)
    model = LinearGaussianSSM.from_matrices(**p)
    mask = torch.from_numpy(step_mask)
    filt = model.filter(torch.from_numpy(x_nan), mask)
    smooth = model.smooth(torch.from_numpy(x_nan), mask)
    ll = model.log_likelihood(torch.from_numpy(x_nan))  # NaN alone marks missing
    kf = pykalman_of(p)
    for b in range(batch):
        xb = np.ma.masked_array(x[b], mask=np.repeat(~step_mask[b, :, None], obs_dim, 1))
        fm, fc = kf.filter(xb)
        sm, sc = kf.smooth(xb)
        np.testing.assert_allclose(np_(filt.means[b]), fm, rtol=0, atol=1e-8)
        np.testing.assert_allclose(np_(filt.covs[b]), fc, rtol=0, atol=1e-8)
        np.testing.assert_allclose(np_(smooth.means[b]), sm, rtol=0, atol=1e-8)
        np.testing.assert_allclose(np_(smooth.covs[b]), sc, rtol=0, atol=1e-8)
        np.testing.assert_allclose(ll[b].item(), kf.loglikelihood(xb), rtol=1e-10, atol=1e-8)
        np.testing.assert_allclose(filt.log_likelihood[b].item(), ll[b].item(), rtol=1e-12)
    assert filt.means.shape == (batch, steps, latent_dim)
    assert smooth.covs.shape == (batch, steps, latent_dim, latent_dim)


# ---------------------------------------------------------------------- oracle: dense Gaussian
@pytest.mark.parametrize("obs_dim,latent_dim,steps", [(2, 2, 4), (3, 1, 5), (1, 3, 3)])
def test_per_entry_mask_matches_dense_gaussian(obs_dim, latent_dim, steps):
    rng = np.random.default_rng(7 * obs_dim + latent_dim)
    p = random_system(rng, obs_dim, latent_dim)
    batch = 4
    x = simulate(p, batch, steps, rng)
    mask = rng.random((batch, steps, obs_dim)) > 0.4
    mask[0] = True  # one fully observed sequence
    mask[1, 0] = False  # a fully missing step
    mask[2] = False
    mask[2, -1, 0] = True  # a single observed entry
    model = LinearGaussianSSM.from_matrices(**p)
    x_t = torch.from_numpy(np.where(mask, x, np.nan))
    ll = model.log_likelihood(x_t, torch.from_numpy(mask))
    smooth = model.smooth(x_t, torch.from_numpy(mask))
    filt = model.filter(x_t, torch.from_numpy(mask))
    mean, cov, nz = dense_joint(p, steps)
    for b in range(batch):
        obs_idx = nz + np.flatnonzero(mask[b].reshape(-1))
        values = x[b].reshape(-1)[mask[b].reshape(-1)]
        rest, cmean, ccov, logp = condition(mean, cov, obs_idx, values)
        np.testing.assert_allclose(ll[b].item(), logp, rtol=1e-10, atol=1e-10)
        # the latents are the first nz entries of `rest` (all z are unobserved)
        zmean, zcov = cmean[:nz].reshape(steps, latent_dim), ccov[:nz, :nz]
        np.testing.assert_allclose(np_(smooth.means[b]), zmean, atol=1e-9)
        for t in range(steps):
            block = zcov[
                t * latent_dim : (t + 1) * latent_dim, t * latent_dim : (t + 1) * latent_dim
            ]
            np.testing.assert_allclose(np_(smooth.covs[b, t]), block, atol=1e-9)
        # filtered at T == smoothed at T
        np.testing.assert_allclose(np_(filt.means[b, -1]), zmean[-1], atol=1e-9)


def test_log_likelihood_is_differentiable():
    rng = np.random.default_rng(3)
    p = random_system(rng, 2, 2)
    model = LinearGaussianSSM.from_matrices(**p)
    x = torch.from_numpy(simulate(p, 2, 6, rng))
    mask = torch.rand(2, 6, 2) > 0.3
    x = torch.where(mask, x, torch.nan)

    params = list(model.parameters())  # A, H, m0 and the raw Cholesky factors of Q, R, P0
    model.log_likelihood(x, mask).sum().backward()
    grads = [q.grad.clone() for q in params]
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    # directional derivative along a random direction vs central finite differences
    direction = [torch.randn_like(q) for q in params]
    eps = 1e-6

    def shifted(sign):
        with torch.no_grad():
            for q, d in zip(params, direction, strict=True):
                q.add_(sign * eps * d)
            value = model.log_likelihood(x, mask).sum().item()
            for q, d in zip(params, direction, strict=True):
                q.sub_(sign * eps * d)
        return value

    fd = (shifted(1.0) - shifted(-1.0)) / (2 * eps)
    analytic = sum((g * d).sum() for g, d in zip(grads, direction, strict=True)).item()
    np.testing.assert_allclose(analytic, fd, rtol=1e-6)


# ---------------------------------------------------------------------- oracle: Pyro
def test_log_likelihood_matches_pyro_gaussian_hmm_under_notes_mapping():
    gen = torch.Generator().manual_seed(5)
    dz, dx, batch, steps = 3, 2, 4, 9
    rand = lambda *s: torch.randn(*s, generator=gen, dtype=F64)  # noqa: E731

    def spd_t(d):
        m = rand(d, d)
        return m @ m.T / d + 0.2 * torch.eye(d, dtype=F64)

    A_p, H_p, Q, R, S0, mu0 = (
        0.4 * rand(dz, dz),
        rand(dz, dx),
        spd_t(dz),
        spd_t(dx),
        spd_t(dz),
        rand(dz),
    )
    hmm = dist.GaussianHMM(
        dist.MultivariateNormal(mu0, S0),
        A_p,
        dist.MultivariateNormal(torch.zeros(dz, dtype=F64), Q),
        H_p,
        dist.MultivariateNormal(torch.zeros(dx, dtype=F64), R),
        duration=steps,
    )
    x = hmm.expand([batch]).sample()
    # NOTES.md: pykalman (= this model) A = A_p^T, H = H_p^T, m0 = mu0 A_p, P0 = A_p^T S0 A_p + Q
    model = LinearGaussianSSM.from_matrices(A_p.T, H_p.T, Q, R, mu0 @ A_p, A_p.T @ S0 @ A_p + Q)
    torch.testing.assert_close(model.log_likelihood(x), hmm.log_prob(x), rtol=1e-12, atol=1e-10)


def test_pyro_model_equals_log_likelihood_and_samples():
    rng = np.random.default_rng(11)
    p = random_system(rng, 3, 2)
    model = LinearGaussianSSM.from_matrices(**p)
    x = torch.from_numpy(simulate(p, 5, 8, rng))
    trace = poutine.trace(model.pyro_model).get_trace(x)
    trace.compute_log_prob()
    site = trace.nodes["x"]
    assert site["is_observed"] and site["fn"].batch_shape == (5,)
    torch.testing.assert_close(site["log_prob"], model.log_likelihood(x), rtol=1e-12, atol=1e-10)
    prior = poutine.trace(model.pyro_model).get_trace(None, num_steps=6, num_sequences=2)
    assert prior.nodes["x"]["value"].shape == (2, 6, 3)
    one = poutine.trace(model.pyro_model).get_trace(x[:, :1])  # T = 1: only N(m0, P0)
    one.compute_log_prob()
    torch.testing.assert_close(one.nodes["x"]["log_prob"], model.log_likelihood(x[:, :1]))


# ---------------------------------------------------------------------- fitting
EM_VARS = [
    "transition_matrices",
    "observation_matrices",
    "transition_covariance",
    "observation_covariance",
    "initial_state_mean",
    "initial_state_covariance",
]


@pytest.mark.parametrize("missing", [False, True])
def test_em_matches_pykalman_em(missing):
    rng = np.random.default_rng(21)
    truth = random_system(rng, 3, 2)
    start = random_system(rng, 3, 2)
    x = simulate(truth, 1, 40, rng)[0]
    step_mask = np.ones(40, bool)
    if missing:
        step_mask = rng.random(40) > 0.25
    xm = np.ma.masked_array(x, mask=np.repeat(~step_mask[:, None], 3, 1))
    kf = pykalman_of(start).em(xm, n_iter=4, em_vars=EM_VARS)
    model = LinearGaussianSSM.from_matrices(**start)
    history = model.fit_em(torch.from_numpy(x)[None], torch.from_numpy(step_mask)[None], 4)
    fitted = {k: v.detach().numpy() for k, v in model.matrices().items()}
    expected = {
        "A": kf.transition_matrices,
        "H": kf.observation_matrices,
        "Q": kf.transition_covariance,
        "R": kf.observation_covariance,
        "m0": kf.initial_state_mean,
        "P0": kf.initial_state_covariance,
    }
    for name, value in expected.items():
        np.testing.assert_allclose(fitted[name], value, rtol=1e-7, atol=1e-8, err_msg=name)
    np.testing.assert_allclose(history[-1], kf.loglikelihood(xm), rtol=1e-10)


def test_em_is_monotone_and_recovers_predictive_likelihood():
    rng = np.random.default_rng(0)
    truth = random_system(rng, 3, 2)
    # EM is a local method: from the default start (A = 0.9 I) it can stall in a local optimum
    # when A has a negative eigenvalue, so the truth here has eigenvalues in (0.5, 0.95).
    basis = np.eye(2) + 0.5 * rng.normal(size=(2, 2))
    truth["A"] = basis @ np.diag(rng.uniform(0.5, 0.95, 2)) @ np.linalg.inv(basis)
    train = torch.from_numpy(simulate(truth, 64, 30, rng))
    test = torch.from_numpy(simulate(truth, 64, 30, rng))
    model = LinearGaussianSSM(3, 2, dtype=F64)
    history = np.array(model.fit_em(train, num_iters=60))
    assert (np.diff(history) >= -1e-9 * np.abs(history[1:])).all()
    oracle = LinearGaussianSSM.from_matrices(**truth)
    start_gap = (history[0] - oracle.log_likelihood(train).sum().item()) / 1920
    gap = (model.log_likelihood(test).sum() - oracle.log_likelihood(test).sum()).item() / 1920
    # held-out log predictive density per step: from > 0.5 nats below the truth to within 0.02
    assert start_gap < -0.5 and gap > -0.02, (start_gap, gap)


def test_em_is_monotone_with_per_entry_mask():
    rng = np.random.default_rng(4)
    truth = random_system(rng, 3, 2)
    x = simulate(truth, 4, 30, rng)
    mask = rng.random(x.shape) > 0.3
    mask[0, :5] = False
    model = LinearGaussianSSM(3, 2, dtype=F64)
    history = np.array(model.fit_em(torch.from_numpy(np.where(mask, x, np.nan)), num_iters=25))
    assert (np.diff(history) >= -1e-8 * np.abs(history[1:])).all()
    assert history[-1] > history[0] + 1.0
    final = model.log_likelihood(torch.from_numpy(x), torch.from_numpy(mask)).sum().item()
    np.testing.assert_allclose(final, history[-1], rtol=1e-12)


def test_gradient_fit_increases_log_likelihood():
    rng = np.random.default_rng(8)
    truth = random_system(rng, 2, 2)
    x = torch.from_numpy(simulate(truth, 4, 40, rng))
    mask = torch.rand(4, 40) > 0.2
    model = LinearGaussianSSM(2, 2, dtype=F64)
    before = model.log_likelihood(x, mask).sum().item()
    history = model.fit(x, mask, epochs=40, lr=0.05)
    after = model.log_likelihood(x, mask).sum().item()
    assert len(history) == 40 and history[0] == pytest.approx(before)
    assert after > before + 10.0
    for name in ("Q", "R", "P0"):  # the Cholesky parameterisation keeps them PD
        assert torch.linalg.eigvalsh(getattr(model, name)).min() > 0


# ---------------------------------------------------------------------- prediction
def test_forecast_matches_closed_form_prediction():
    rng = np.random.default_rng(13)
    p = random_system(rng, 2, 3)
    x = simulate(p, 2, 12, rng)
    x[1, 4:6] = np.nan  # a gap in the context
    model = LinearGaussianSSM.from_matrices(**p)
    horizon, num = 3, 20000
    draws = model.forecast(torch.from_numpy(x), horizon, num_samples=num)
    assert draws.shape == (num, 2, horizon, 2)
    mean_cf, cov_cf = model.forecast_moments(torch.from_numpy(x), horizon)
    A, H, Q, R = p["A"], p["H"], p["Q"], p["R"]
    for b in range(2):
        fm, fc = pykalman_of(p).filter(np.ma.masked_invalid(x[b]))
        m, P = fm[-1], fc[-1]
        means, Ps = [], []
        for _ in range(horizon):
            m, P = A @ m, A @ P @ A.T + Q
            means.append(H @ m)
            Ps.append(P)
        # joint covariance: Cov(x_{T+i}, x_{T+j}) = H A^(i-j) P_j H^T (+ R if i == j)
        joint = np.zeros((2 * horizon, 2 * horizon))
        for i in range(horizon):
            for j in range(i + 1):
                block = H @ np.linalg.matrix_power(A, i - j) @ Ps[j] @ H.T + (i == j) * R
                joint[2 * i : 2 * i + 2, 2 * j : 2 * j + 2] = block
                joint[2 * j : 2 * j + 2, 2 * i : 2 * i + 2] = block.T
        for h in range(horizon):
            np.testing.assert_allclose(np_(mean_cf[b, h]), means[h], atol=1e-10)
            block = joint[2 * h : 2 * h + 2, 2 * h : 2 * h + 2]
            np.testing.assert_allclose(np_(cov_cf[b, h]), block, atol=1e-10)
        assert_moments(np_(draws[:, b].reshape(num, -1)), np.concatenate(means), joint)


def test_impute_matches_dense_conditional_and_keeps_observed():
    rng = np.random.default_rng(17)
    p = random_system(rng, 2, 2)
    p["R"] = np.array([[1.0, 0.9], [0.9, 1.0]])  # strongly correlated noise: x_obs informs x_miss
    steps, num = 5, 8000
    x = simulate(p, 2, steps, rng)
    mask = rng.random((2, steps, 2)) > 0.4
    mask[0, 2] = False  # a fully missing step
    mask[1, 3] = [True, False]  # a partially observed step (R is full)
    x_nan = torch.from_numpy(np.where(mask, x, np.nan))
    model = LinearGaussianSSM.from_matrices(**p)
    draws = model.impute(x_nan, torch.from_numpy(mask), num_samples=num)
    assert draws.shape == (num, 2, steps, 2)
    obs = torch.from_numpy(mask)
    assert torch.equal(draws[:, obs], x_nan[obs].expand(num, -1))  # observed entries exact
    mean, cov, nz = dense_joint(p, steps)
    for b in range(2):
        flat_mask = mask[b].reshape(-1)
        rest, cmean, ccov, _ = condition(
            mean, cov, nz + np.flatnonzero(flat_mask), x[b].reshape(-1)[flat_mask]
        )
        miss = rest >= nz  # the missing x entries among the unobserved variables
        target_mean, target_cov = cmean[miss], ccov[np.ix_(miss, miss)]
        assert_moments(np_(draws[:, b].reshape(num, -1)[:, ~flat_mask]), target_mean, target_cov)
    # at the fully missing step the mean is the smoother's predicted observation H m_{t|T}
    smooth = model.smooth(x_nan, torch.from_numpy(mask))
    H = p["H"]
    predicted = np_(smooth.means[0, 2]) @ H.T
    predicted_cov = H @ np_(smooth.covs[0, 2]) @ H.T + p["R"]
    assert_moments(np_(draws[:, 0, 2]), predicted, predicted_cov)


def test_sample_shapes_and_moments():
    rng = np.random.default_rng(19)
    p = random_system(rng, 2, 2)
    model = LinearGaussianSSM.from_matrices(**p)
    out = model.sample(20000, 3)
    assert out["x"].shape == (20000, 3, 2) and out["z"].shape == (20000, 3, 2)
    mean, cov, nz = dense_joint(p, 3)
    flat = torch.cat([out["z"].reshape(20000, -1), out["x"].reshape(20000, -1)], 1).numpy()
    assert_moments(flat, mean, cov)
    assert model.sample(2, 1)["x"].shape == (2, 1, 2)


# ---------------------------------------------------------------------- input checks
def test_bad_inputs_raise_named_errors():
    model = LinearGaussianSSM(3, 2, dtype=F64)
    x = torch.randn(2, 5, 3, dtype=F64)
    with pytest.raises(ValueError, match=r"x must have shape \(B, T, D\)"):
        model.filter(torch.randn(5, 3))
    with pytest.raises(ValueError, match="feature dim 4"):
        model.log_likelihood(torch.randn(2, 5, 4))
    with pytest.raises(TypeError, match="x must have a floating-point dtype"):
        model.smooth(torch.ones(2, 5, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="x must be a torch.Tensor or numpy array"):
        model.filter([[1.0]])
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        model.filter(x, torch.ones(2, 5))
    with pytest.raises(ValueError, match=r"mask has shape \(2, 4\)"):
        model.filter(x, torch.ones(2, 4, dtype=torch.bool))
    x_nan = x.clone()
    x_nan[0, 0, 0] = torch.nan
    with pytest.raises(ValueError, match="NaN entries where mask marks them observed"):
        model.filter(x_nan, torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="pyro_model needs fully observed"):
        model.pyro_model(x_nan)
    with pytest.raises(ValueError, match="x_context must have shape"):
        model.forecast(torch.randn(5, 3), 2)
    with pytest.raises(ValueError, match="horizon must be a positive integer"):
        model.forecast(x, 0)
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        model.impute(x, num_samples=0)
    with pytest.raises(ValueError, match="no observed entries"):
        model.fit_em(torch.full((1, 4, 3), torch.nan))
    with pytest.raises(ValueError, match="lr must be > 0"):
        model.fit(x, lr=-1.0)
    with pytest.raises(ValueError, match="num_steps is required"):
        model.pyro_model()
    eye2, eye3 = np.eye(2), np.eye(3)
    good = {"A": eye2, "H": np.ones((3, 2)), "Q": eye2, "R": eye3, "m0": np.zeros(2), "P0": eye2}
    with pytest.raises(ValueError, match=r"A has shape \(3, 3\), expected \(2, 2\)"):
        LinearGaussianSSM.from_matrices(**{**good, "A": eye3})
    with pytest.raises(ValueError, match="R .* must be positive definite"):
        LinearGaussianSSM.from_matrices(**{**good, "R": -eye3})
    with pytest.raises(ValueError, match="Q .* must be symmetric"):
        LinearGaussianSSM.from_matrices(**{**good, "Q": np.array([[1.0, 0.5], [0.0, 1.0]])})
    with pytest.raises(ValueError, match="obs_dim must be a positive integer"):
        LinearGaussianSSM(0, 2)


# ---------------------------------------------------------------------- device
@pytest.mark.gpu
def test_cuda_matches_cpu():
    rng = np.random.default_rng(23)
    p = random_system(rng, 3, 2)
    x = torch.from_numpy(simulate(p, 4, 20, rng))
    mask = torch.rand(4, 20, 3) > 0.3
    x = torch.where(mask, x, torch.nan)
    cpu = LinearGaussianSSM.from_matrices(**p)
    gpu = LinearGaussianSSM.from_matrices(**p, device="cuda")
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.log_likelihood(x, mask).cpu(), cpu.log_likelihood(x, mask))
    torch.testing.assert_close(gpu.smooth(x, mask).means.cpu(), cpu.smooth(x, mask).means)
    assert gpu.impute(x, mask, num_samples=3).device.type == "cuda"
    assert gpu.forecast(x, 2, num_samples=3).device.type == "cuda"
    assert gpu.sample(3, 4)["x"].device.type == "cuda"
    hist = gpu.fit_em(x, mask, num_iters=3)
    assert hist[-1] >= hist[0]
    moved = cpu.to("cuda")
    assert moved.log_likelihood(x).device.type == "cuda"


def test_fit_em_stops_when_its_budget_is_spent():
    x = torch.randn(2, 15, 2, dtype=torch.float64)
    model = LinearGaussianSSM(2, 2, dtype=torch.float64)
    history = model.fit_em(x, num_iters=50, budget_s=0.0)
    assert len(history) == 2 and history[1] >= history[0] - 1e-9
