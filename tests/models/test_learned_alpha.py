"""Learned alpha schedule: bounded, differentiable, and the program still equals log_joint."""

import pytest
import torch

from alternators_ppl.inference import fit
from alternators_ppl.models.learned_alpha import LearnedAlphaAlternator
from tests.oracles import program_log_density


def test_starts_at_the_given_schedule_and_stays_bounded():
    model = LearnedAlphaAlternator(2, 2, alpha=[0.2, 0.5, 0.7], sigma_z=0.3, hidden=(8,))
    assert torch.allclose(model.alpha_schedule(3), torch.tensor([0.2, 0.5, 0.7]), atol=1e-5)
    with torch.no_grad():
        model.alpha_logits.copy_(torch.tensor([-50.0, 0.0, 50.0]))
    alpha = model.alpha_schedule(3)
    assert (alpha > 0).all() and (alpha + 0.09 < 1).all()
    with pytest.raises(ValueError, match="schedule has 3"):
        model.alpha_schedule(4)


def test_log_joint_equals_the_program_and_carries_alpha_gradients():
    model = LearnedAlphaAlternator(2, 2, alpha=[0.3, 0.4, 0.5, 0.6], hidden=(8,)).double()
    x = torch.randn(3, 4, 2, dtype=torch.float64)
    z = torch.randn(3, 5, 2, dtype=torch.float64)
    expected = program_log_density(model, x, z).sum()
    log_joint = model.log_joint(x, z).sum()
    assert torch.allclose(log_joint, expected, rtol=1e-12)
    log_joint.backward()
    assert model.alpha_logits.grad is not None and (model.alpha_logits.grad != 0).all()


def test_training_moves_the_schedule():
    model = LearnedAlphaAlternator(2, 2, alpha=0.3, hidden=(8,))
    start = model.alpha_schedule(1).item()
    x = torch.randn(8, 20, 2).cumsum(1) * 0.2
    fit(model, x, epochs=5, lr=5e-2, warmup_epochs=1, progress=False, seed=0)
    assert model.alpha_schedule(1).item() != pytest.approx(start, abs=1e-4)
