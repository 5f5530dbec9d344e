"""SMC for Alternators (models/smc.py) against exact answers.

The oracle: a linear Alternator (f(z) = F z + b_f, g(x) = G x + b_g) is linear-Gaussian, so
(z_0, x_1, z_1, ..., x_T, z_T) is one joint Gaussian. ``_dense_joint`` builds its mean and
covariance from the structural equations (from the weights, never through x_dist / z_dist or
models/smc.py); Gaussian conditioning on the observed entries then gives the exact log p(x^obs),
filtering and smoothing moments, imputation and forecast moments, with or without missing
entries. Its log p(x) is checked against the Kalman recursion of tests/oracles.py.
"""

import math

import pytest
import torch

from alternators_ppl.inference import particle_filter as public_particle_filter
from alternators_ppl.inference import smoothing_paths as public_smoothing_paths
from alternators_ppl.models import Alternator, HyperpriorAlternator, LinearGaussianSSM
from alternators_ppl.models.alpha_alternator import AlphaAlternator
from alternators_ppl.models.alternator_pp import AlternatorPlusPlus
from alternators_ppl.models.learned_alpha import LearnedAlphaAlternator
from alternators_ppl.models.smc import (
    backward_simulation,
    particle_filter,
    smc_chains,
    smc_forecast,
    smoothing_paths,
)
from alternators_ppl.models.smc_kernels import backward_logits
from alternators_ppl.networks import MLP
from tests.oracles import (
    DenseLinearAlternator,
    kalman_log_likelihood,
    linear_alternator,
    x_index,
    z_index,
)

DX = DZ = 2


@pytest.fixture
def setup():
    """A linear Alternator, one sequence of T = 15 drawn from it and a 30% entry mask."""
    torch.manual_seed(0)
    model = linear_alternator(DX, DZ)
    x = model.sample(1, 15)["x"]
    mask = torch.rand(1, 15, DX) > 0.3
    return model, x, mask


def _per_coordinate():
    """The ``setup`` problem with latent noise (0.45, 0.15) per coordinate (so the decays
    sqrt(1 - alpha - sigma_z,d^2) differ too)."""
    torch.manual_seed(0)
    model = linear_alternator(DX, DZ)
    model.set_noise(sigma_z=[0.45, 0.15])
    x = model.sample(1, 15)["x"]
    mask = torch.rand(1, 15, DX) > 0.3
    return model, x, mask


def _mask_or_all(mask, use):
    return mask if use else torch.ones_like(mask)


# ---------------------------------------------------------------------- oracle sanity
@pytest.mark.parametrize("latent_noise", ["scalar", "per-coordinate"])
def test_dense_oracle_matches_kalman(setup, latent_noise):
    model, x, mask = setup if latent_noise == "scalar" else _per_coordinate()
    exact = DenseLinearAlternator(model, x[0], torch.ones_like(mask[0])).log_marginal()
    assert torch.allclose(exact, kalman_log_likelihood(model, x)[0], atol=1e-10, rtol=0)


# ---------------------------------------------------------------------- log p(x)
@pytest.mark.parametrize("masked", [False, True])
def test_log_marginal_unbiased_and_consistent(setup, masked):
    model, x, mask = setup
    mask = _mask_or_all(mask, masked)
    exact = DenseLinearAlternator(model, x[0], mask[0]).log_marginal()
    repeats = 200
    rmse = {}
    for num in (10, 100, 1000):
        result = particle_filter(
            model, x.expand(repeats, -1, -1), mask.expand(repeats, -1, -1), num, seed=num
        )
        err = result.log_marginal - exact
        rmse[num] = err.square().mean().sqrt().item()
        if num >= 100:
            # exp(log p-hat) is unbiased: the mean ratio p-hat / p is 1 within Monte Carlo error
            ratio = err.exp()
            se = ratio.std() / math.sqrt(repeats)
            assert abs(ratio.mean().item() - 1) < 4 * se.item(), (num, ratio.mean(), se)
        if num == 1000:
            # the log is biased low by about var / 2; beyond that, within Monte Carlo error
            sd = err.std().item()
            assert abs(err.mean().item()) < 4 * sd / math.sqrt(repeats) + sd**2, err.mean()
    assert rmse[1000] < 0.5 * rmse[100] < 0.5 * rmse[10], rmse


