"""The paper's comparators: Mamba-style selective SSM, latent ODE, CSDI-style diffusion.

Each algorithm is checked against something independent: the selective scan against its loop
(and mambapy's scan), the ODE solver against the matrix exponential, the latent ODE's ELBO
against the exact log-likelihood of a linear latent ODE, the forward noising against the
one-step Markov chain, and the reverse chain against a Gaussian data distribution whose exact
denoiser is known. The shared SequenceModel checks run in tests/test_conformance.py.
"""

import math

import pytest
import torch
from torch import nn

from alternators_ppl.experiments.registry import build_model
from alternators_ppl.inference import fit
from alternators_ppl.models.diffusion import (
    ConditionalDiffusion,
    DiffusionImputer,
    q_sample,
    quadratic_betas,
    reverse_step,
)
from alternators_ppl.models.mamba import (
    MambaForecaster,
    SelectiveSSMNet,
    selective_scan,
    selective_ssm,
    selective_ssm_step,
)
from alternators_ppl.models.neural_ode import LatentODE, LatentODEModel, latent_path

NAMES = ("mamba", "neural-ode", "diffusion")
TINY = {
    "mamba": {"d_model": 8, "d_state": 4},
    "neural-ode": {"hidden": 8, "latent_dim": 3, "window": 20},
    "diffusion": {"num_steps": 8, "channels": 8, "layers": 3},
}


