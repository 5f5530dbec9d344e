"""Any :class:`SequenceModel` on the increments of a series (the "I" of ARIMA).

A series with a trend leaves the range its model was trained on, and a model of the levels
(standardised on the training span) must extrapolate; its increments dx_t = x_t - x_{t-1}
usually stay in range. :class:`Differenced` trains the wrapped model on the increments and
turns its draws back into levels:

- forecasts: x_{T+h} = x_T + sum_{k<=h} dx_{T+k}, from the last observed value of each
  dimension of the context;
- imputation: the drawn increments are summed from an observed value, and inside a gap (two
  observed values a at step s and b at step e) each step's increment is moved by
  (b - a - sum of the drawn increments) / (e - s), so the path meets b: for a random walk with
  exchangeable Gaussian increments this is exactly the conditional law of the path given both
  ends (the Brownian-bridge construction); before the first and after the last observed value
  the path is summed outwards from it.
"""

from __future__ import annotations

import torch

from alternators_ppl.models.interface import SequenceModel
from alternators_ppl.validation import as_float_tensor, check_mask, check_sequences

__all__ = ["Differenced", "integrate_forecast", "bridge_levels"]


def _increments(x: torch.Tensor) -> torch.Tensor:
    """dx_t = x_t - x_{t-1} of (B, T, D): (B, T-1, D); NaN where either end is missing."""
    return x[:, 1:] - x[:, :-1]


def _last_observed(x: torch.Tensor) -> torch.Tensor:
    """The last finite value of each sequence and dimension of (B, T, D): (B, D)."""
    seen = torch.isfinite(x)
    if not seen.any(1).all():
        raise ValueError("every sequence needs an observed value in each dimension")
    steps = torch.arange(x.shape[1], device=x.device).view(1, -1, 1)
    last = torch.where(seen, steps, -1).amax(1)  # (B, D)
    return x.gather(1, last.unsqueeze(1)).squeeze(1)


def integrate_forecast(x_context: torch.Tensor, increments: torch.Tensor) -> torch.Tensor:
    """Levels from drawn increments: x_context (B, C, D), increments (S, B, H, D) ->
    (S, B, H, D), starting from the last observed value of each dimension."""
    return _last_observed(x_context).unsqueeze(1) + increments.cumsum(dim=2)


def bridge_levels(x: torch.Tensor, observed: torch.Tensor, increments: torch.Tensor):
    """Levels (S, B, T, D) from drawn increments (S, B, T-1, D) that keep the observed entries
    of x (B, T, D) (``observed`` bool, same shape): summed outwards from the first and last
    observed values, and inside each gap moved by an equal share per step so that the path
    meets the next observed value (the module docstring)."""
    draws = increments.shape[0]
    out = x.unsqueeze(0).expand(draws, *x.shape).clone()
    for b in range(x.shape[0]):
        for d in range(x.shape[2]):
            seen = torch.nonzero(observed[b, :, d]).flatten().tolist()
            if not seen:
                raise ValueError(f"sequence {b}, dimension {d} has no observed value")
            inc = increments[:, b, :, d]  # inc[:, t - 1] moves step t - 1 to step t
            path = out[:, b, :, d]
            first, last = seen[0], seen[-1]
            for t in range(first - 1, -1, -1):  # before the first observed value
                path[:, t] = path[:, t + 1] - inc[:, t]
            for t in range(last + 1, x.shape[1]):  # after the last one
                path[:, t] = path[:, t - 1] + inc[:, t - 1]
            for start, end in zip(seen[:-1], seen[1:], strict=True):
                if end - start < 2:
                    continue
                step = inc[:, start:end]  # (S, end - start)
                shift = (x[b, end, d] - x[b, start, d] - step.sum(1, keepdim=True)) / (end - start)
                path[:, start + 1 : end] = x[b, start, d] + (step + shift).cumsum(1)[:, :-1]
    return out


class Differenced(SequenceModel):
    """``model`` trained on the increments of the series; forecasts and imputations in levels
    (module docstring). x (B, T, D) with NaN = missing, as every :class:`SequenceModel`."""

    def __init__(self, model: SequenceModel):
        if not isinstance(model, SequenceModel):
            raise TypeError(f"model must be a SequenceModel, got {type(model).__name__}")
        self.model = model
        self.name = model.name

    def _levels(self, x, name: str) -> torch.Tensor:
        x = as_float_tensor(x, name, dtype=torch.float64)
        check_sequences(x, name)
        if x.shape[1] < 2:
            raise ValueError(f"{name} needs T >= 2 steps to have increments, got {x.shape[1]}")
        return x

    def fit(self, x_train, x_val=None, *, seed: int = 0, budget_s: float | None = None) -> dict:
        """Fit the wrapped model on the increments of x_train (and x_val)."""
        train = _increments(self._levels(x_train, "x_train"))
        val = None if x_val is None else _increments(self._levels(x_val, "x_val"))
        return self.model.fit(train, val, seed=seed, budget_s=budget_s)

    def forecast(self, x_context, horizon: int, num_samples: int) -> torch.Tensor:
        """Level draws (S, B, horizon, D) after x_context (B, C, D)."""
        x = self._levels(x_context, "x_context")
        increments = self.model.forecast(_increments(x), horizon, num_samples)
        return integrate_forecast(x.to(increments), increments)

    def impute(self, x, mask, num_samples: int) -> torch.Tensor:
        """Level draws (S, B, T, D) with the observed entries of x kept exactly."""
        x = self._levels(x, "x")
        observed = check_mask(mask, x)
        hidden = torch.where(observed, x, torch.nan)
        increments = self.model.impute(_increments(hidden), None, num_samples)
        return bridge_levels(hidden.to(increments), observed, increments)

    def sample(self, num_samples: int, num_steps: int) -> torch.Tensor:
        """Free-running level paths (S, T, D) from 0: the summed increments of the model."""
        increments = self.model.sample(num_samples, num_steps)
        return increments.cumsum(dim=1) - increments[:, :1]