# ---------------------------------------------------------------------- filtering
def _coupled():
    """A linear Alternator in which a missing x_t entry strongly shapes z_t (F = 1.5 I,
    G = -1.2 I), one sequence of T = 15 and the second coordinate hidden every other step."""
    torch.manual_seed(0)
    model = linear_alternator(DX, DZ)
    with torch.no_grad():
        model.otn.layers[0].weight.copy_(1.5 * torch.eye(DZ))
        model.ftn.layers[0].weight.copy_(-1.2 * torch.eye(DX))
    x = model.sample(1, 15)["x"]
    mask = torch.ones(1, 15, DX, dtype=torch.bool)
    mask[0, 1::2, 1] = False
    return model, x, mask


@pytest.mark.parametrize("case", ["observed", "masked", "coupled", "per-coordinate"])
def test_filtering_moments_match_exact(setup, case):
    problems = {"coupled": _coupled, "per-coordinate": _per_coordinate}
    model, x, mask = problems[case]() if case in problems else setup
    mask = _mask_or_all(mask, case != "observed")
    exact = DenseLinearAlternator(model, x[0], mask[0])
    num = 20000
    result = particle_filter(model, x, mask, num, seed=1)
    weights = result.log_weights[:, 0].exp()  # (N, T+1)
    for t in range(exact.steps + 1):
        mean, var = exact.condition(z_index(t), upto=t)
        w = weights[:, t, None]
        est = (w * result.particles[:, 0, t]).sum(0)
        est_var = (w * (result.particles[:, 0, t] - est) ** 2).sum(0)
        assert ((est - mean).abs() < 4 * (2 * var / num).sqrt()).all(), (t, est, mean)
        assert ((est_var / var - 1).abs() < 0.06).all(), (t, est_var, var)


# ---------------------------------------------------------------------- smoothing
def _chain_check(draws, mean, var, z_tol=4.5, var_tol=0.1):
    """draws (K, S, D) from K independent particle systems against exact moments (D,)."""
    chains = draws.shape[0]
    chain_means = draws.mean(1)
    z = (chain_means.mean(0) - mean) / (chain_means.std(0) / math.sqrt(chains))
    rel_var = draws.var(1).mean(0) / var - 1
    return z.abs().max().item() < z_tol and rel_var.abs().max().item() < var_tol, z, rel_var


@pytest.mark.parametrize("masked", [False, True, "per-coordinate"])
def test_smoothing_moments_match_exact(setup, masked):
    model, x, mask = _per_coordinate() if masked == "per-coordinate" else setup
    mask = _mask_or_all(mask, masked)
    exact = DenseLinearAlternator(model, x[0], mask[0])
    chains, draws = 20, 200
    paths = smc_chains(model, x, mask, chains, draws, num_particles=400, seed=2)
    assert paths.z.shape == (chains, draws, 1, exact.steps + 1, DZ)
    mean, var = exact.condition(exact.z_path())
    ok, z, rel = _chain_check(paths.z[:, :, 0].reshape(chains, draws, -1), mean, var)
    assert ok, (z, rel)
    if masked:  # imputations: joint draws of x^mis from p(x^mis | x^obs), both sides of a gap
        mean, var = exact.condition(exact.x_missing())
        imputed = paths.x[:, :, 0][:, :, ~mask[0]]
        ok, z, rel = _chain_check(imputed, mean, var)
        assert ok, (z, rel)
        # the ancestral draws (FTN recursion, past only) fail the same check
        anc = torch.stack(
            [
                model.impute(x, mask, draws, method="ancestral")[:, 0][:, ~mask[0]]
                for _ in range(chains)
            ]
        )
        assert not _chain_check(anc, mean, var)[0]


def test_smoothing_coverage_of_true_path():
    torch.manual_seed(3)
    model = linear_alternator(DX, DZ)
    draw = model.sample(40, 20)
    paths = smoothing_paths(model, draw["x"], num_samples=200, num_particles=300, seed=4)
    lo, hi = paths.z.quantile(0.05, 0), paths.z.quantile(0.95, 0)
    coverage = ((draw["z"] >= lo) & (draw["z"] <= hi)).double().mean().item()
    assert 0.85 <= coverage <= 0.95, coverage


