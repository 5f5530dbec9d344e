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
    0.3, 1 and 2 against draws of sd 1."""
    g = torch.Generator().manual_seed(1)
    draws = torch.randn(200, 500, 3, 1, generator=g, dtype=torch.float64)
    tau = torch.tensor([0.3, 1.0, 2.0], dtype=torch.float64).view(1, 3, 1)
    truth = tau * torch.randn(500, 3, 1, generator=g, dtype=torch.float64)
    truth[:5, 1] = float("nan")  # missing: never scored
    factors = fit_lead_spread(draws, truth)
    assert factors == pytest.approx([0.3, 1.0, 2.0], rel=0.1)
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


class _Regression(SequenceModel):
    """Known input c (column 1), target y = 2 c + noise of sd 1 (column 0): forecasts y given
    c with draws 2 c + N(0, 0.5^2), too narrow by 2x. ``impute`` fills NaN from the column-1
    entry of the same step and records every window it was given."""

    name = "regression"

    def __init__(self):
        self.windows = []

    def fit(self, x_train, x_val=None, *, seed=0, budget_s=None):
        return {}

    def forecast(self, x_context, horizon, num_samples):
        raise AssertionError("a forecast with known inputs goes through forecast_given")

    def impute(self, x, mask, num_samples):
        self.windows.append(x.clone())
        loc = torch.stack([2.0 * x[..., 1], x[..., 1]], dim=-1)
        draws = loc + 0.5 * torch.randn(num_samples, *x.shape) * torch.tensor([1.0, 0.0])
        return torch.where(torch.isnan(x), draws, x.expand_as(draws))

    def sample(self, num_samples, num_steps):
        return torch.zeros(num_samples, num_steps, 2)


def _regression_data(n: int, steps: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(n, steps, generator=g)
    return torch.stack([2.0 * c + torch.randn(n, steps, generator=g), c], dim=-1)


def test_known_inputs_factors_come_from_forecasts_given_the_inputs():
    """With n_targets the factors are fitted on forecasts of the targets given the inputs
    (the held-out targets never reach the model) and forecast_given applies them; the
    default forecast_given is the masked imputation's tail."""
    x_val = _regression_data(400, 9, seed=3)
    model = SpreadRecalibrated(_Regression(), n_targets=1)
    record = model.fit(x_val, x_val, seed=0)["chosen"]["forecast_spread"]
    window = model.model.windows[0]
    assert torch.isnan(window[:, 6:, 0]).all()  # the held-out targets, hidden
    torch.testing.assert_close(window[:, 6:, 1], x_val[:, 6:, 1])  # the inputs, given
    torch.testing.assert_close(window[:, :6], x_val[:, :6])
    assert len(model.factors) == 3 and model.factors == pytest.approx([2.0] * 3, rel=0.1)
    assert record["n_targets"] == 1
    x_test = _regression_data(2000, 4, seed=4)
    known = x_test[:, 2:].clone()
    known[..., 0] = float("nan")
    draws = model.forecast_given(x_test[:, :2], known, 400)
    assert draws.shape == (400, 2000, 2, 2)
    torch.testing.assert_close(draws[..., 1], x_test[:, 2:, 1].expand(400, -1, -1))
    low, high = draws[..., 0].quantile(torch.tensor([0.05, 0.95]), dim=0)
    covered = ((x_test[:, 2:, 0] >= low) & (x_test[:, 2:, 0] <= high)).float().mean()
    assert 0.86 < covered < 0.94  # 0.5 * 2 = 1, the noise sd; unrecalibrated about 0.59
