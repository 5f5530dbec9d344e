"""Forecasts with known inputs: the model's masked imputation over [context, horizon].

Covariate columns follow the targets in x (:func:`alternators_ppl.data.covariates.
with_covariates`, read one step ahead). A forecast of the targets given the covariates over the
horizon is the model's imputation of the window [context, horizon] in which the target entries
of the horizon are missing and every covariate entry is given: SMC smoothing for the
Alternator, the Kalman smoother for ``kalman``, each model's own ``impute`` otherwise
(``SequenceModel.forecast_given``; a wrapper such as the spread recalibration adjusts it). The
hidden target values are replaced by NaN before the model sees the window
(:func:`alternators_ppl.evaluation.masked_scoring.covariate_window`).
"""

from __future__ import annotations

import torch

from alternators_ppl.data.covariates import CALENDAR_FEATURES
from alternators_ppl.data.scaling import Standardizer
from alternators_ppl.evaluation.masked_scoring import covariate_window
from alternators_ppl.validation import check_positive_int

__all__ = [
    "covariate_forecast",
    "target_count",
    "target_scaler",
    "read_columns",
]


def covariate_forecast(
    model, past: torch.Tensor, future: torch.Tensor, n_targets: int, num_samples: int
) -> torch.Tensor:
    """Draws of the targets over the horizon given the covariates: (S, N, H, n_targets).

    past (N, C, D) and future (N, H, D) hold targets then covariates; only the covariate
    columns of ``future`` reach the model (:func:`covariate_window` hides its targets first;
    ``model.forecast_given`` draws the rest)."""
    num_samples = check_positive_int(num_samples, "num_samples")
    window = covariate_window(past, future, n_targets)
    context = past.shape[1]
    draws = model.forecast_given(window[:, :context], window[:, context:], num_samples)
    return draws[..., :n_targets]


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
