"""Splits of a :class:`~alternators_ppl.data.readers.Series` in time, with scaling fitted on
the train span only and training windows of ``context + horizon`` steps.

70/15/15 by default, or at given step indices or dates. Validation windows have their last
``horizon`` steps in the validation span; test problems have their future in the test span
(their context may reach back: it is the observed past). A series too short for context +
horizon + the splits is a one-line ``ValueError``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from alternators_ppl.data.readers import Series
from alternators_ppl.data.scaling import Standardizer

__all__ = ["SplitSeries", "split_series", "make_windows"]


def _fail(message: str) -> None:
    raise ValueError(message)


@dataclass(frozen=True, eq=False)
class SplitSeries:
    """A series split in time, standardised with statistics of the train span only.

    Attributes:
        series: the :class:`Series` (data units).
        x: ``(B, T, D)`` float32 standardised values, NaN = missing.
        scaler: the :class:`Standardizer` fitted on ``x[:, :val_start]`` (data units).
        val_start, test_start: first step of the validation and of the test span.
        context, horizon: the forecast problem's lengths.
        x_train: ``(N, context + horizon, D)`` windows inside the train span.
        x_val: ``(M, context + horizon, D)`` windows whose last ``horizon`` steps lie in the
            validation span (their context may reach back into train).
    """

    series: Series
    x: np.ndarray
    scaler: Standardizer
    val_start: int
    test_start: int
    context: int
    horizon: int
    x_train: np.ndarray
    x_val: np.ndarray

    def test_problems(self, stride: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Forecast problems whose future lies in the test span.

        Origins ``o = test_start, test_start + stride, ...`` with ``o >= context`` and
        ``o + horizon <= T``; the context ``x[o - context : o]`` may reach into earlier spans
        (it is the observed past). Returns (context (N, C, D), future (N, H, D), origins (N,)
        step indices); with B sequences, problem n is sequence n % B at origin n // B.
        """
        origins = _origins(
            max(self.test_start, self.context), self.x.shape[1], self.horizon, stride
        )
        past = np.concatenate([self.x[:, o - self.context : o] for o in origins], axis=0)
        future = np.concatenate([self.x[:, o : o + self.horizon] for o in origins], axis=0)
        return past, future, np.repeat(np.asarray(origins), self.x.shape[0])


def _origins(first: int, steps: int, horizon: int, stride: int) -> list[int]:
    return list(range(first, steps - horizon + 1, stride))


def make_windows(
    x: np.ndarray, length: int, stride: int = 1, start: int = 0, stop: int | None = None
) -> np.ndarray:
    """Windows ``x[:, s : s + length]`` for ``s = start, start + stride, ...`` ending by
    ``stop``: (B, T, D) -> (N, length, D), window n is sequence n % B; (0, length, D) if
    none fit."""
    stop = x.shape[1] if stop is None else stop
    starts = range(start, stop - length + 1, stride)
    if len(starts) == 0:
        return np.zeros((0, length, x.shape[-1]), dtype=x.dtype)
    return np.concatenate([x[:, s : s + length] for s in starts], axis=0)


def _boundary(value, series: Series, name: str) -> int:
    """A split boundary as a step index: an int index, or a date/number on the time axis."""
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return int(value)
    if series.freq is not None or np.issubdtype(series.time.dtype, np.datetime64):
        import pandas as pd

        try:
            stamp = pd.Timestamp(value)
        except (ValueError, TypeError):
            _fail(f"{name} {value!r} is neither a step index nor a date")
        if stamp.tzinfo is not None:
            stamp = stamp.tz_convert("UTC").tz_localize(None)
        return int(np.searchsorted(series.time, stamp.to_datetime64(), side="left"))
    try:
        number = float(value)
    except (TypeError, ValueError):
        _fail(f"{name} {value!r} is neither a step index nor a time value")
    return int(np.searchsorted(series.time, number, side="left"))


def split_series(
    series: Series,
    context: int,
    horizon: int,
    fractions=(0.7, 0.15, 0.15),
    split_at=None,
    stride: int = 1,
) -> SplitSeries:
    """Split in time, scale on train only, cut training and validation windows.

    Args:
        series: a :class:`Series` ``(B, T, D)``.
        context, horizon: forecast problem lengths (>= 1).
        fractions: (train, validation, test) shares of the steps, summing to 1.
        split_at: optional ``(val_start, test_start)``, each an int step index or a
            date/number on the time axis; overrides ``fractions``.
        stride: step between training windows (>= 1).

    Returns:
        :class:`SplitSeries`. Raises ``ValueError`` if a span is too short: train must hold a
        window of context + horizon, validation and test at least ``horizon`` steps each, and
        every span at least one observed value.
    """
    for name, value in (("context", context), ("horizon", horizon), ("stride", stride)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            _fail(f"{name} must be a positive integer, got {value!r}")
    steps = series.values.shape[1]
    if split_at is not None:
        if len(split_at) != 2:
            _fail(f"split_at must be (val_start, test_start), got {split_at!r}")
        val_start = _boundary(split_at[0], series, "split_at[0]")
        test_start = _boundary(split_at[1], series, "split_at[1]")
        if not 0 < val_start < test_start < steps:
            _fail(
                f"split_at {split_at!r} gives steps {val_start}, {test_start}; "
                f"need 0 < val_start < test_start < {steps}"
            )
    else:
        shares = np.asarray(fractions, dtype=np.float64)
        if shares.shape != (3,) or (shares <= 0).any() or not math.isclose(shares.sum(), 1.0):
            _fail(f"fractions must be three positive shares summing to 1, got {fractions!r}")
        val_start = int(round(shares[0] * steps))
        test_start = int(round((shares[0] + shares[1]) * steps))
    need = context + horizon
    spans = {
        "train": (0, val_start),
        "validation": (val_start, test_start),
        "test": (test_start, steps),
    }
    if val_start < need or test_start - val_start < horizon or steps - test_start < horizon:
        _fail(
            f"series of {steps} steps is too short for context {context} + horizon {horizon} "
            f"with spans train {val_start}, validation {test_start - val_start}, test "
            f"{steps - test_start} (train needs >= {need}, validation and test >= {horizon})"
        )
    for name, (a, b) in spans.items():
        if np.isnan(series.values[:, a:b]).all():
            _fail(f"the {name} span (steps {a}..{b - 1}) has no observed value")
    train_part = series.values[:, :val_start]
    empty = np.isnan(train_part).all(axis=(0, 1))
    if empty.any():
        _fail(
            f"column {series.columns[int(np.flatnonzero(empty)[0])]!r} is all missing in "
            "the train span"
        )
    scaler = Standardizer().fit(train_part)
    x = scaler.transform(series.values).astype(np.float32)
    x_train = make_windows(x, need, stride, 0, val_start)
    first_val = max(val_start - context, 0)
    x_val = make_windows(x, need, 1, first_val, test_start)
    if len(x_val) == 0:
        _fail(
            f"the validation span ({test_start - val_start} steps) holds no forecast window "
            f"of context {context} + horizon {horizon}"
        )
    return SplitSeries(series, x, scaler, val_start, test_start, context, horizon, x_train, x_val)
