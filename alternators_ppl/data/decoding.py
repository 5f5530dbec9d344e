"""Shared pieces of neural-decoding data: the task container, smoothing, lagged bins, scaling.

Arrays are batch-first ``(1, T, D)`` float32 (one long sequence per span), behaviour ``z``
and neural features ``x``. Every fitted transform (min-max scaling, neuron selection) is
fitted on the training span only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "standardised_task",
    "DecodingTask",
    "MinMaxScaler",
    "gaussian_kernel",
    "smooth_counts",
    "lagged_bins",
    "split_in_time",
]


@dataclass(frozen=True, eq=False)
class DecodingTask:
    """Neural features ``x`` and behaviour ``z`` split in time (train, optional val, test).

    Attributes:
        x_train, z_train: ``(1, T_train, Dx)`` and ``(1, T_train, Dz)`` float32.
        x_val, z_val: ``(1, T_val, ·)`` float32 or ``None`` (decoders then carve their own
            validation tail out of train).
        x_test, z_test: ``(1, T_test, ·)`` float32, never used for fitting.
        names: one label per behaviour dimension (``Dz``).
        info: plain-data description (sizes, rates, preprocessing) for run folders.
        arrays: raw arrays behind the task (spikes, states, ...), for tests and figures.
    """

    x_train: np.ndarray
    z_train: np.ndarray
    x_val: np.ndarray | None
    z_val: np.ndarray | None
    x_test: np.ndarray
    z_test: np.ndarray
    names: tuple[str, ...]
    info: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict)

    @property
    def obs_dim(self) -> int:
        """Number of neural features Dx."""
        return self.x_train.shape[-1]

    @property
    def latent_dim(self) -> int:
        """Number of behaviour dimensions Dz."""
        return self.z_train.shape[-1]


class MinMaxScaler:
    """Per-column affine map of the training range onto ``[low, high]`` (default [-1, 1]).

    Columns constant on train map to the middle of the range. Test data may fall outside.
    """

    def __init__(self, low: float = -1.0, high: float = 1.0):
        if not low < high:
            raise ValueError(f"low must be < high, got low={low}, high={high}")
        self.low, self.high = float(low), float(high)
        self.min: np.ndarray | None = None
        self.span: np.ndarray | None = None

    def fit(self, x: np.ndarray) -> MinMaxScaler:
        """Fit on ``x`` (..., D): per-column min and range over all leading axes."""
        flat = np.asarray(x, dtype=np.float64).reshape(-1, np.shape(x)[-1])
        if flat.shape[0] == 0 or not np.all(np.isfinite(flat)):
            raise ValueError("x must be non-empty and finite to fit a MinMaxScaler")
        self.min = flat.min(0)
        span = flat.max(0) - self.min
        self.span = np.where(span > 0, span, np.inf)  # constant column -> mid-range
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Scale ``x`` (..., D) with the fitted ranges; float64."""
        if self.min is None:
            raise ValueError("MinMaxScaler is not fitted; call fit() first")
        x = np.asarray(x, dtype=np.float64)
        if x.shape[-1] != self.min.shape[0]:
            raise ValueError(f"x must have last dimension {self.min.shape[0]}, got {x.shape}")
        unit = (x - self.min) / self.span
        return self.low + (self.high - self.low) * unit


def gaussian_kernel(window: int = 6, sigma: float = 2.0) -> np.ndarray:
    """Normalised Gaussian window of ``window`` taps (scipy.signal.windows.gaussian / sum)."""
    if window < 1 or sigma <= 0:
        raise ValueError(f"window must be >= 1 and sigma > 0, got {window}, {sigma}")
    n = np.arange(window) - (window - 1) / 2.0
    taps = np.exp(-0.5 * (n / sigma) ** 2)
    return taps / taps.sum()


def smooth_counts(
    counts: np.ndarray, window: int = 6, sigma: float = 2.0, causal: bool = False
) -> np.ndarray:
    """Smooth (T, N) counts along time with :func:`gaussian_kernel`.

    ``causal=False`` is ``np.convolve(..., mode="same")`` per neuron (centred, as in the
    paper's preprocessing: bin t then mixes bins t-3..t+2); ``causal=True`` uses only bins
    t-window+1..t. Returns (T, N) float64.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2:
        raise ValueError(f"counts must have shape (T, N), got {counts.shape}")
    taps = gaussian_kernel(window, sigma)
    if causal:
        padded = np.concatenate([np.zeros((window - 1, counts.shape[1])), counts])
        return np.stack(
            [np.convolve(padded[:, n], taps, mode="valid") for n in range(counts.shape[1])], 1
        )
    columns = [np.convolve(counts[:, n], taps, mode="same") for n in range(counts.shape[1])]
    return np.stack(columns, 1)


def lagged_bins(features: np.ndarray, lags) -> np.ndarray:
    """Stack lagged copies: row t holds features[t - l] for each l in ``lags`` (in order).

    features (T, N) -> (T - max(lags), N * len(lags)), starting at t = max(lags); lags >= 0
    (0 = the current bin, negative = future bins are refused).
    """
    features = np.asarray(features)
    lags = [int(lag) for lag in lags]
    if not lags or min(lags) < 0:
        raise ValueError(f"lags must be a non-empty list of integers >= 0, got {lags}")
    steps, top = features.shape[0], max(lags)
    if steps <= top:
        raise ValueError(f"features has {steps} bins; lags up to {top} need more")
    return np.concatenate([features[top - lag : steps - lag] for lag in lags], axis=1)


def split_in_time(num_steps: int, fractions) -> list[slice]:
    """Consecutive slices of ``range(num_steps)`` with the given fractions (last takes the rest)."""
    fractions = [float(f) for f in fractions]
    if any(f <= 0 for f in fractions) or sum(fractions) > 1 + 1e-9:
        raise ValueError(f"fractions must be positive and sum to <= 1, got {fractions}")
    cuts = [0]
    for f in fractions[:-1]:
        cuts.append(cuts[-1] + int(round(f * num_steps)))
    cuts.append(num_steps)
    if any(b <= a for a, b in zip(cuts[:-1], cuts[1:], strict=True)):
        raise ValueError(f"num_steps={num_steps} is too short for fractions {fractions}")
    return [slice(a, b) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]


def standardised_task(x, z, fractions, names, info: dict, arrays: dict | None = None):
    """Split features x (T, N) and behaviour z (T, D) in time by ``fractions`` (train, val,
    test), standardise both with the training span's statistics, and return the
    :class:`DecodingTask` (one sequence per span, float32; the scalers are in ``arrays`` as
    ``x_scaler`` and ``z_scaler``, beside the given ``arrays``)."""
    from alternators_ppl.data.scaling import Standardizer

    train, val, test = split_in_time(len(x), fractions)
    x_scale, z_scale = Standardizer().fit(x[train]), Standardizer().fit(z[train])
    x, z = x_scale.transform(x), z_scale.transform(z)

    def span(a, s):
        return a[None, s].astype(np.float32)

    return DecodingTask(
        x_train=span(x, train), z_train=span(z, train),
        x_val=span(x, val), z_val=span(z, val),
        x_test=span(x, test), z_test=span(z, test),
        names=tuple(names), info=info,
        arrays={**(arrays or {}), "x_scaler": x_scale, "z_scaler": z_scale},
    )  # fmt: skip
