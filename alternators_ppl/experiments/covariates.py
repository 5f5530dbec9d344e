"""Forecasts with known inputs: the model's masked imputation over [context, horizon].

Covariate columns follow the targets in x (:func:`alternators_ppl.data.covariates.
with_covariates`, read one step ahead). A forecast of the targets given the covariates over the
horizon is the model's imputation of the window [context, horizon] in which the target entries
of the horizon are missing and every covariate entry is given: SMC smoothing for the
Alternator, the Kalman smoother for ``kalman``, each model's own ``impute`` otherwise
(``SequenceModel.forecast_given``; a wrapper such as the spread recalibration adjusts it):
:func:`alternators_ppl.evaluation.masked_scoring.covariate_forecast`, which replaces the hidden
target values by NaN before the model sees the window. This module holds the columns'
bookkeeping.
"""

from __future__ import annotations

from alternators_ppl.data.covariates import CALENDAR_FEATURES
from alternators_ppl.data.scaling import Standardizer

__all__ = [
    "target_count",
    "target_scaler",
    "read_columns",
]


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
