"""alpha-Alternator: Vendi score, alpha_t from recent inputs, program == log-density."""

import math

import pyro
import pytest
import torch

from alternators_ppl.models.alpha_alternator import AlphaAlternator, vendi_score
from tests.oracles import program_log_density


def make_model(**kwargs):
    model = AlphaAlternator(2, 2, hidden=(8,), window=4, **kwargs).double()
    with torch.no_grad():
        model.w.fill_(-0.7)
    return model


def test_vendi_score_limits_and_orders():
    assert vendi_score(torch.zeros(5, 3)).item() == pytest.approx(1.0)
    assert vendi_score(1e3 * torch.eye(5)).item() == pytest.approx(5.0)
    points = torch.randn(7, 2, dtype=torch.float64)
    kernel = torch.exp(-torch.cdist(points, points).square() / 2) / 7
    eig = torch.linalg.eigvalsh(kernel)
    assert vendi_score(points, 2.0).item() == pytest.approx(1 / (eig**2).sum().item(), rel=1e-10)
    shannon = math.exp(-(eig * torch.log(eig)).sum().item())
    assert vendi_score(points, 1.0).item() == pytest.approx(shannon, rel=1e-8)
    assert vendi_score(points, 0.5).item() >= vendi_score(points, 1.0).item()  # VS falls with q


def test_alpha_is_bounded_and_falls_with_diversity_when_w_is_negative():
    model = make_model(sigma_z=0.2)
    calm = torch.zeros(1, 4, 2, dtype=torch.float64)
    noisy = 3 * torch.randn(1, 4, 2, dtype=torch.float64)
    a_calm, a_noisy = model.alpha_from_inputs(calm), model.alpha_from_inputs(noisy)
    assert 0 < a_noisy.item() < a_calm.item() < 1 - 0.04
    assert model.learned_sign == -1


def test_vectorised_alphas_equal_the_step_loop():
    model = make_model()
    x = torch.randn(3, 9, 2, dtype=torch.float64)
    vectorised = model._alpha_for(x)[..., 0]
    stepwise = [model._step_alpha(t, None, list(x[:, : t + 1].unbind(1))) for t in range(9)]
    assert torch.allclose(vectorised, torch.cat(stepwise, dim=1), rtol=1e-12)


@pytest.mark.parametrize("masked", [False, True])
def test_log_joint_equals_the_pyro_program(masked):
    model = make_model()
    x = torch.randn(3, 6, 2, dtype=torch.float64)
    z = torch.randn(3, 7, 2, dtype=torch.float64)
    mask = torch.rand(3, 6, 2) > 0.3 if masked else None
    expected = program_log_density(model, x, z, mask)
    assert torch.allclose(model.log_joint(x, z, mask), expected, rtol=1e-12)


def test_rollout_uses_the_input_dependent_alpha():
    model = make_model()
    model.eval()
    x = torch.randn(2, 8, 2, dtype=torch.float64)
    pyro.set_rng_seed(1)
    z, x_read = model.rollout(x)
    alpha = model._alpha_for(x_read)
    decay = torch.sqrt(1 - alpha - model.sigma_z**2)
    residual = z[:, 1:] - torch.sqrt(alpha) * model.ftn(x_read) - decay * z[:, :-1]
    pyro.set_rng_seed(1)
    torch.randn(2, 2, dtype=torch.float64), torch.randn_like(x)
    eps = model.sigma_z * torch.randn(2, 8, 2, dtype=torch.float64)
    assert torch.allclose(residual, eps, atol=1e-12)


def test_training_masks_random_steps_and_learns_w():
    model = AlphaAlternator(2, 2, hidden=(8,), window=4, mask_rate=0.5)
    x = torch.randn(4, 12, 2)
    model.train()
    pyro.set_rng_seed(0)
    first = model.loss(x)
    pyro.set_rng_seed(1)
    assert model.loss(x).item() != first.item()  # different random masks
    first.backward()
    assert model.w.grad is not None and model.w.grad.abs().item() > 0


def test_invalid_arguments():
    with pytest.raises(ValueError, match="window"):
        AlphaAlternator(2, 2, window=1)
    with pytest.raises(ValueError, match="mask_rate"):
        AlphaAlternator(2, 2, mask_rate=1.0)
    with pytest.raises(ValueError, match="float alpha"):
        AlphaAlternator(2, 2, alpha=[0.3, 0.4])
    with pytest.raises(ValueError, match="order"):
        vendi_score(torch.zeros(2, 2), order=0.0)
