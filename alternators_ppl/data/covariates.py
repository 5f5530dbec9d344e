"""Known inputs (covariates) beside the target columns of a series.

A covariate is a column whose values are known over the forecast horizon: an exogenous column
of the file (temperature beside demand) or a calendar feature computed from the time stamps
(``month``: sin and cos of the month of the year; ``weekday``: of the day of the week;
``hour``: of the hour of the day). Covariates become extra columns of x placed after the
targets and **read one step ahead**: row t holds the targets of step t and the covariates of
step t + 1. The Alternator emits x_t from z_{t-1}, and z_t is what the FTN made of x_t, so a
known input can only shape the target of step t + 1 if it is read at step t; the lead also
lets the Kalman filter and every other model carry it forward. The covariates of the step
after the last one are computed for calendar features and missing (NaN) for file columns.

A forecast with covariates is the model's masked imputation of [context, horizon] with the
target entries of the horizon missing and the covariates given (see
:func:`alternators_ppl.experiments.covariates.covariate_forecast`); only targets are scored.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from alternators_ppl.data.readers import Series

__all__ = ["CALENDAR_FEATURES", "calendar_features", "with_covariates", "split_names"]

#: calendar features by name: (pandas attribute, period)
CALENDAR_FEATURES = {"month": ("month", 12), "weekday": ("day_of_week", 7), "hour": ("hour", 24)}


def calendar_features(time: np.ndarray, name: str) -> np.ndarray:
    """sin and cos of a calendar position: time (T,) datetime64 -> (T, 2) float64.

    ``name`` is one of :data:`CALENDAR_FEATURES` (month of the year, day of the week, hour of
    the day); a numeric time axis has no calendar, which is a ``ValueError``."""
    if name not in CALENDAR_FEATURES:
        raise ValueError(
            f"calendar feature must be one of {sorted(CALENDAR_FEATURES)}, got {name!r}"
        )
    time = np.asarray(time)
    if not np.issubdtype(time.dtype, np.datetime64):
        raise ValueError(f"covariate {name!r} needs a date/time axis; this series has numbers")
    import pandas as pd

    attribute, period = CALENDAR_FEATURES[name]
    position = np.asarray(getattr(pd.DatetimeIndex(time), attribute), dtype=np.float64)
    if name == "month":
        position = position - 1
    angle = 2 * np.pi * position / period
    return np.stack([np.sin(angle), np.cos(angle)], axis=-1)


def split_names(covariates, available) -> tuple[list[str], list[str]]:
    """(file columns, calendar features) among ``covariates``: a name that is a column of the
    file is a column; otherwise it must be a calendar feature (else a ``ValueError``)."""
    columns, calendar = [], []
    for name in covariates:
        if name in available:
            columns.append(name)
        elif name in CALENDAR_FEATURES:
            calendar.append(name)
        else:
            raise ValueError(
                f"covariate {name!r} is neither a column ({', '.join(available)}) nor a "
                f"calendar feature ({', '.join(CALENDAR_FEATURES)})"
            )
    if len(set(covariates)) != len(covariates):
        raise ValueError(f"covariates are repeated: {list(covariates)}")
    return columns, calendar


def with_covariates(series: Series, covariates, targets=None) -> tuple[Series, int]:
    """The series with covariate columns after the targets, read one step ahead.

    Args:
        series: a :class:`Series` (B, T, D) holding the targets and any covariate columns.
        covariates: names: columns of ``series`` or calendar features (:data:`CALENDAR_FEATURES`).
        targets: the target column names (default: every column that is not a covariate).

    Returns:
        (series, n_targets): values (B, T, n_targets + C) where the covariate columns of row t
        hold step t + 1 (calendar features of the last row from ``series.future_times(1)``,
        file columns NaN there); calendar features add ``<name>_sin`` and ``<name>_cos``.
    """
    covariates = list(covariates)
    if not covariates:
        raise ValueError("covariates must name at least one column or calendar feature")
    if series.grid is not None:
        raise ValueError("covariates apply to table series, not to a gridded NetCDF field")
    file_columns, calendar = split_names(covariates, series.columns)
    if targets is None:
        targets = [c for c in series.columns if c not in file_columns]
    targets = list(targets)
    if not targets:
        raise ValueError("no target column is left once the covariates are taken out")
    overlap = [c for c in targets if c in covariates]
    if overlap:
        raise ValueError(f"column {overlap[0]!r} cannot be both a target and a covariate")
    index = {c: i for i, c in enumerate(series.columns)}
    values = series.values
    batch, steps = values.shape[:2]
    parts = [values[..., [index[c] for c in targets]]]
    names = list(targets)
    if file_columns:
        cov = values[..., [index[c] for c in file_columns]]
        ahead = np.concatenate([cov[:, 1:], np.full_like(cov[:, :1], np.nan)], axis=1)
        parts.append(ahead)
        names += file_columns
    if calendar:
        stamps = np.concatenate([series.time[1:], series.future_times(1)])
        for name in calendar:
            feature = np.broadcast_to(calendar_features(stamps, name), (batch, steps, 2))
            parts.append(feature)
            names += [f"{name}_sin", f"{name}_cos"]
    out = replace(series, values=np.concatenate(parts, axis=-1), columns=tuple(names))
    return out, len(targets)
