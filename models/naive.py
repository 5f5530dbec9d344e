"""Naive references behind the :class:`SequenceModel` interface: persistence and climatology."""

from __future__ import annotations

import math

import numpy as np
import torch

from alternators_ppl.models.interface import SequenceModel
from alternators_ppl.validation import (
    as_float_tensor,
    check_mask,
    check_positive_int,
    check_sequences,
)

__all__ = ["Persistence", "Climatology", "linear_interpolation"]


def linear_interpolation(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Fill missing steps of (B, T, D) by linear interpolation in time between observed ones.

    ``mask`` (B, T) bool, True = observed; before the first / after the last observed step the
    nearest observed value is used.
    """
    steps = torch.arange(x.shape[1], dtype=torch.float64)
    out = x.clone()
    for b in range(x.shape[0]):
        seen = mask[b].cpu()
        if not seen.any():
            raise ValueError(f"sequence {b} has no observed step to interpolate from")
        known = x[b, seen.to(x.device)].double().cpu().numpy()
        filled = [
            np.interp(steps.numpy(), steps[seen].numpy(), known[:, d]) for d in range(x.shape[2])
        ]
        out[b] = torch.as_tensor(np.stack(filled, -1), dtype=x.dtype, device=x.device)
    return out


class _NaiveModel(SequenceModel):
    """Shared plumbing: device, input checks, the training-set statistics."""

    def __init__(self, device=None):
        self.device = torch.device("cpu" if device is None else device)
        self.mean = self.std = None

    def _input(self, x, name: str = "x") -> torch.Tensor:
        x = as_float_tensor(x, name, device=self.device, dtype=torch.get_default_dtype())
        check_sequences(x, name, None if self.mean is None else self.mean.numel())
        return x

    def fit(self, x_train, x_val=None, *, seed: int = 0, budget_s: float | None = None) -> dict:
        """Per-dimension mean and standard deviation of the observed training entries."""
        x = self._input(x_train, "x_train")
        observed = check_mask(None, x)
        count = observed.sum((0, 1))
        if (count < 2).any():
            raise ValueError("x_train needs at least two observed entries per dimension")
        filled = torch.where(observed, x, 0.0)
        self.mean = filled.sum((0, 1)) / count
        var = (torch.where(observed, x - self.mean, 0.0) ** 2).sum((0, 1)) / (count - 1)
        self.std = var.sqrt().clamp_min(1e-12)
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    def _require_fit(self):
        if self.mean is None:
            raise RuntimeError(f"{self.name} is not fitted: call fit(x_train) first")

    def _gaussian(self, num_samples: int, *shape: int) -> torch.Tensor:
        noise = torch.randn(num_samples, *shape, self.mean.numel(), device=self.device)
        return self.mean + self.std * noise


class Persistence(_NaiveModel):
    """Forecast: the last observed value of each dimension, repeated (a point forecast, so all
    S draws are equal and its CRPS is its absolute error). Impute: linear interpolation in time
    between the observed neighbours (nearest observed value at the edges)."""

    name = "persistence"

    def forecast(self, x_context, horizon: int, num_samples: int) -> torch.Tensor:
        horizon = check_positive_int(horizon, "horizon")
        num_samples = check_positive_int(num_samples, "num_samples")
        x = self._input(x_context, "x_context")
        last = linear_interpolation_per_entry(x, check_mask(None, x))[:, -1:]
        return last.expand(num_samples, -1, horizon, -1).clone()

    def impute(self, x, mask, num_samples: int) -> torch.Tensor:
        num_samples = check_positive_int(num_samples, "num_samples")
        x = self._input(x)
        filled = linear_interpolation_per_entry(x, check_mask(mask, x))
        return filled.expand(num_samples, *filled.shape).clone()

    def sample(self, num_samples: int, num_steps: int) -> torch.Tensor:
        """Constant trajectories at draws from the training marginal: (S, T, D)."""
        self._require_fit()
        num_steps = check_positive_int(num_steps, "num_steps")
        start = self._gaussian(check_positive_int(num_samples, "num_samples"), 1)
        return start.expand(-1, num_steps, -1).clone()


class Climatology(_NaiveModel):
    """Every step an independent draw from N(train mean, train std^2) per dimension; the exact
    likelihood of that i.i.d. model is available."""

    name = "climatology"
    has_exact_likelihood = True

    def forecast(self, x_context, horizon: int, num_samples: int) -> torch.Tensor:
        self._require_fit()
        x = self._input(x_context, "x_context")
        horizon = check_positive_int(horizon, "horizon")
        return self._gaussian(check_positive_int(num_samples, "num_samples"), x.shape[0], horizon)

    def impute(self, x, mask, num_samples: int) -> torch.Tensor:
        self._require_fit()
        x = self._input(x)
        observed = check_mask(mask, x)
        draws = self._gaussian(check_positive_int(num_samples, "num_samples"), *x.shape[:2])
        return torch.where(observed, x, draws)

    def sample(self, num_samples: int, num_steps: int) -> torch.Tensor:
        self._require_fit()
        num_steps = check_positive_int(num_steps, "num_steps")
        return self._gaussian(check_positive_int(num_samples, "num_samples"), num_steps)

    def log_likelihood(self, x, mask=None) -> torch.Tensor:
        """Sum over observed entries of log N(x; mean, std^2), per sequence (B,)."""
        self._require_fit()
        x = self._input(x)
        observed = check_mask(mask, x)
        z = (torch.where(observed, x, self.mean) - self.mean) / self.std
        log_density = -0.5 * z**2 - torch.log(self.std) - 0.5 * math.log(2 * math.pi)
        return (log_density * observed).sum((1, 2))


def linear_interpolation_per_entry(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Linear interpolation in time of each dimension over its own observed entries.

    x (B, T, D), mask (B, T, D) bool -> (B, T, D) with observed entries unchanged.
    """
    columns = [
        linear_interpolation(torch.where(mask[..., d], x[..., d], 0.0).unsqueeze(-1), mask[..., d])
        for d in range(x.shape[-1])
    ]
    return torch.where(mask, x, torch.cat(columns, dim=-1))