def test_forecast_matches_exact_predictive(setup):
    model, x, _ = setup
    context, horizon = 10, 5
    exact = DenseLinearAlternator(model, x[0], torch.ones(15, DX, dtype=torch.bool))
    target = [i for t in range(context + 1, context + horizon + 1) for i in x_index(t)]
    mean, var = exact.condition(target, upto=context)
    num = 4000
    draws = smc_forecast(model, x[:, :context], horizon, num, num, seed=5).x
    est = draws[:, 0].reshape(num, -1)
    assert ((est.mean(0) - mean).abs() < 5 * (2 * var / num).sqrt()).all()
    assert ((est.var(0) / var - 1).abs() < 0.1).all()
    same = model.forecast(x[:, :context], horizon, 10, method="smc", num_particles=50)
    assert same.shape == (10, 1, horizon, DX)


def test_backward_logits_match_broadcast_densities():
    torch.manual_seed(6)
    model = Alternator(3, 4, hidden=(16,)).double()
    num, samples, batch = 7, 5, 3
    cand = torch.randn(num, batch, 4, dtype=torch.float64)
    x_star = torch.randn(samples, batch, 3, dtype=torch.float64)
    z_star = torch.randn(samples, batch, 4, dtype=torch.float64)
    log_w = torch.log_softmax(torch.randn(num, batch, dtype=torch.float64), 0)
    alpha = torch.tensor(0.3, dtype=torch.float64)
    fast = backward_logits(model, log_w, cand, x_star, z_star, alpha)
    xs, zs = x_star.unsqueeze(1), z_star.unsqueeze(1)
    slow = (
        log_w
        + model.x_dist(cand).log_prob(xs).sum(-1)
        + model.z_dist(xs.expand(-1, num, -1, -1), cand.expand(samples, -1, -1, -1), alpha)
        .log_prob(zs)
        .sum(-1)
    ).permute(2, 0, 1)
    assert torch.allclose(fast, slow, atol=1e-9, rtol=0)


# ---------------------------------------------------------------------- variants
def _variants():
    return {
        "alternator++": lambda: AlternatorPlusPlus(2, 3, hidden=(8,), noise_hidden=(8,)),
        "alpha": lambda: AlphaAlternator(2, 3, hidden=(8,), window=3),
        "learned_alpha": lambda: LearnedAlphaAlternator(2, 3, hidden=(8,), alpha=[0.2, 0.3] * 7),
    }


