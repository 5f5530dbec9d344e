"""MCMC moves on smoothing paths (models/smc_moves.py) against exact posteriors.

Each test starts from a *degenerate* particle approximation (3 particles: backward simulation
then picks among 3 values per step, far from the posterior) and checks that the sweeps bring
the draws to the exact smoothing posterior: the dense Gaussian oracle of tests/oracles.py for a
linear Alternator (latent path and imputed entries), a quadrature over (z_0, z_1) for the
non-affine variants. Without the sweeps the same checks fail.
"""

import math

import pytest
import torch

from alternators_ppl.models.alpha_alternator import AlphaAlternator
from alternators_ppl.models.alternator_pp import AlternatorPlusPlus
from alternators_ppl.models.smc import smc_chains, smoothing_paths
from alternators_ppl.models.smc_moves import mcmc_moves
from tests.oracles import DenseLinearAlternator, gappy_linear_problem

CHAINS, DRAWS = 20, 200


@pytest.fixture
def setup():
    return gappy_linear_problem(15)


def _agrees(draws, mean, var, z_tol=4.5, var_tol=0.12):
    """draws (K, S, D) of K independent systems against exact moments (D,)."""
    chain_means = draws.mean(1)
    z = (chain_means.mean(0) - mean) / (chain_means.std(0) / math.sqrt(draws.shape[0]))
    rel_var = draws.var(1).mean(0) / var - 1
    return bool(z.abs().max() < z_tol and rel_var.abs().max() < var_tol)


@pytest.mark.parametrize("masked", [False, True])
def test_sweeps_take_degenerate_draws_to_the_exact_smoothing_posterior(setup, masked):
    model, x, mask = setup
    mask = mask if masked else torch.ones_like(mask)
    exact = DenseLinearAlternator(model, x[0], mask[0])
    z_mean, z_var = exact.condition(exact.z_path())
    agree = {}
    for sweeps in (0, 30):
        paths = smc_chains(model, x, mask, CHAINS, DRAWS, 3, seed=2, mcmc_sweeps=sweeps)
        z_ok = _agrees(paths.z[:, :, 0].reshape(CHAINS, DRAWS, -1), z_mean, z_var)
        x_ok = True
        if masked:
            x_mean, x_var = exact.condition(exact.x_missing())
            x_ok = _agrees(paths.x[:, :, 0][:, :, ~mask[0]], x_mean, x_var)
            # observed entries are never moved
            assert torch.equal(
                paths.x[:, :, 0][:, :, mask[0]], x[0][mask[0]].expand(CHAINS, DRAWS, -1)
            )
        agree[sweeps] = (z_ok, x_ok)
    assert agree[30] == (True, True), agree
    assert agree[0] != (True, True), agree


def test_sweeps_restore_rhat_across_systems(setup):
    import arviz as az

    model, x, _ = setup
    rhat = {}
    for sweeps in (0, 20):
        paths = smc_chains(model, x, num_chains=4, num_draws=200, num_particles=3, seed=1,
                           mcmc_sweeps=sweeps)  # fmt: skip
        draws = paths.z[:, :, 0].reshape(4, 200, -1).numpy()
        rhat[sweeps] = float(az.rhat(az.convert_to_dataset(draws)).x.max())
    assert rhat[0] > 1.5 and rhat[20] < 1.05, rhat


def _quadrature_moments(model, x):
    """Posterior means and variances of z_0 and z_1 given x_1, x_2 (Dx = Dz = 1) on a grid,
    through the model's own factors: ((E z_0, E z_1), (Var z_0, Var z_1))."""
    grid = torch.linspace(-7, 7, 1401, dtype=torch.float64)
    z0 = grid.unsqueeze(-1)
    x1, x2 = x[0, 0], x[0, 1]
    alpha1 = model._alpha_for(x)[0, 0]
    log_a = torch.distributions.Normal(0.0, 1.0).log_prob(grid) + model.x_dist(z0).log_prob(x1).sum(
        -1
    )
    log_b = model.z_dist(x1.expand(grid.shape[0], 1), z0, alpha1).log_prob(grid.view(-1, 1, 1))
    log_c = model.x_dist(z0).log_prob(x2).sum(-1)
    weights = torch.softmax((log_c.unsqueeze(1) + log_b.sum(-1) + log_a).reshape(-1), 0)
    weights = weights.reshape(grid.shape[0], grid.shape[0])  # (z_1, z_0)
    p0, p1 = weights.sum(0), weights.sum(1)
    means = torch.stack([(p0 * grid).sum(), (p1 * grid).sum()])
    second = torch.stack([(p0 * grid**2).sum(), (p1 * grid**2).sum()])
    return means, second - means**2


@pytest.mark.parametrize("name", ["alternator++", "alpha"])
def test_non_affine_variants_keep_the_quadrature_posterior(name):
    """Invariance: draws that start near the posterior (2,000 particles) stay there under
    the sweeps (a strongly coupled, non-affine latent step mixes slowly from a degenerate start,
    so that is not asked here)."""
    torch.manual_seed(8)
    if name == "alternator++":
        model = AlternatorPlusPlus(1, 1, sigma_x=0.2, sigma_z=0.3, hidden=(8,), noise_hidden=(8,))
        with torch.no_grad():  # a strong, non-affine dependence of x on z and of z_1 on z_0
            for p in [*model.eps_nu.parameters(), *model.otn.parameters()]:
                p.mul_(3.0)
    else:
        model = AlphaAlternator(1, 1, sigma_z=0.3, hidden=(8,), window=2)
        with torch.no_grad():
            model.w.fill_(-0.5)
    model = model.double()
    x = model.sample(1, 2)["x"]
    mean, var = _quadrature_moments(model, x)
    paths = smc_chains(model, x, None, CHAINS, DRAWS, 1000, seed=3)
    mask = torch.ones_like(x, dtype=torch.bool)
    z, _, acceptance = mcmc_moves(
        model, paths.z.flatten(0, 1), paths.x.flatten(0, 1), mask, sweeps=40
    )
    assert acceptance["z"] > 0.2, acceptance
    assert _agrees(z.reshape(CHAINS, DRAWS, 3)[..., :2], mean, var)


def test_acceptance_rates_and_bad_input(setup):
    model, x, mask = setup
    paths = smoothing_paths(model, x, mask, num_samples=50, num_particles=50, seed=0)
    z, x_new, acceptance = mcmc_moves(model, paths.z, paths.x, mask, sweeps=2)
    assert z.shape == paths.z.shape and x_new.shape == paths.x.shape
    assert 0 < acceptance["z"] <= 1 and 0 < acceptance["x"] <= 1
    with pytest.raises(ValueError, match="sweeps"):
        mcmc_moves(model, paths.z, paths.x, mask, sweeps=0)
    with pytest.raises(ValueError, match="beta"):
        mcmc_moves(model, paths.z, paths.x, mask, beta=1.5)
    with pytest.raises(ValueError, match="mcmc_sweeps"):
        smoothing_paths(model, x, mask, num_samples=5, num_particles=5, mcmc_sweeps=-1)


def test_filter_names_the_step_no_particle_explains(setup):
    model, x, _ = setup
    x = x.clone()
    x[0, 4, 0] = 1e200  # finite, but every particle's density underflows to 0
    with pytest.raises(ValueError, match="sequence 0 at step 5"):
        smoothing_paths(model, x, num_samples=5, num_particles=20, seed=0)