def _sines(batch, steps, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    phase = 6.28 * torch.rand(batch, 1, 1, generator=gen)
    t = torch.arange(steps).reshape(1, -1, 1) * 0.3
    x = torch.cat([torch.sin(t + phase), torch.cos(t + phase)], -1)
    return (x + 0.05 * torch.randn(x.shape, generator=gen)).to(dtype)


# -- Mamba: the selective scan --------------------------------------------------------------


def test_parallel_selective_scan_equals_its_loop_float64():
    gen = torch.Generator().manual_seed(0)
    for steps in (1, 2, 7, 16, 33):
        decay = torch.rand(3, steps, 5, 4, generator=gen, dtype=torch.float64)
        drive = torch.randn(3, steps, 5, 4, generator=gen, dtype=torch.float64)
        h0 = torch.randn(3, 5, 4, generator=gen, dtype=torch.float64)
        for start in (None, h0):
            fast = selective_scan(decay, drive, start, parallel=True)
            slow = selective_scan(decay, drive, start, parallel=False)
            torch.testing.assert_close(fast, slow, rtol=1e-13, atol=1e-13)
    # and against the recurrence written out by hand
    h, ref = h0, []
    for t in range(steps):
        h = decay[:, t] * h + drive[:, t]
        ref.append(h)
    torch.testing.assert_close(selective_scan(decay, drive, h0), torch.stack(ref, 1))


def test_selective_ssm_equals_step_by_step_recurrence():
    gen = torch.Generator().manual_seed(1)
    kw = dict(generator=gen, dtype=torch.float64)
    u, delta = torch.randn(2, 19, 6, **kw), torch.rand(2, 19, 6, **kw)
    A = -torch.rand(6, 3, **kw) * 3
    B, C, D = torch.randn(2, 19, 3, **kw), torch.randn(2, 19, 3, **kw), torch.randn(6, **kw)
    h0 = torch.randn(2, 6, 3, **kw)
    y, h_last = selective_ssm(u, delta, A, B, C, D, h0, parallel=True)
    h, ys = h0, []
    for t in range(19):
        y_t, h = selective_ssm_step(u[:, t], delta[:, t], A, B[:, t], C[:, t], D, h)
        ys.append(y_t)
    torch.testing.assert_close(y, torch.stack(ys, 1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h_last, h, rtol=1e-12, atol=1e-12)


def test_selective_scan_matches_mambapy():
    pscan = pytest.importorskip("mambapy.pscan").pscan
    gen = torch.Generator().manual_seed(2)
    decay = torch.rand(2, 24, 5, 4, generator=gen, dtype=torch.float64)
    drive = torch.randn(2, 24, 5, 4, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(selective_scan(decay, drive), pscan(decay, drive))


def test_network_parallel_read_equals_recurrent_steps_with_carried_state():
    torch.manual_seed(0)
    net = SelectiveSSMNet(3, d_model=8, d_state=4, num_layers=2).double()
    x = torch.randn(2, 11, 3, dtype=torch.float64)
    mask = torch.rand(2, 11, 3) > 0.3
    x = torch.where(mask, x, 0.0)
    loc, scale, _ = net.read(x, mask, parallel=True)
    loc_loop, _, _ = net.read(x, mask, parallel=False)
    torch.testing.assert_close(loc, loc_loop, rtol=1e-12, atol=1e-12)
    # read a prefix in parallel (state carried: conv buffer + SSM state), then step
    loc_k, scale_k, states = net.read(x[:, :4], mask[:, :4])
    locs, scales = [loc_k], [scale_k]
    for t in range(4, 11):
        loc_t, scale_t, states = net.step(x[:, t], mask[:, t], states)
        locs.append(loc_t.unsqueeze(1))
        scales.append(scale_t.unsqueeze(1))
    torch.testing.assert_close(torch.cat(locs, 1), loc, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.cat(scales, 1), scale, rtol=1e-12, atol=1e-12)


def test_mamba_loss_is_the_gaussian_nll_of_observed_entries():
    torch.manual_seed(0)
    net = SelectiveSSMNet(2, d_model=8, d_state=4).double()
    x = torch.randn(3, 9, 2, dtype=torch.float64)
    x[0, 3, 1] = float("nan")
    loc, scale = net.predict(torch.nan_to_num(x), ~torch.isnan(x))
    obs = ~torch.isnan(x)
    nll = 0.5 * ((x - loc) / scale) ** 2 + scale.log() + 0.5 * math.log(2 * math.pi)
    torch.testing.assert_close(net.loss(x), nll[obs].mean())


def test_mamba_learns_a_held_out_sine_better_than_its_mean():
    model = MambaForecaster(2, d_model=16, d_state=4, epochs=40, lr=1e-2, trainer=fit)
    model.fit(_sines(32, 40), _sines(8, 40, seed=1), seed=0)
    test = _sines(16, 40, seed=2)
    draws = model.forecast(test[:, :30], 5, 50)
    rmse = (draws.mean(0) - test[:, 30:35]).pow(2).mean().sqrt()
    assert rmse < 0.5 * test[:, 30:35].pow(2).mean().sqrt()  # the series has unit scale


# -- latent ODE ----------------------------------------------------------------------------


class _Linear(nn.Module):
    def __init__(self, A):
        super().__init__()
        self.A = A

    def forward(self, t, z):
        return z @ self.A.T


def test_solver_path_equals_matrix_exponential_on_irregular_times():
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(3, 3, generator=gen, dtype=torch.float64) - 1.5 * torch.eye(3)
    z0 = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    times = torch.tensor([0.0, 0.13, 0.2, 0.71, 1.4, 1.45], dtype=torch.float64)
    exact = torch.stack([z0 @ torch.linalg.matrix_exp(A * t).T for t in times], 1)
    path = latent_path(_Linear(A), z0, times, method="dopri5", rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(path, exact, rtol=1e-8, atol=1e-9)
    rk4 = latent_path(_Linear(A), z0, times, method="rk4", step_size=0.005)
    torch.testing.assert_close(rk4, exact, rtol=1e-7, atol=1e-8)
    # backwards in time (the encoder's direction)
    back = latent_path(_Linear(A), z0, times.flip(0), method="dopri5", rtol=1e-11, atol=1e-12)
    span = times[-1] - times.flip(0)
    exact_back = torch.stack([z0 @ torch.linalg.matrix_exp(-A * s).T for s in span], 1)
    torch.testing.assert_close(back, exact_back, rtol=1e-8, atol=1e-9)


class _FixedPosterior(nn.Module):
    def __init__(self, mean, scale):
        super().__init__()
        self.mean, self.scale = mean, scale

    def forward(self, x, mask, times):
        return self.mean, self.scale


def test_elbo_is_exact_log_likelihood_when_q_is_the_posterior():
    """Linear latent ODE, Dz = 1: z(t) = exp(a (t - t_1)) z_1, x_i ~ N(w z(t_i) + b, s^2). With
    q(z_1) the exact posterior the ELBO equals log p(x_observed) (the mean of one-draw ELBOs,
    within Monte Carlo error); any other q gives less."""
    torch.manual_seed(0)
    model = LatentODE(2, latent_dim=1, hidden=4, window=50, method="dopri5").double()
    a = torch.tensor([[-0.7]], dtype=torch.float64)
    model.dynamics = _Linear(a)
    times = torch.tensor([0.0, 0.3, 0.5, 1.1, 1.6], dtype=torch.float64)
    x = torch.randn(1, 5, 2, dtype=torch.float64)
    mask = torch.ones(1, 5, 2, dtype=torch.bool)
    mask[0, 2, 0] = mask[0, 4, 1] = False
    keep = mask.reshape(-1)
    w, b = model.decoder.weight.detach(), model.decoder.bias.detach()
    sigma = model.log_sigma.detach().exp()
    design = (torch.exp(a[0, 0] * times).reshape(-1, 1, 1) * w).reshape(-1)[keep]
    obs = x.reshape(-1)[keep] - b.repeat(5)[keep]
    noise = sigma.repeat(5)[keep] ** 2
    cov = torch.outer(design, design) + torch.diag(noise)
    log_p = torch.distributions.MultivariateNormal(torch.zeros_like(obs), cov).log_prob(obs)
    precision = 1 + (design**2 / noise).sum()
    post_mean = (design * obs / noise).sum() / precision
    draws = 20_000
    x_many, mask_many = x.expand(draws, -1, -1), mask.expand(draws, -1, -1)
    for shift, expect_exact in ((0.0, True), (0.7, False)):
        mean = (post_mean + shift).reshape(1, 1).expand(draws, 1)
        model.encoder = _FixedPosterior(mean, precision.rsqrt().reshape(1, 1).expand(draws, 1))
        with torch.no_grad():
            elbos = model.elbo(torch.where(mask_many, x_many, 0.0), mask_many, times)
        se = elbos.std() / draws**0.5
        if expect_exact:
            assert abs(elbos.mean() - log_p) < 4 * se + 1e-6
        else:
            assert elbos.mean() < log_p - 10 * se


def test_latent_ode_accepts_irregular_times():
    gen = torch.Generator().manual_seed(0)
    times = torch.cumsum(0.05 + 0.2 * torch.rand(30, generator=gen), 0)
    x = torch.stack([torch.sin(times), torch.cos(times)], -1).expand(6, -1, -1).contiguous()
    model = LatentODEModel(2, **TINY["neural-ode"], epochs=2, trainer=fit)
    history = model.fit(x[:4], x[4:], seed=0, times=times)
    assert history["epochs_run"] == 2
    draws = model.forecast(x[:2, :25], 5, 3, times=times)
    assert draws.shape == (3, 2, 5, 2) and torch.isfinite(draws).all()
    assert model.impute(x[:2], None, 2, times=times).shape == (2, 2, 30, 2)
    with pytest.raises(ValueError, match="times"):
        model.forecast(x[:2, :25], 5, 3, times=times.flip(0))
    with pytest.raises(ValueError, match="times"):
        model.fit(x[:4], seed=0, times=times[:10])


# -- diffusion -----------------------------------------------------------------------------


def test_forward_noising_matches_the_one_step_markov_chain():
    """q(x_n | x_0) = N(sqrt(abar_n) x_0, (1 - abar_n) I): moments of q_sample draws and of the
    chain x_n = sqrt(1 - beta_n) x_{n-1} + sqrt(beta_n) eps run step by step."""
    model = ConditionalDiffusion(1, num_steps=20).double()
    betas, alpha_bar = model.betas, model.alpha_bar
    torch.testing.assert_close(betas, quadratic_betas(20))
    gen = torch.Generator().manual_seed(0)
    draws = 200_000
    x0 = torch.full((draws,), 1.7, dtype=torch.float64)
    chain = x0.clone()
    for n in range(20):
        chain = (1 - betas[n]).sqrt() * chain + betas[n].sqrt() * torch.randn(
            draws, generator=gen, dtype=torch.float64
        )
        t = torch.full((draws,), n)
        direct = q_sample(x0, t, torch.randn(draws, generator=gen, dtype=torch.float64), alpha_bar)
        mean, var = alpha_bar[n].sqrt() * 1.7, 1 - alpha_bar[n]
        for sample in (chain, direct):
            se = (var / draws) ** 0.5
            assert abs(sample.mean() - mean) < 5 * se
            assert abs(sample.var() - var) < 5 * var * (2 / draws) ** 0.5
    assert alpha_bar[-1] < 0.02  # the chain ends near N(0, 1)


class _ExactGaussianDenoiser(nn.Module):
    """E[eps | x_t] for data x_0 ~ N(m, s^2) per entry: sqrt(1-abar)(x_t - sqrt(abar) m) /
    (abar s^2 + 1 - abar)."""

    def __init__(self, alpha_bar, m, s):
        super().__init__()
        self.alpha_bar, self.m, self.s = alpha_bar, m, s

    def forward(self, noisy, cond_values, cond_mask, t):
        abar = self.alpha_bar[t].reshape(-1, 1, 1)
        eps = (1 - abar).sqrt() * (noisy - abar.sqrt() * self.m) / (abar * self.s**2 + 1 - abar)
        return torch.where(cond_mask, 0.0, eps)


def test_reverse_chain_with_the_exact_denoiser_draws_its_closed_form():
    """With the exact denoiser of Gaussian data every reverse step is affine in x_t, so the
    chain's output is Gaussian with a mean and variance given by a scalar recursion (written
    here from the DDPM equations); the draws match it, and it is close to the data law."""
    m, s = 0.8, 0.5
    model = ConditionalDiffusion(2, num_steps=50).double()
    model.denoiser = _ExactGaussianDenoiser(model.alpha_bar, m, s)
    betas, abar = model.betas, model.alpha_bar
    mean, var = 0.0, 1.0
    for n in reversed(range(50)):
        # the exact denoiser is eps = gain (x - sqrt(abar) m)
        gain = (1 - abar[n]).sqrt() / (abar[n] * s**2 + 1 - abar[n])
        slope = (1 - betas[n] / (1 - abar[n]).sqrt() * gain) / (1 - betas[n]).sqrt()
        offset = betas[n] / (1 - abar[n]).sqrt() * gain * abar[n].sqrt() * m
        offset = offset / (1 - betas[n]).sqrt()
        noise = betas[n] * (1 - abar[n - 1]) / (1 - abar[n]) if n > 0 else 0.0
        mean, var = slope * mean + offset, slope**2 * var + noise
    x = torch.randn(8000, 3, 2, dtype=torch.float64)
    cond = torch.zeros_like(x, dtype=torch.bool)
    cond[:, 0] = True  # observed entries: kept exactly
    draws = model.impute(x, cond)
    assert torch.equal(draws[cond], x[cond])
    free = draws[~cond]
    count = free.numel()
    assert abs(free.mean() - mean) < 4 * (var / count) ** 0.5
    assert abs(free.var() / var - 1) < 4 * (2 / count) ** 0.5
    # CSDI's coarse 50-step schedule with the lower posterior variance under-disperses by 7%
    assert abs(mean - m) < 0.01 and 0.9 * s < var**0.5 < s
    fine = ConditionalDiffusion(2, num_steps=1000, beta_end=0.02).double()
    fine.denoiser = _ExactGaussianDenoiser(fine.alpha_bar, m, s)
    zeros = torch.zeros(4000, 3, 2, dtype=torch.float64)
    draws = fine.impute(zeros, torch.zeros_like(zeros, dtype=torch.bool))
    assert abs(draws.mean() - m) < 0.015 and abs(draws.std() / s - 1) < 0.02


def test_diffusion_observed_entries_come_back_exactly():
    torch.manual_seed(0)
    model = DiffusionImputer(2, **TINY["diffusion"], epochs=1, trainer=fit)
    x = _sines(3, 25)
    mask = torch.rand(3, 25, 2) > 0.4
    gappy = torch.where(mask, x, float("nan"))
    draws = model.impute(gappy, None, 5)
    assert torch.equal(draws[:, mask], x[mask].expand(5, -1))
    assert torch.isfinite(draws).all() and draws[:, ~mask].std() > 0
    raw = model.module.impute(torch.where(mask, x, 0.0), mask)
    assert torch.equal(raw[mask], x[mask])


# -- the SequenceModel wrappers: training loop, budget, seeds, errors, CUDA -----------------


@pytest.mark.parametrize("name", NAMES)
def test_trains_through_fit_and_honours_epochs_and_budget(name):
    x = _sines(6, 30)
    model = build_model(name, 2, epochs=3, **TINY[name])
    history = model.fit(x[:4], x[4:], seed=0)
    assert history["epochs_run"] == 3 and len(history["val_loss"]) == 3
    assert all(math.isfinite(v) for v in history["train_loss"])
    capped = build_model(name, 2, epochs=50, **TINY[name])
    assert capped.fit(x[:4], seed=0, budget_s=1e-3)["epochs_run"] == 1


@pytest.mark.parametrize("name", NAMES)
def test_seeds_reproduce(name):
    x = _sines(6, 30)
    runs = []
    for _ in range(2):
        model = build_model(name, 2, epochs=2, **TINY[name])
        model.fit(x[:4], seed=3)
        torch.manual_seed(5)
        runs.append(model.forecast(x[4:, :20], 4, 3))
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)


def test_missing_trainer_and_bad_arguments_are_named():
    model = MambaForecaster(2, **TINY["mamba"])
    with pytest.raises(RuntimeError, match="trainer"):
        model.fit(_sines(2, 10))
    with pytest.raises(TypeError, match="trainer"):
        MambaForecaster(2, trainer="fit")
    with pytest.raises(ValueError, match="num_steps"):
        model.sample(2, 0)
    with pytest.raises(ValueError, match="x_context"):
        model.forecast(torch.zeros(2, 5, 3), 2, 2)
    with pytest.raises(ValueError, match="epochs"):
        DiffusionImputer(2, epochs=0)


@pytest.mark.gpu
@pytest.mark.parametrize("name", NAMES)
def test_runs_on_cuda(name):
    x = _sines(6, 30).cuda()
    model = build_model(name, 2, epochs=2, device="cuda", **TINY[name])
    model.fit(x[:4], x[4:], seed=0)
    for draws in (model.forecast(x[:2, :20], 3, 4), model.impute(x, None, 2), model.sample(2, 7)):
        assert draws.device.type == "cuda" and torch.isfinite(draws).all()


def test_clipped_reverse_step_is_the_same_mean_written_through_x0():
    gen = torch.Generator().manual_seed(0)
    betas = quadratic_betas(30)
    alpha_bar = torch.cumprod(1 - betas, 0)
    x_t = torch.randn(5, 4, 1, generator=gen, dtype=torch.float64)
    eps = torch.randn(5, 4, 1, generator=gen, dtype=torch.float64)
    noise = torch.randn(5, 4, 1, generator=gen, dtype=torch.float64)
    for t in (29, 10, 1, 0):
        plain = reverse_step(x_t, eps, t, betas, alpha_bar, noise)
        via_x0 = reverse_step(x_t, eps, t, betas, alpha_bar, noise, clip=1e12)
        torch.testing.assert_close(plain, via_x0, rtol=1e-10, atol=1e-10)
    # at t = 0 a clipped step returns the clamped denoised estimate
    clipped = reverse_step(x_t * 50, eps, 0, betas, alpha_bar, noise, clip=2.0)
    assert clipped.abs().max() <= 2.0 + 1e-12


def test_sampling_benchmark_measures_and_takes_ratios():
    from benchmarks.comparators_sampling import measure, ratios

    record = measure("mamba", 4, 5, 1, "cpu")
    assert record["model"] == "mamba" and record["trajectory_steps_per_s"] > 0
    fake = [{"model": "alternator", "trajectory_steps_per_s": 10.0}, {**record}]
    fake[1]["trajectory_steps_per_s"] = 5.0
    assert ratios(fake) == {"alternator": 1.0, "mamba": 0.5}
