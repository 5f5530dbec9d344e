"""Fixtures shared by the experiment tests."""

import pytest
import torch


@pytest.fixture
def failing_models(monkeypatch):
    """``compare.build_model`` with two failing stand-ins: ``persistence`` forecasts draws with
    NaNs (ModelFailed: forecast draws are not finite) and ``climatology``'s fit raises
    NonFiniteLossError("loss is nan at epoch 1, batch 1"); other names build as usual."""
    from alternators_ppl.errors import NonFiniteLossError
    from alternators_ppl.experiments import compare
    from alternators_ppl.models.naive import Persistence

    class Diverging(Persistence):
        def forecast(self, x_context, horizon, num_samples):
            draws = super().forecast(x_context, horizon, num_samples)
            return torch.where(torch.rand_like(draws) < 0.1, torch.nan, draws)

    class Exploding(Persistence):
        def fit(self, *args, **kwargs):
            raise NonFiniteLossError("loss is nan at epoch 1, batch 1")

    real = compare.build_model
    fakes = {"persistence": Diverging, "climatology": Exploding}
    monkeypatch.setattr(
        compare,
        "build_model",
        lambda name, d, device=None, **kw: (
            fakes[name](device) if name in fakes else real(name, d, device=device, **kw)
        ),
    )
