"""The parallel solvers (blocked, scan) solve the latent recurrence exactly like the loop,
gradients included."""

import pytest
import torch

from alternators_ppl.models import linear_recurrence
from alternators_ppl.models.recurrence import BLOCK


# scan: short and long; blocked: 1 block, exact blocks, a ragged last block, and > BLOCK^2
# steps (two levels of recursion); each also with a per-coordinate decay (T, D)
@pytest.mark.parametrize("per_coordinate", [False, True])
@pytest.mark.parametrize(
    "method, steps, value_rtol, grad_rtol",
    [("scan", steps, 1e-11, 1e-9) for steps in (1, 2, 3, 7, 64, 1000)]
    + [
        ("blocked", steps, 1e-12, 1e-10)
        for steps in (1, 2, 3, 7, BLOCK - 1, BLOCK, 64, 3 * BLOCK + 5, 1000, BLOCK * BLOCK + 77)
    ],
)
def test_parallel_solve_equals_loop_with_gradients(
    method, steps, value_rtol, grad_rtol, per_coordinate
):
    z0 = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    shape = (steps, 3) if per_coordinate else (steps,)
    decay = torch.rand(shape, dtype=torch.float64).mul(0.99).requires_grad_()
    drive = torch.randn(4, steps, 3, dtype=torch.float64, requires_grad=True)
    outputs = [linear_recurrence(z0, decay, drive, method=method),
               linear_recurrence(z0, decay, drive, parallel=False)]  # fmt: skip
    assert outputs[0].shape == (4, steps + 1, 3)
    assert torch.allclose(outputs[0], outputs[1], rtol=value_rtol, atol=1e-12)
    weights = torch.randn_like(outputs[0])
    grads = [torch.autograd.grad((o * weights).sum(), [z0, decay, drive]) for o in outputs]
    for got, want in zip(*grads, strict=True):
        assert torch.allclose(got, want, rtol=grad_rtol, atol=1e-11)


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
