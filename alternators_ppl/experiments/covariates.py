"""Forecasts with known inputs: the model's masked imputation over [context, horizon].

Covariate columns follow the targets in x (:func:`alternators_ppl.data.covariates.
with_covariates`, read one step ahead). A forecast of the targets given the covariates over the
horizon is the model's imputation of the window [context, horizon] in which the target entries
of the horizon are missing and every covariate entry is given: SMC smoothing for the
Alternator, the Kalman smoother for ``kalman``, each model's own ``impute`` otherwise. The
hidden target values are replaced by NaN before the model sees the window.
"""

from __future__ import annotations

import torch

from alternators_ppl.data.covariates import CALENDAR_FEATURES
from alternators_ppl.data.scaling import Standardizer
from alternators_ppl.validation import check_positive_int

__all__ = [
    "covariate_window",
    "covariate_forecast",
    "target_count",
    "target_scaler",
    "read_columns",
]


def covariate_window(past: torch.Tensor, future: torch.Tensor, n_targets: int) -> torch.Tensor:
    """[past, future] (N, C + H, D) with the target entries (the first ``n_targets`` columns)
    of the future set to NaN; the covariate columns of the future are kept."""
    if past.shape[0] != future.shape[0] or past.shape[-1] != future.shape[-1]:
        raise ValueError(
            f"past {tuple(past.shape)} and future {tuple(future.shape)} must share N and D"
        )
    if not 0 < n_targets < past.shape[-1]:
        raise ValueError(f"n_targets must be in [1, {past.shape[-1] - 1}], got {n_targets}")
    hidden = future.clone()
    hidden[..., :n_targets] = float("nan")
    return torch.cat([past, hidden], dim=1)


def covariate_forecast(
    model, past: torch.Tensor, future: torch.Tensor, n_targets: int, num_samples: int
) -> torch.Tensor:
    """Draws of the targets over the horizon given the covariates: (S, N, H, n_targets).

    past (N, C, D) and future (N, H, D) hold targets then covariates; only the covariate
    columns of ``future`` reach the model (its targets are replaced by NaN first)."""
    num_samples = check_positive_int(num_samples, "num_samples")
    horizon = future.shape[1]
    window = covariate_window(past, future, n_targets)
    draws = model.impute(window, None, num_samples)
    return draws[:, :, -horizon:, :n_targets]


def read_columns(columns, covariates):
    """The columns to read from a file: the targets (None = every numeric column) plus the
    covariates that are not calendar features."""
    if columns is None or not covariates:
        return columns
    extra = [c for c in covariates if c not in CALENDAR_FEATURES and c not in columns]
    return tuple(columns) + tuple(extra)


def target_count(columns, covariates) -> int:
    """How many of ``columns`` (targets first, as ``with_covariates`` orders them) are
    targets: all of them without covariates."""
    if not covariates:
        return len(columns)
    names = set(covariates) | {f"{c}_{p}" for c in covariates for p in ("sin", "cos")}
    return sum(1 for c in columns if c not in names)


def target_scaler(scaler: Standardizer, n_targets: int) -> Standardizer:
    """The :class:`Standardizer` of the first ``n_targets`` columns only."""
    return Standardizer.from_dict(
        {"mean": list(scaler.mean[:n_targets]), "scale": list(scaler.scale[:n_targets])}
    )
