"""Forecast spread recalibrated per lead: the best factor against a closed form, the
protocol (factors from the validation sequences only) and the wrapper's delegation."""

from __future__ import annotations

import pytest
import torch

from alternators_ppl.evaluation.spread_recalibration import (
    SpreadRecalibrated,
    fit_lead_spread,
    scale_spread,
)
from alternators_ppl.models.interface import SequenceModel


def test_scale_spread_moves_draws_about_their_mean_per_lead():
    draws = torch.randn(50, 3, 4, 2, generator=torch.Generator().manual_seed(0))
    scaled = scale_spread(draws, [2.0, 0.5])  # leads 3 and 4 take the last factor
    mean = draws.mean(0)
    torch.testing.assert_close(scaled.mean(0), mean)
    expected = torch.tensor([2.0, 0.5, 0.5, 0.5]).view(1, 1, 4, 1)
    torch.testing.assert_close(scaled - mean, expected * (draws - mean))
    for bad in ([], [1.0, -0.5], [float("nan")]):
        with pytest.raises(ValueError, match="factors positive"):
            scale_spread(draws, bad)
    with pytest.raises(ValueError, match="draws must be"):
        scale_spread(draws[0], [1.0])


def test_the_best_factor_is_the_truths_sd_over_the_draws():
    """The interval score is proper: among N(0, (s sigma)^2) forecasts of y ~ N(0, tau^2) it is
    lowest where the interval's ends are +-1.645 tau, at s = tau / sigma. Lead-wise truth sds
    0.6, 1 and 2 against draws of sd 1."""
    g = torch.Generator().manual_seed(1)
    draws = torch.randn(200, 500, 3, 1, generator=g, dtype=torch.float64)
    tau = torch.tensor([0.6, 1.0, 2.0], dtype=torch.float64).view(1, 3, 1)
    truth = tau * torch.randn(500, 3, 1, generator=g, dtype=torch.float64)
    truth[:5, 1] = float("nan")  # missing: never scored
    factors = fit_lead_spread(draws, truth)
    assert factors == pytest.approx([0.6, 1.0, 2.0], rel=0.1)
    truth[:, 2] = float("nan")  # a lead with nothing observed keeps 1
    assert fit_lead_spread(draws, truth)[2] == 1.0


class _Gaussian(SequenceModel):
    """Forecasts N(0, 1) draws and records the contexts it was asked about."""

    name = "gaussian"

    def __init__(self):
        self.contexts = []

    def fit(self, x_train, x_val=None, *, seed=0, budget_s=None):
        return {"chosen": {"own": 1}}

    def forecast(self, x_context, horizon, num_samples):
        self.contexts.append(x_context.clone())
        return torch.randn(num_samples, x_context.shape[0], horizon, x_context.shape[-1])

    def impute(self, x, mask, num_samples):
        return torch.zeros(num_samples, *x.shape)

    def sample(self, num_samples, num_steps):
        return torch.zeros(num_samples, num_steps, 1)


def test_factors_come_from_the_last_third_of_the_validation_sequences():
    g = torch.Generator().manual_seed(2)
    x_val = torch.randn(300, 9, 1, generator=g)
    x_val[:, 6:] *= 3.0  # the held-out third: sd 3 against the stand-in's 1
    x_train = 100.0 * torch.randn(300, 9, 1, generator=g)  # never used to choose the spread
    model = SpreadRecalibrated(_Gaussian())
    chosen = model.fit(x_train, x_val, seed=0)["chosen"]
    assert torch.equal(model.model.contexts[0], x_val[:, :6])
    assert model.factors == pytest.approx([3.0] * 3, rel=0.1)
    record = chosen["forecast_spread"]
    assert chosen["own"] == 1 and record["factors"] == model.factors
    score = record["validation_interval_score_90"]
    assert score["after"] < score["before"] and record["validation_crps"]["after"] is not None
    draws = model.forecast(torch.zeros(50, 4, 1), 5, 400)  # leads past 3 take the last factor
    assert draws.std(0).mean().item() == pytest.approx(model.factors[-1], rel=0.05)
    assert model.name == "gaussian" and model.impute(torch.zeros(2, 3, 1), None, 4).shape == (
        4, 2, 3, 1)  # fmt: skip


def test_without_validation_data_nothing_is_recalibrated():
    model = SpreadRecalibrated(_Gaussian())
    assert model.fit(torch.zeros(4, 9, 1))["chosen"] == {"own": 1, "forecast_spread": None}
    torch.manual_seed(0)
    draws = model.forecast(torch.zeros(2, 4, 1), 3, 100)
    torch.manual_seed(0)
    assert torch.equal(draws, model.model.forecast(torch.zeros(2, 4, 1), 3, 100))
