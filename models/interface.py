"""One interface for every sequence model the comparison harness runs.

Arrays are batch-first, (B, T, D); every method that returns draws puts the sample axis first,
(S, B, T, D). NaN entries of x are missing; ``mask`` is bool, True = observed, (B, T) or
(B, T, D). Models follow the device they were built on and move inputs there.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

__all__ = ["SequenceModel"]


class SequenceModel(ABC):
    """fit / forecast / impute / sample, each returning samples (forecast_given: a forecast
    given known inputs, by impute); log-likelihood where exact."""

    #: short name used in tables and file names
    name: str = "model"
    #: True when :meth:`log_likelihood` is an exact marginal likelihood
    has_exact_likelihood: bool = False
    #: True when :meth:`log_likelihood` is an estimate (e.g. SMC; exp of it unbiased)
    has_likelihood_estimate: bool = False

    @abstractmethod
    def fit(self, x_train, x_val=None, *, seed: int = 0, budget_s: float | None = None) -> dict:
        """Train on x_train (B, T, D) (x_val for model selection); at most ``budget_s`` seconds
        of training when given. Returns a JSON-ready history."""

    @abstractmethod
    def forecast(self, x_context, horizon: int, num_samples: int) -> torch.Tensor:
        """Draws of the ``horizon`` steps after x_context (B, Tc, D): (S, B, horizon, D)."""

    @abstractmethod
    def impute(self, x, mask, num_samples: int) -> torch.Tensor:
        """Draws filling the missing entries of x (B, T, D): (S, B, T, D); observed entries kept."""

    def forecast_given(self, x_context, known_future, num_samples: int) -> torch.Tensor:
        """Draws of the steps after x_context (B, Tc, D) given the known entries of
        known_future (B, H, D) (NaN = to forecast; the known inputs are given): (S, B, H, D),
        the masked imputation of [x_context, known_future] (known entries kept)."""
        horizon = known_future.shape[1]
        window = torch.cat([torch.as_tensor(x_context), torch.as_tensor(known_future)], dim=1)
        return self.impute(window, None, num_samples)[:, :, -horizon:]

    @abstractmethod
    def sample(self, num_samples: int, num_steps: int) -> torch.Tensor:
        """Free-running draws from the fitted model: (S, T, D)."""

    def log_likelihood(self, x, mask=None) -> torch.Tensor:
        """log p(x) per sequence (B,), for models with ``has_exact_likelihood`` (or an estimate
        of it, for models with ``has_likelihood_estimate``)."""
        raise NotImplementedError(f"{self.name} has no exact likelihood")
