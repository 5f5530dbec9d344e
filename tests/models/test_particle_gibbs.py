"""Particle Gibbs with ancestor sampling (models/particle_gibbs.py) against the exact posterior
of a linear Alternator (dense Gaussian oracle of tests/oracles.py): with only 3 particles per
iteration the chains reach the exact smoothing moments of the path and the imputed entries,
and independent chains agree (R-hat)."""

import pytest
import torch

from alternators_ppl.models.particle_gibbs import particle_gibbs
from tests.oracles import DenseLinearAlternator, gappy_linear_problem

CHAINS, DRAWS = 4, 400


@pytest.fixture(scope="module")
def setup():
    return gappy_linear_problem(12)


def _standardised_error(draws, mean, var):
    """Largest |mean error| in posterior sds and the range of variance ratios; draws (K, S, D)."""
    flat = draws.reshape(-1, draws.shape[-1])
    err = ((flat.mean(0) - mean) / var.sqrt()).abs().max().item()
    ratio = flat.var(0) / var
    return err, ratio.min().item(), ratio.max().item()


@pytest.mark.parametrize("masked", [False, True])
def test_chains_reach_the_exact_smoothing_posterior(setup, masked):
    import arviz as az

    model, x, mask = setup
    mask = mask if masked else torch.ones_like(mask)
    exact = DenseLinearAlternator(model, x[0], mask[0])
    paths = particle_gibbs(model, x, mask, CHAINS, DRAWS, num_particles=3, burn_in=20, seed=1)
    assert paths.z.shape == (CHAINS, DRAWS, 1, 13, 2) and paths.x.shape == (CHAINS, DRAWS, 1, 12, 2)
    z = paths.z[:, :, 0].reshape(CHAINS, DRAWS, -1)
    ess = float(az.ess(az.convert_to_dataset(z.numpy())).x.min())
    rhat = float(az.rhat(az.convert_to_dataset(z.numpy())).x.max())
    assert ess > 50 and rhat < 1.1, (ess, rhat)
    err, low, high = _standardised_error(z, *exact.condition(exact.z_path()))
    assert err < 0.3 and 0.75 < low and high < 1.3, (err, low, high)
    observed = paths.x[:, :, 0][:, :, mask[0]]
    assert torch.equal(observed, x[0][mask[0]].expand_as(observed))
    if masked:
        imputed = paths.x[:, :, 0][:, :, ~mask[0]]
        err, low, high = _standardised_error(imputed, *exact.condition(exact.x_missing()))
        assert err < 0.3 and 0.75 < low and high < 1.3, (err, low, high)


def test_bad_input(setup):
    model, x, mask = setup
    with pytest.raises(ValueError, match="num_particles"):
        particle_gibbs(model, x, mask, 2, 4, num_particles=1)
    with pytest.raises(ValueError, match="burn_in"):
        particle_gibbs(model, x, mask, 2, 4, burn_in=-1)
