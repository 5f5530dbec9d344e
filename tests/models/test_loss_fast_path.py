"""Alternator.loss's fast path (squared errors, the rollout's FTN output reused) equals the
Eq. 12 integrand formed from log-densities (``path_loss``) on the same draws, gradients too."""

import pyro
import pytest
import torch

from alternators_ppl.models import Alternator


def _reference(model, x, mask, z_target):
    """Eq. 12 as before the fast path: rollout, then path_loss from two log-densities, the
    z-term scoring g on the data (the model's draws only where x is missing; DESIGN.md 1)."""
    x_checked, mask_checked = model._prepare(x, mask)
    z, x_ftn = model._rollout(x_checked, mask_checked, model.ftn_input, z_target)
    filled = torch.where(mask_checked, x_checked, x_ftn)
    value = model._path_loss(filled, z, mask_checked, filled).sum()
    return value / x.shape[0] / x.shape[1]


@pytest.mark.parametrize("mask_kind", [None, "steps", "entries"])
@pytest.mark.parametrize("ftn_input", ["conditioned", "generative"])
@pytest.mark.parametrize("supervised", [False, True])
def test_fast_loss_equals_log_density_loss(mask_kind, ftn_input, supervised):
    torch.manual_seed(0)
    model = Alternator(3, 2, hidden=(8,), ftn_input=ftn_input).double()
    x = torch.randn(4, 9, 3, dtype=torch.float64)
    mask = None
    if mask_kind == "steps":
        mask = torch.rand(4, 9) > 0.3
    elif mask_kind == "entries":
        mask = torch.rand(4, 9, 3) > 0.3
    z_target = torch.randn(4, 9, 2, dtype=torch.float64) if supervised else None
    values, grads = [], []
    for loss_fn in (model.loss, lambda *a: _reference(model, *a)):
        pyro.set_rng_seed(3)
        value = loss_fn(x, mask, z_target)
        values.append(value)
        grads.append(torch.autograd.grad(value, list(model.parameters())))
    assert values[0].item() == pytest.approx(values[1].item(), rel=1e-12)
    for got, want in zip(*grads, strict=True):
        assert torch.allclose(got, want, rtol=1e-9, atol=1e-13)
