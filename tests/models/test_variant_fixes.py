"""Regression tests for the variant bugs of issue 11 (each failed before its fix)."""

import math

import pyro
import pytest
import torch

from alternators_ppl.inference import FilteringGuide, SmoothingGuide
from alternators_ppl.inference.svi import posterior_latents
from alternators_ppl.models import Alternator
from alternators_ppl.models.alpha_alternator import AlphaAlternator
from alternators_ppl.models.alternator_pp import AlternatorPlusPlus
from alternators_ppl.models.hyperprior import HyperpriorAlternator
from tests.oracles import program_log_density


def _pp(**kwargs):
    options = dict(sigma_x=0.3, sigma_z=0.1, alpha=0.3, beta=0.5, hidden=(8,), noise_hidden=(8,))
    options.update(kwargs)
    return AlternatorPlusPlus(3, 2, **options).double()


# ---------------------------------------------------------------- ftn_input="generative"
def test_generative_z_term_carries_a_gradient_into_the_ftn():
    """With the OTN's output layer zeroed, f is constant, so the FTN reaches the loss only
    through the z-term: g on the model's draws (which made z) against g on the data."""
    model = Alternator(3, 2, hidden=(8,), ftn_input="generative").double()
    with torch.no_grad():
        model.otn.layers[-1].weight.zero_()
    x = torch.randn(4, 10, 3, dtype=torch.float64)
    model.loss(x).backward()
    grad = torch.cat([p.grad.flatten() for p in model.ftn.parameters()])
    assert torch.isfinite(grad).all() and grad.abs().max() > 1e-4
    # the conditioned reading has no such term: there its z-term is sigma_x^2 sigma_z^2 ||eps||^2
    model.zero_grad()
    model.ftn_input = "conditioned"
    model.loss(x).backward()
    grad = torch.cat([p.grad.flatten() for p in model.ftn.parameters()])
    assert grad.abs().max() < 1e-12


# ---------------------------------------------------------------- Alternator++ noise matching
def test_pp_x_target_is_in_eps_psis_units_so_the_data_mean_is_its_minimiser():
    """If x_t equals the model's mean x_loc(z_{t-1}) (Eq. 12's x-term is zero), the
    noise-matching x-term is zero too: the target is eps_psi itself."""
    model = _pp()
    z = torch.randn(3, 6, 2, dtype=torch.float64)
    with torch.no_grad():
        x = model.x_loc(z[:, :-1])
        mask = torch.ones_like(x, dtype=torch.bool)
        x_term = model.noise_matching_loss(x, z, mask, x)
    assert x_term.item() < 1e-24


def test_pp_drawn_path_gets_no_z_target():
    """On a drawn path the residual (z_t - sqrt(alpha) g(x_t)) / sqrt(1 - alpha - sigma_z^2) is
    eps_nu's own output plus the step's noise; regressing eps_nu on it fits noise, so the
    auxiliary loss leaves eps_nu alone there (it still learns through Eq. 12)."""
    model = _pp()
    x = torch.randn(4, 7, 3, dtype=torch.float64)
    pyro.set_rng_seed(2)
    z, x_read = model.rollout(x)
    pyro.set_rng_seed(2)
    torch.randn(4, 2, dtype=torch.float64), torch.randn_like(x)
    eps = 0.1 * torch.randn(4, 7, 2, dtype=torch.float64)
    with torch.no_grad():
        residual = (z[:, 1:] - math.sqrt(0.3) * model.ftn(x)) / math.sqrt(1 - 0.3 - 0.01)
        own = model.eps_nu(torch.cat([z[:, :-1], x], -1))
    assert torch.allclose(residual - own, eps / math.sqrt(1 - 0.3 - 0.01), atol=1e-12)
    mask = torch.ones_like(x, dtype=torch.bool)
    model.auxiliary_loss(x, z.detach(), mask, x_read).backward()
    assert all(p.grad is None for p in model.eps_nu.parameters())
    assert all(p.grad is not None for p in model.eps_psi.parameters())


# ---------------------------------------------------------------- HyperpriorAlternator and ++
def test_pp_refuses_a_sigma_x_beyond_its_bound_instead_of_nan():
    model = _pp(beta=0.5)  # sigma_x^2 < 1 - beta: sigma_x < 0.7071
    x = torch.randn(2, 4, 3, dtype=torch.float64)
    z = torch.randn(2, 5, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"sigma_x < 0\.7071"):
        with model.hyperparameters(sigma_x=0.75):
            model.log_joint(x, z)
    with model.hyperparameters(sigma_x=torch.tensor(0.7, dtype=torch.float64)):
        assert torch.isfinite(model.log_joint(x, z)).all()


def test_hyperprior_refuses_to_draw_sigma_x_for_alternator_pp():
    model = _pp()
    with pytest.raises(ValueError, match="sigma_x.*beta"):
        HyperpriorAlternator(model)
    program = HyperpriorAlternator(model, learn=("sigma_z", "alpha"))
    x = torch.randn(2, 4, 3, dtype=torch.float64)
    z = torch.randn(2, 5, 2, dtype=torch.float64)
    extra = {
        "sigma_z": torch.tensor(0.2, dtype=torch.float64),
        "alpha_u": torch.tensor(0.5, dtype=torch.float64),
    }
    assert torch.isfinite(program_log_density(program, x, z, extra=extra)).all()


# ---------------------------------------------------------------- data-driven alpha in guides
@pytest.mark.parametrize("guide_cls", [FilteringGuide, SmoothingGuide])
def test_guides_run_the_data_driven_alpha_under_a_sample_plate(guide_cls):
    """With missing entries the filled x_t carries a sample axis from the first gap on; the
    window of recent inputs broadcasts, and each sample's alpha_t follows its own inputs."""
    model = AlphaAlternator(3, 2, alpha=0.3, window=3, hidden=(8,)).double()
    with torch.no_grad():
        model.w.fill_(-1.0)
    x = torch.randn(2, 8, 3, dtype=torch.float64)
    x[:, 2:5, 1] = float("nan")
    paths = posterior_latents(guide_cls(model), x, num_samples=4)
    assert paths.shape == (4, 2, 9, 2) and torch.isfinite(paths).all()
