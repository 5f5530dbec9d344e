"""The Deep Markov Model baseline: programs, ELBO oracle, Kalman bound, samplers, checks."""

import math

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from alternators_ppl.inference.dmm import fit_dmm
from alternators_ppl.models.dmm import DeepMarkovModel


def make_dmm(obs_dim=3, latent_dim=2, hidden=8, **kwargs):
    return DeepMarkovModel(obs_dim, latent_dim, hidden, hidden, hidden, **kwargs).double()


def random_mask(shape, seed=1, p_missing=0.3):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=gen) > p_missing


def log_normal(value, loc, scale):
    """Hand-written diagonal Gaussian log-density summed over the last axis."""
    return (-0.5 * ((value - loc) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)


def trace_log_densities(dmm, x, mask, seed):
    """(log p(x^obs, z), log q(z | x)) summed over sites, for the guide draw of ``seed``."""
    pyro.set_rng_seed(seed)
    guide_trace = poutine.trace(dmm.guide).get_trace(x, mask)
    model_trace = poutine.trace(poutine.replay(dmm.model, trace=guide_trace)).get_trace(x, mask)
    return model_trace.log_prob_sum(), guide_trace.log_prob_sum()


# ---------------------------------------------------------------------- simulators
def simulate_lgssm(num, steps, a, q, r, seed):
    """1-D linear-Gaussian SSM: z_0 ~ N(0, 1), z_t = a z_{t-1} + N(0, q), x_t = z_t + N(0, r)."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(num)
    xs = []
    for _ in range(steps):
        z = a * z + math.sqrt(q) * rng.standard_normal(num)
        xs.append(z + math.sqrt(r) * rng.standard_normal(num))
    return np.stack(xs, axis=1)[..., None]  # (B, T, 1)


def kalman_log_likelihood(x, a, q, r):
    """Exact log p(x_{1:T}) (B,) of the SSM above for x (B, T, 1), by the Kalman filter."""
    m, p = np.zeros(x.shape[0]), 1.0  # moments of z_0
    ll = np.zeros(x.shape[0])
    for t in range(x.shape[1]):
        m, p = a * m, a * a * p + q  # predict z_t
        s = p + r  # innovation variance
        e = x[:, t, 0] - m
        ll += -0.5 * (e**2 / s + math.log(2 * math.pi * s))
        k = p / s
        m, p = m + k * e, (1 - k) * p
    return ll


def inverse_softplus(y):
    return math.log(math.expm1(y))


def set_to_lgssm(dmm, a, q, r):
    """Weights that make a (1, 1)-dimensional DMM exactly the SSM above."""
    tr, em, floor = dmm.transition, dmm.emitter, dmm.min_scale
    with torch.no_grad():
        for p in dmm.parameters():
            p.zero_()
        tr.lin_gate_hidden_to_z.bias.fill_(-1e4)  # gate == 0: only the linear skip remains
        tr.lin_z_to_loc.weight.fill_(a)
        tr.lin_sig.bias.fill_(inverse_softplus(math.sqrt(q) - floor))
        em.lin_z_to_hidden.weight[0, 0] = 1.0  # h = relu(z + 100) = z + 100
        em.lin_z_to_hidden.bias[0] = 100.0
        em.lin_hidden_to_hidden.weight[0, 0] = 1.0
        em.lin_hidden_to_loc.weight[0, 0] = 1.0
        em.lin_hidden_to_loc.bias.fill_(-100.0)
        em.lin_hidden_to_scale.bias.fill_(inverse_softplus(math.sqrt(r) - floor))
    for p in dmm.parameters():  # guide weights: a small random start
        if not any(p is w for w in [*tr.parameters(), *em.parameters()]):
            with torch.no_grad():
                p.normal_(0.0, 0.3)


def noisy_sines(num, steps, seed, noise=0.1, period=12.0):
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * math.pi, size=(num, 1))
    t = np.arange(steps)[None]
    x = np.sin(2 * math.pi * t / period + phase) + noise * rng.standard_normal((num, steps))
    return torch.tensor(x[..., None], dtype=torch.float32)


# ---------------------------------------------------------------------- shapes
@pytest.mark.parametrize("mask_kind", [None, "steps", "entries"])
def test_shapes_of_every_method(mask_kind):
    batch, steps, dx, dz, samples = 4, 6, 3, 2, 5
    dmm = make_dmm(dx, dz)
    x = torch.randn(batch, steps, dx, dtype=torch.float64)
    mask = None
    if mask_kind == "steps":
        mask = random_mask((batch, steps))
    elif mask_kind == "entries":
        mask = random_mask((batch, steps, dx))
    model_trace = poutine.trace(dmm.model).get_trace(x, mask)
    guide_trace = poutine.trace(dmm.guide).get_trace(x, mask)
    for t in range(steps + 1):
        assert model_trace.nodes[f"z_{t}"]["value"].shape == (batch, dz)
        assert guide_trace.nodes[f"z_{t}"]["value"].shape == (batch, dz)
    assert model_trace.nodes[f"x_{steps}"]["value"].shape == (batch, dx)
    assert dmm.elbo(x, mask, num_particles=3).shape == (batch,)
    assert dmm.forecast(x, 4, samples).shape == (samples, batch, 4, dx)
    assert dmm.impute(x, mask, samples).shape == (samples, batch, steps, dx)
    assert dmm.infer_latents(x, mask, samples).shape == (samples, batch, steps + 1, dz)
    draws = dmm.sample(samples, 7)
    assert draws["x"].shape == (samples, 7, dx) and draws["z"].shape == (samples, 8, dz)
    history = fit_dmm(dmm, x, mask, epochs=2, batch_size=3, num_particles=2, x_val=x, mask_val=mask)
    assert len(history.train_loss) == len(history.val_loss) == 2
    assert all(math.isfinite(v) for v in history.train_loss + history.val_loss)


def test_inputs_follow_the_model_dtype_and_accept_numpy():
    dmm = make_dmm()
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    out = dmm.forecast(x, 2, 3)
    assert out.dtype == torch.float64 and out.shape == (3, 2, 2, 3)


def test_samplers_run_on_all_samples_at_once():
    """The batched guide sampler draws what the Pyro guide draws under a sample plate."""
    dmm = make_dmm()
    x = torch.randn(3, 5, 3, dtype=torch.float64)
    x[0, 1, 2] = float("nan")
    pyro.set_rng_seed(7)
    with pyro.plate("samples", 4, dim=-2):
        trace = poutine.trace(dmm.guide).get_trace(x)
    expected = torch.stack([trace.nodes[f"z_{t}"]["value"] for t in range(6)], dim=2)
    pyro.set_rng_seed(7)
    assert torch.allclose(dmm.infer_latents(x, None, 4), expected, rtol=0, atol=1e-12)


def test_encoder_reads_the_future_only():
    dmm = make_dmm()
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    mask = torch.ones_like(x, dtype=torch.bool)
    h = dmm.encode(x, mask)
    x2 = x.clone()
    x2[:, 3] += 1.0
    h2 = dmm.encode(x2, mask)
    assert torch.equal(h[:, 4:], h2[:, 4:])  # h_t summarises x_{t:T}
    assert not torch.allclose(h[:, :4], h2[:, :4])


# ---------------------------------------------------------------------- masks
def test_impute_keeps_observed_entries():
    dmm = make_dmm()
    x = torch.randn(3, 8, 3, dtype=torch.float64)
    mask = random_mask(x.shape)
    draws = dmm.impute(x, mask, 6)
    assert torch.equal(draws[:, mask], x[mask].expand(6, -1))
    assert torch.isfinite(draws).all()
    assert (draws[:, ~mask].std(0) > 0).all()  # missing entries are drawn, not copied


@pytest.mark.parametrize("per_entry", [False, True])
def test_masked_values_never_matter(per_entry):
    dmm = make_dmm()
    x = torch.randn(3, 7, 3, dtype=torch.float64)
    mask = random_mask(x.shape if per_entry else x.shape[:2])
    full_mask = mask if per_entry else mask.unsqueeze(-1).expand(x.shape)
    x_nan = torch.where(full_mask, x, torch.full_like(x, float("nan")))
    x_junk = torch.where(full_mask, x, 1e3 * torch.randn_like(x))
    a = trace_log_densities(dmm, x_nan, None, seed=3)
    b = trace_log_densities(dmm, x_junk, mask, seed=3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = trace_log_densities(dmm, x, None, seed=3)  # control: the hidden values do matter
    assert not torch.allclose(a[0], c[0])
    pyro.set_rng_seed(5)
    imputed_nan = dmm.impute(x_nan, None, 4)
    pyro.set_rng_seed(5)
    imputed_junk = dmm.impute(x_junk, mask, 4)
    assert torch.equal(imputed_nan, imputed_junk)
    pyro.set_rng_seed(6)
    elbo_nan = dmm.elbo(x_nan, None, 2)
    pyro.set_rng_seed(6)
    assert torch.equal(elbo_nan, dmm.elbo(x_junk, mask, 2))


# ---------------------------------------------------------------------- ELBO oracle
def test_elbo_equals_hand_computation():
    """Trace_ELBO and DeepMarkovModel.elbo equal log p(x^obs, z) - log q(z | x) by hand."""
    dmm = make_dmm(obs_dim=2, latent_dim=2, hidden=5)
    x = torch.randn(2, 3, 2, dtype=torch.float64)
    mask = torch.tensor([[[1, 1], [0, 1], [1, 1]], [[1, 0], [1, 1], [0, 0]]], dtype=torch.bool)
    pyro.set_rng_seed(11)
    loss = Trace_ELBO().loss(dmm.model, dmm.guide, x, mask)
    pyro.set_rng_seed(11)
    trace = poutine.trace(dmm.guide).get_trace(x, mask)
    z = [trace.nodes[f"z_{t}"]["value"] for t in range(4)]

    tr, em, cb = dmm.transition, dmm.emitter, dmm.combiner
    relu, floor = torch.relu, dmm.min_scale

    def lin(layer, v):
        return v @ layer.weight.T + layer.bias

    def softplus(v):
        return torch.log1p(torch.exp(v))

    def transition(zp):
        gate = torch.sigmoid(lin(tr.lin_gate_hidden_to_z, relu(lin(tr.lin_gate_z_to_hidden, zp))))
        prop = lin(
            tr.lin_proposed_mean_hidden_to_z, relu(lin(tr.lin_proposed_mean_z_to_hidden, zp))
        )
        loc = (1 - gate) * lin(tr.lin_z_to_loc, zp) + gate * prop
        return loc, softplus(lin(tr.lin_sig, relu(prop))) + floor

    def emission(zt):
        h = relu(lin(em.lin_hidden_to_hidden, relu(lin(em.lin_z_to_hidden, zt))))
        return lin(em.lin_hidden_to_loc, h), softplus(lin(em.lin_hidden_to_scale, h)) + floor

    def combine(zp, h):
        c = 0.5 * (torch.tanh(lin(cb.lin_z_to_hidden, zp)) + h)
        return lin(cb.lin_hidden_to_loc, c), softplus(lin(cb.lin_hidden_to_scale, c)) + floor

    # backward GRU by hand over (x zero-filled, mask)
    inputs = torch.cat([torch.where(mask, x, 0.0), mask.double()], -1)
    w_ih, w_hh, b_ih, b_hh = (
        dmm.rnn.weight_ih_l0,
        dmm.rnn.weight_hh_l0,
        dmm.rnn.bias_ih_l0,
        (dmm.rnn.bias_hh_l0),
    )
    state, hs = dmm.h_0.expand(2, -1), [None] * 3
    for t in (2, 1, 0):
        gi, gh = inputs[:, t] @ w_ih.T + b_ih, state @ w_hh.T + b_hh
        (ir, iz, i_n), (hr, hz, h_n) = gi.chunk(3, -1), gh.chunk(3, -1)
        reset, update = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
        state = (1 - update) * torch.tanh(i_n + reset * h_n) + update * state
        hs[t] = state

    log_q = log_normal(z[0], *combine(dmm.z_q_0.expand(2, -1), hs[0]))
    log_p = log_normal(z[0], torch.zeros(2, 2, dtype=torch.float64), torch.ones(2, 2).double())
    for t in range(1, 4):
        log_q = log_q + log_normal(z[t], *combine(z[t - 1], hs[t - 1]))
        log_p = log_p + log_normal(z[t], *transition(z[t - 1]))
        loc, scale = emission(z[t])
        obs = mask[:, t - 1]
        dens = -0.5 * ((x[:, t - 1] - loc) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)
        log_p = log_p + (dens * obs).sum(-1)
    expected = (log_p - log_q).detach()
    assert -loss == pytest.approx(expected.sum().item(), rel=1e-10, abs=1e-10)
    pyro.set_rng_seed(11)
    assert torch.allclose(dmm.elbo(x, mask, num_particles=1), expected, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------- Kalman bound
A, Q, R = 0.9, 0.3, 0.2


def test_elbo_lower_bounds_exact_likelihood_and_tightens():
    """A DMM set to the linear-Gaussian SSM: ELBO <= Kalman log p(x); training q closes the gap."""
    dmm = DeepMarkovModel(1, 1, 4, 1, 16).double()
    set_to_lgssm(dmm, A, Q, R)
    x = simulate_lgssm(32, 15, A, Q, R, seed=0)
    exact = torch.from_numpy(kalman_log_likelihood(x, A, Q, R))
    x = torch.from_numpy(x)
    weights = {k: v.clone() for k, v in dmm.state_dict().items()}

    before = dmm.elbo(x, num_particles=64)
    assert (before <= exact + 0.05).all()

    frozen = poutine.block(dmm.model, hide_types=["param"])  # train the guide only
    with pyro.get_param_store().scope():
        svi = SVI(frozen, dmm.guide, Adam({"lr": 0.02}), Trace_ELBO())
        for _ in range(150):
            svi.step(x)
    for name in ("transition.lin_z_to_loc.weight", "emitter.lin_hidden_to_scale.bias"):
        assert torch.equal(dmm.state_dict()[name], weights[name])
    after = dmm.elbo(x, num_particles=64)
    gap = exact - after  # KL(q || p(z | x)) >= 0 up to Monte-Carlo error
    assert (gap > -0.25).all(), gap.min()
    assert after.mean() > before.mean() + 1.0
    assert gap.mean() < 1.0, gap.mean()  # from ~85 nats for the untrained guide


def test_training_raises_elbo_below_kalman_likelihood():
    x_train = torch.from_numpy(simulate_lgssm(64, 15, A, Q, R, seed=1)).float()
    x_test = simulate_lgssm(32, 15, A, Q, R, seed=2)
    exact = torch.from_numpy(kalman_log_likelihood(x_test, A, Q, R)).float()
    x_test = torch.from_numpy(x_test).float()
    dmm = DeepMarkovModel(1, 2, 16, 16, 16)
    initial = dmm.elbo(x_test, num_particles=16)
    history = fit_dmm(dmm, x_train, epochs=30, lr=1e-2, batch_size=32, seed=0, x_val=x_test)
    trained = dmm.elbo(x_test, num_particles=16)
    assert history.val_loss[-1] < history.val_loss[0]
    assert trained.mean() > initial.mean() + 5.0
    # E_data[ELBO] <= E_data[log p_theta(x)] <= E_data[log p_true(x)] (Gibbs); MC slack
    assert trained.mean() <= exact.mean() + 0.1
    assert trained.mean() > exact.mean() - 10.0  # and it learned something


# ---------------------------------------------------------------------- forecasting
def test_forecast_beats_climatology_on_noisy_sines():
    x_train = noisy_sines(128, 30, seed=0)
    x_test = noisy_sines(32, 30, seed=1)
    dmm = DeepMarkovModel(1, 2, 16, 16, 16)
    history = fit_dmm(dmm, x_train, epochs=40, lr=2e-2, batch_size=32, seed=0)
    assert history.train_loss[-1] < history.train_loss[0]
    context, future = x_test[:, :22], x_test[:, 22:25]  # 22 steps: not a whole period
    mean = dmm.forecast(context, 3, 64).mean(0)
    climatology = x_train.mean((0, 1))
    rmse = ((mean - future) ** 2).mean((0, 2)).sqrt()
    rmse_clim = ((climatology - future) ** 2).mean((0, 2)).sqrt()
    assert (rmse < 0.7 * rmse_clim).all(), (rmse, rmse_clim)


# ---------------------------------------------------------------------- fit
def test_fit_trains_every_weight_and_is_reproducible():
    x = torch.randn(6, 5, 3, dtype=torch.float64)
    runs = [make_dmm(), make_dmm()]  # two instances: distinct pyro.module names
    runs[1].load_state_dict(runs[0].state_dict())
    start = {k: v.clone() for k, v in runs[0].state_dict().items()}
    first = fit_dmm(runs[0], x, epochs=3, batch_size=4, seed=4)
    second = fit_dmm(runs[1], x, epochs=3, batch_size=4, seed=4)
    assert first.train_loss == second.train_loss
    for name, value in runs[0].state_dict().items():
        assert not torch.equal(value, start[name]), name
    assert len(pyro.get_param_store()) == 0  # fit leaves the global store alone


# ---------------------------------------------------------------------- bad input
def test_bad_inputs_raise_naming_the_argument():
    dmm = make_dmm()
    x = torch.randn(2, 4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="obs_dim"):
        DeepMarkovModel(0, 2)
    with pytest.raises(ValueError, match="rnn_hidden"):
        DeepMarkovModel(3, 2, rnn_hidden=2.5)
    with pytest.raises(ValueError, match="min_scale"):
        DeepMarkovModel(3, 2, min_scale=-1.0)
    with pytest.raises(ValueError, match="x has feature dim 2"):
        dmm.model(torch.randn(2, 4, 2))
    with pytest.raises(ValueError, match="x must have shape"):
        dmm.guide(torch.randn(4, 3))
    with pytest.raises(TypeError, match="x must have a floating-point dtype"):
        dmm.elbo(torch.ones(2, 4, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match="mask must be a bool"):
        dmm.impute(x, torch.ones(2, 4), 3)
    with pytest.raises(ValueError, match="mask has shape"):
        dmm.impute(x, torch.ones(2, 5, dtype=torch.bool), 3)
    with pytest.raises(ValueError, match="num_samples"):
        dmm.impute(x, None, 0)
    with pytest.raises(ValueError, match="horizon"):
        dmm.forecast(x, 0, 3)
    with pytest.raises(TypeError, match="x_context"):
        dmm.forecast([[1.0, 2.0, 3.0]], 2, 3)
    with pytest.raises(ValueError, match="num_steps"):
        dmm.sample(2, -1)
    with pytest.raises(ValueError, match="num_particles"):
        dmm.elbo(x, None, 0)
    with pytest.raises(ValueError, match="epochs"):
        fit_dmm(dmm, x, epochs=0)
    with pytest.raises(ValueError, match="lr"):
        fit_dmm(dmm, x, lr=float("nan"))
    with pytest.raises(ValueError, match="x_val"):
        fit_dmm(dmm, x, epochs=1, x_val=torch.randn(2, 4, 5))
    with pytest.raises(ValueError, match="x_train contains inf"):
        fit_dmm(dmm, torch.full((2, 4, 3), float("inf")))


# ---------------------------------------------------------------------- device
@pytest.mark.gpu
def test_runs_on_cuda():
    dmm = DeepMarkovModel(3, 2, 16, 16, 16).to("cuda")
    x = torch.randn(4, 6, 3)  # inputs follow the model's device
    x[0, 2, 1] = float("nan")
    history = fit_dmm(dmm, x, epochs=2, batch_size=2, num_particles=2, x_val=x)
    assert math.isfinite(history.val_loss[-1])
    assert dmm.elbo(x).device.type == "cuda"
    assert dmm.forecast(x, 3, 5).device.type == "cuda"
    assert dmm.impute(x, None, 5).device.type == "cuda"
    assert dmm.sample(5, 4)["x"].device.type == "cuda"