class _Counter(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net, self.rows = net, []

    def forward(self, inputs):
        self.rows.append(inputs.shape[:-1].numel())
        return self.net(inputs)


@pytest.mark.parametrize("name", sorted(_variants()))
def test_variants_run_with_one_network_call_per_step(name):
    torch.manual_seed(7)
    model = _variants()[name]()
    x = model.sample(3, 10)["x"]
    mask = torch.rand(3, 10) > 0.3
    model.otn, model.ftn = _Counter(model.otn), _Counter(model.ftn)
    result = particle_filter(model, x, mask, num_particles=64, seed=0)
    assert torch.isfinite(result.log_marginal).all()
    assert model.otn.rows == [64 * 3] * 10
    assert model.ftn.rows == [64 * 3] * 10
    paths = backward_simulation(model, result, 5)
    assert paths.z.shape == (5, 3, 11, 3) and torch.isfinite(paths.z).all()
    assert torch.equal(paths.x[:, mask], x[mask].expand(5, -1, -1))
    forecast = smc_forecast(model, x, 4, 6, 32)
    assert forecast.x.shape == (6, 3, 4, 2) and torch.isfinite(forecast.x).all()


def _quadrature_log_p(model, x):
    """log p(x_1, x_2) of a 1-D model (Dx = Dz = 1) by a grid over (z_0, z_1), through the
    model's own factors (checks the SMC algorithm, not the factors)."""
    grid = torch.linspace(-7, 7, 1401, dtype=torch.float64)
    step = grid[1] - grid[0]
    z0 = grid.unsqueeze(-1)  # (G, 1)
    x1, x2 = x[0, 0], x[0, 1]
    alpha1 = model._alpha_for(x)[0, 0]
    log_a = torch.distributions.Normal(0.0, 1.0).log_prob(grid) + model.x_dist(z0).log_prob(x1).sum(
        -1
    )  # (G,) over z_0
    z_dist = model.z_dist(x1.expand(grid.shape[0], 1), z0, alpha1)  # over z_0
    log_b = z_dist.log_prob(grid.view(-1, 1, 1)).sum(-1)  # (G z_1, G z_0)
    log_c = model.x_dist(z0).log_prob(x2).sum(-1)  # (G,) over z_1
    total = log_c.unsqueeze(1) + log_b + log_a.unsqueeze(0)
    return torch.logsumexp(total.reshape(-1), 0) + 2 * torch.log(step)


@pytest.mark.parametrize("name", ["alternator++", "alpha"])
def test_nonlinear_variants_log_marginal_matches_quadrature(name):
    torch.manual_seed(8)
    if name == "alternator++":
        model = AlternatorPlusPlus(1, 1, sigma_z=0.5, hidden=(8,), noise_hidden=(8,))
    else:
        model = AlphaAlternator(1, 1, sigma_z=0.5, hidden=(8,), window=2)
        with torch.no_grad():
            model.w.fill_(-0.5)
    model = model.double()
    x = model.sample(1, 2)["x"]
    exact = _quadrature_log_p(model, x)
    repeats = 50
    est = particle_filter(model, x.expand(repeats, -1, -1), num_particles=2000, seed=9)
    ratio = (est.log_marginal - exact).exp()
    assert abs(ratio.mean().item() - 1) < 4 * ratio.std().item() / math.sqrt(repeats) + 1e-3


def test_alpha_alternator_with_gaps_uses_genealogy_or_refuses():
    torch.manual_seed(10)
    model = AlphaAlternator(2, 3, hidden=(8,), window=3)
    x = model.sample(2, 8)["x"]
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[:, 3] = False
    result = particle_filter(model, x, mask, 32, seed=0)
    with pytest.raises(ValueError, match="AlphaAlternator.*genealogy"):
        backward_simulation(model, result, 4, smoother="ffbsi")
    paths = backward_simulation(model, result, 4)  # auto: genealogy
    assert paths.z.shape == (4, 2, 9, 3)
    assert model.impute(x.masked_fill(~mask.unsqueeze(-1), float("nan")), num_samples=3).shape == (
        3,
        2,
        8,
        2,
    )


def test_hyperprior_refused_but_fixed_globals_are_exact(setup):
    model, x, _ = setup
    with pytest.raises(ValueError, match="HyperpriorAlternator.*model.alternator"):
        particle_filter(HyperpriorAlternator(model), x)
    with model.hyperparameters(sigma_x=torch.tensor(0.4, dtype=torch.float64)):
        exact = kalman_log_likelihood(model, x)
        est = particle_filter(model, x.expand(100, -1, -1), num_particles=500, seed=0)
    ratio = (est.log_marginal - exact).exp()
    assert abs(ratio.mean().item() - 1) < 4 * ratio.std().item() / 10
    with model.hyperparameters(sigma_x=torch.full((3, 1), 0.4, dtype=torch.float64)):
        with pytest.raises(ValueError, match="sigma_x is batched"):
            particle_filter(model, x)


# ---------------------------------------------------------------------- the model's methods
def test_alternator_methods(setup):
    model, x, mask = setup
    gappy = x.masked_fill(~mask, float("nan"))
    torch.manual_seed(11)
    old = model._posterior_rollout(gappy, None, 4)[1]
    torch.manual_seed(11)
    assert torch.equal(model.impute(gappy, num_samples=4, method="ancestral"), old)
    imputed = model.impute(gappy, num_samples=4, num_particles=30)
    assert imputed.shape == (4, 1, 15, DX) and torch.equal(imputed[:, mask], x[mask].expand(4, -1))
    assert model.infer_latents(gappy, num_samples=3, num_particles=30).shape == (3, 1, 16, DZ)
    assert model.forecast(x, 3, 5, method="ancestral").shape == (5, 1, 3, DX)
    ll = model.log_likelihood(gappy, num_particles=100, seed=12)
    ref = particle_filter(model, gappy, None, 100, seed=12).log_marginal
    assert torch.equal(ll, ref)
    assert public_particle_filter is particle_filter and public_smoothing_paths is smoothing_paths
    with pytest.raises(ValueError, match="method must be one of"):
        model.impute(gappy, method="nuts")


def test_seed_reproducible_and_global_state_untouched(setup):
    model, x, _ = setup
    state = torch.get_rng_state()
    a = particle_filter(model, x, num_particles=50, seed=3)
    b = particle_filter(model, x, num_particles=50, seed=3)
    assert torch.equal(a.particles, b.particles) and torch.equal(a.log_marginal, b.log_marginal)
    assert torch.equal(torch.get_rng_state(), state)


def test_bad_input(setup):
    model, x, mask = setup
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="num_particles"):
            particle_filter(model, x, num_particles=bad)
    with pytest.raises(ValueError, match="x must have shape"):
        particle_filter(model, x[0])
    with pytest.raises(ValueError, match="feature dim"):
        particle_filter(model, torch.randn(1, 5, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="NaN entries where mask"):
        particle_filter(model, x.masked_fill(~mask, float("nan")), torch.ones_like(mask))
    with pytest.raises(ValueError, match="mask has shape"):
        particle_filter(model, x, mask[:, :3])
    with pytest.raises(ValueError, match="ess_threshold"):
        particle_filter(model, x, ess_threshold=1.5)
    with pytest.raises(ValueError, match="seed"):
        particle_filter(model, x, seed=-1)
    with pytest.raises(TypeError, match="LinearGaussianSSM lacks"):
        particle_filter(LinearGaussianSSM(2, 2), x)
    with pytest.raises(ValueError, match="history=True"):
        backward_simulation(model, particle_filter(model, x, history=False), 3)
    with pytest.raises(ValueError, match="smoother"):
        smoothing_paths(model, x, smoother="pgas")
    with pytest.raises(ValueError, match="num_samples"):
        smoothing_paths(model, x, num_samples=0)
    with pytest.raises(ValueError, match="num_particles"):
        model.impute(x, num_particles=0)
    with pytest.raises(ValueError, match="horizon"):
        smc_forecast(model, x, 0)


@pytest.mark.gpu
def test_cuda():
    model = Alternator(3, 2, hidden=(8,), otn=None, ftn=MLP(3, 2, (8,))).cuda()
    x = model.sample(4, 12)["x"]
    x[0, 3] = float("nan")
    result = particle_filter(model, x, num_particles=128, seed=0)
    assert result.log_marginal.device.type == "cuda" and torch.isfinite(result.log_marginal).all()
    assert model.impute(x, num_samples=5).device.type == "cuda"
    assert model.forecast(x, 3, 5).device.type == "cuda"


def test_sequence_model_log_likelihood_is_the_smc_estimate():
    from alternators_ppl.experiments.registry import AlternatorModel

    wrapped = AlternatorModel(2, latent_dim=3, hidden=8)
    x = wrapped.model.sample(2, 6)["x"]
    torch.manual_seed(0)
    got = wrapped.log_likelihood(x)
    torch.manual_seed(0)
    assert got.shape == (2,) and torch.equal(got, wrapped.model.log_likelihood(x))


def test_rhat_across_independent_particle_systems_flags_too_few_particles(setup):
    import arviz as az

    model, x, _ = setup
    rhat = {}
    for num in (3, 500):
        paths = smc_chains(model, x, num_chains=4, num_draws=200, num_particles=num, seed=1)
        draws = paths.z[:, :, 0].reshape(4, 200, -1).numpy()
        rhat[num] = float(az.rhat(az.convert_to_dataset(draws)).x.max())
    assert rhat[3] > 1.5 and rhat[500] < 1.05, rhat


def test_benchmark_smoke_run(tmp_path):
    from benchmarks.run import run_one

    out = tmp_path / "smc.json"
    args = ["--item", "throughput", "--steps", "20", "--particles", "30", "--smooth-steps", "5"]
    record = run_one("smc", *args, "--draws", "4", "--repeats", "1", "--out", out)
    assert record["item"] == "throughput" and out.exists(), record
    assert record["particle_filter"]["particle_steps_per_s"] > 0
