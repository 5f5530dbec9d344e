"""Blocked solve of the latent recurrence and the fully observed loss fast path (issue 17):
against the plain loop (values and gradients) and against the generic squared-error loss."""

import pytest
import torch

from alternators_ppl.models import Alternator, linear_recurrence


def _problem(steps, batch=3, dim=2, low=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    z0 = torch.randn(batch, dim, generator=g, dtype=torch.float64).requires_grad_()
    decay = low + (0.99 - low) * torch.rand(steps, generator=g, dtype=torch.float64)
    drive = torch.randn(batch, steps, dim, generator=g, dtype=torch.float64).requires_grad_()
    return z0, decay.requires_grad_(), drive


def test_blocked_solve_with_tiny_decays_and_float32():
    # decays down to 1e-30: products underflow inside a block; no logs, no divisions, no NaN
    z0, decay, drive = _problem(500, low=0.0)
    decay = decay.detach().clone()
    decay[::7] = 1e-30
    want = linear_recurrence(z0, decay, drive, parallel=False)
    got = linear_recurrence(z0, decay, drive)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)
    got32 = linear_recurrence(z0.float(), decay.float(), drive.float())
    assert torch.isfinite(got32).all()
    assert torch.allclose(got32.double(), want, rtol=1e-4, atol=1e-4)


def test_scan_method_is_kept_and_bad_method_is_named():
    z0, decay, drive = _problem(40)
    scan = linear_recurrence(z0, decay, drive, method="scan")
    assert torch.allclose(scan, linear_recurrence(z0, decay, drive), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="method"):
        linear_recurrence(z0, decay, drive, method="fft")


@pytest.mark.parametrize("alpha", [0.3, [0.2 + 0.01 * t for t in range(50)]])
def test_fully_observed_loss_equals_generic_squared_errors(alpha):
    """The fast path (z-term from the drawn noise, fused x-term) against the generic form on
    the same drawn path: same value and same parameter gradients."""
    torch.manual_seed(0)
    model = Alternator(3, 2, hidden=(8,), alpha=alpha).double()
    x = torch.randn(4, 50, 3, dtype=torch.float64)
    torch.manual_seed(7)
    fast = model.loss(x)
    fast_grads = torch.autograd.grad(fast, list(model.parameters()))
    torch.manual_seed(7)
    x_in, mask = model._prepare(x, None)
    z, x_read, noise = model._rollout_parts(x_in, mask, "conditioned")
    assert noise is not None  # the fast path really ran
    generic = model._squared_errors(x_read, z, mask, x_read) / 4 / 50
    generic_grads = torch.autograd.grad(generic, list(model.parameters()))
    assert fast.item() == pytest.approx(generic.item(), rel=1e-12)
    for got, want in zip(fast_grads, generic_grads, strict=True):
        assert torch.allclose(got, want, rtol=1e-9, atol=1e-12)


def test_masked_loss_does_not_take_the_fast_path():
    torch.manual_seed(0)
    model = Alternator(3, 2, hidden=(8,)).double()
    x = torch.randn(2, 20, 3, dtype=torch.float64)
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[1, 5] = False
    x_in, mask3 = model._prepare(x, mask)
    assert model._rollout_parts(x_in, mask3, "conditioned")[2] is None
    assert torch.isfinite(model.loss(x, mask))


def test_learned_constant_alpha_reaches_the_fast_path_with_its_gradient():
    """A variant whose schedule learns (one shared alpha) must not take the stored constant."""
    from alternators_ppl.models.learned_alpha import LearnedAlphaAlternator

    torch.manual_seed(0)
    model = LearnedAlphaAlternator(3, 2, hidden=(8,), alpha=0.3).double()
    with torch.no_grad():
        model.alpha_logits.add_(1.0)  # learned alpha now far from the constructor's 0.3
    x = torch.randn(4, 30, 3, dtype=torch.float64)
    results = []
    for parallel in (True, False):
        torch.manual_seed(3)
        loss = model.loss(x, parallel=parallel)
        results.append((loss, torch.autograd.grad(loss, model.alpha_logits)[0]))
    (fast, fast_grad), (loop, loop_grad) = results
    assert fast.item() == pytest.approx(loop.item(), rel=1e-10)
    assert torch.allclose(fast_grad, loop_grad, rtol=1e-8) and fast_grad.abs().item() > 0
