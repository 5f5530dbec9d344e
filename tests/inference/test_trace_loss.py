"""Eq. 12 from the pyro.markov trace equals the vectorised loss on the same latent path."""

import pyro
import pytest
import torch

from alternators_ppl.inference.trace_loss import trace_loss
from alternators_ppl.models import Alternator


@pytest.mark.parametrize("masked", [False, True])
def test_trace_loss_equals_path_loss_on_the_same_path(masked):
    model = Alternator(3, 2, hidden=(8,), alpha=[0.2, 0.3, 0.4, 0.5, 0.3, 0.2]).double()
    x = torch.randn(4, 6, 3, dtype=torch.float64)
    mask = torch.rand(4, 6, 3) > 0.3 if masked else None
    z = torch.randn(4, 7, 2, dtype=torch.float64)
    data = {f"z_{t}": z[:, t] for t in range(7)}
    data.update({f"x_missing_{t}": x[:, t - 1] for t in range(1, 7)})
    got = trace_loss(model, x, mask, data=data)
    assert got.item() == pytest.approx(model.path_loss(x, z, mask).mean().item() / 6, rel=1e-12)


def test_trace_loss_is_the_models_loss_in_distribution():
    model = Alternator(3, 2, hidden=(8,))
    x = torch.randn(512, 5, 3)
    pyro.set_rng_seed(1)
    from_trace = trace_loss(model, x).item()
    pyro.set_rng_seed(2)
    vectorised = model.loss(x).item()
    assert from_trace == pytest.approx(vectorised, rel=0.02)


def test_trace_loss_has_gradients():
    model = Alternator(3, 2, hidden=(8,))
    trace_loss(model, torch.randn(2, 4, 3)).backward()
    assert all(p.grad is not None for p in model.ftn.parameters())
