"""The parallel scan solves the latent recurrence exactly like the loop, gradients included."""

import pytest
import torch

from alternators_ppl.models import linear_recurrence


@pytest.mark.parametrize("steps", [1, 2, 3, 7, 64, 1000])
def test_scan_equals_loop_with_gradients(steps):
    z0 = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    decay = torch.rand(steps, dtype=torch.float64).mul(0.99).requires_grad_()
    drive = torch.randn(4, steps, 3, dtype=torch.float64, requires_grad=True)
    outputs = [linear_recurrence(z0, decay, drive, parallel=p) for p in (True, False)]
    assert outputs[0].shape == (4, steps + 1, 3)
    assert torch.allclose(outputs[0], outputs[1], rtol=1e-11, atol=1e-12)
    weights = torch.randn_like(outputs[0])
    grads = [torch.autograd.grad((o * weights).sum(), [z0, decay, drive]) for o in outputs]
    for got, want in zip(*grads, strict=True):
        assert torch.allclose(got, want, rtol=1e-9, atol=1e-11)


def test_closed_form_for_constant_decay():
    z0 = torch.ones(1, 1, dtype=torch.float64)
    decay = torch.full((5,), 0.5, dtype=torch.float64)
    drive = torch.ones(1, 5, 1, dtype=torch.float64)
    z = linear_recurrence(z0, decay, drive)[0, :, 0]
    expected = [1.0, 1.5, 1.75, 1.875, 1.9375, 1.96875]  # z_t = 0.5 z_{t-1} + 1
    assert z.tolist() == pytest.approx(expected, rel=1e-14)


def test_long_scan_stays_finite():
    z = linear_recurrence(
        torch.zeros(2, 3), torch.full((100_000,), 0.83), torch.randn(2, 100_000, 3)
    )
    assert torch.isfinite(z).all() and z.abs().max() < 50
