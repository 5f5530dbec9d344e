"""Point and probabilistic forecast metrics (torch; CPU or CUDA, numpy accepted).

Shape conventions
-----------------
* Point metrics take ``pred`` and ``truth`` of the same shape ``(*shape)``.
* Sample-based metrics take predictive ``samples`` with the **sample axis first**,
  ``(S, *shape)``, and ``truth`` of shape ``(*shape)``; ``samples.shape[1:] == truth.shape``.
* ``over`` names dims *of truth* (i.e. of ``*shape``, never the sample axis) to average over.
  The default ``over=None`` means every dim but the last (feature) dim, so truth ``(N, D)`` or
  ``(B, T, D)`` gives a per-dimension result ``(D,)``. The result keeps the remaining dims in
  order. ``over`` may be an int or a sequence of ints, negative dims allowed; ``over=()``
  returns the per-element score with shape ``truth.shape``.

Examples with truth ``(B, H, D)`` (batch, forecast horizon, features)::

    crps_empirical(samples, truth)                 # (D,)
    crps_empirical(samples, truth, over=(0,))      # (H, D): per horizon step
    crps_empirical(samples, truth, over=(0, 1, 2)) # (): a single number
    crps_empirical(samples, truth, over=())        # (B, H, D): per element

For ``r2`` and ``pearson_cc`` the dims in ``over`` are the ones the statistic is computed
along (the population), so they must hold at least two elements in total.

Inputs may be torch tensors or numpy arrays (converted with ``torch.as_tensor``); integer
inputs become the default float dtype, mixed float dtypes are promoted. numpy inputs are moved
to the device of the tensor inputs; results are torch tensors on that device. NaN or inf in any
input raises ``ValueError``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "mae",
    "rmse",
    "r2",
    "pearson_cc",
    "crps_empirical",
    "crps_fair",
    "crps_gaussian",
    "interval_coverage",
    "interval_width",
    "interval_score",
]

ArrayLike = torch.Tensor | np.ndarray
Dims = int | Sequence[int] | None


# --------------------------------------------------------------------------- helpers


def _prepare(**named: ArrayLike) -> list[torch.Tensor]:
    """Convert inputs to finite floating tensors sharing one dtype and device."""
    devices = {v.device for v in named.values() if isinstance(v, torch.Tensor)}
    if len(devices) > 1:
        where = ", ".join(
            f"{k} on {v.device}" for k, v in named.items() if isinstance(v, torch.Tensor)
        )
        raise ValueError(f"inputs must be on one device; got {where}")
    device = devices.pop() if devices else None
    tensors = {}
    for name, value in named.items():
        try:
            t = torch.as_tensor(value, device=device)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(
                f"{name} must be a torch.Tensor or numpy array, got {type(value).__name__}"
            ) from err
        if t.is_complex():
            raise TypeError(f"{name} must be real-valued, got dtype {t.dtype}")
        tensors[name] = t
    dtype = torch.get_default_dtype()
    floats = [t.dtype for t in tensors.values() if t.is_floating_point()]
    if floats:
        dtype = floats[0]
        for d in floats[1:]:
            dtype = torch.promote_types(dtype, d)
    out = []
    for name, t in tensors.items():
        t = t.to(dtype)
        if t.numel() == 0:
            raise ValueError(f"{name} is empty: shape {tuple(t.shape)}, expected >= 1 element")
        if not bool(torch.isfinite(t).all()):
            n_nan = int(torch.isnan(t).sum())
            n_inf = int(torch.isinf(t).sum())
            raise ValueError(
                f"{name} (shape {tuple(t.shape)}) contains {n_nan} NaN and {n_inf} inf "
                "entries; expected all finite values"
            )
        out.append(t)
    return out


def _check_same_shape(pred: torch.Tensor, truth: torch.Tensor, name: str = "pred") -> None:
    if pred.shape != truth.shape:
        raise ValueError(
            f"{name} has shape {tuple(pred.shape)}, expected truth.shape = {tuple(truth.shape)}"
        )


def _check_samples(samples: torch.Tensor, truth: torch.Tensor | None) -> None:
    if samples.dim() < 1:
        raise ValueError(
            "samples must have shape (S, *shape) with the sample axis first; got a 0-d tensor"
        )
    if truth is not None and samples.shape[1:] != truth.shape:
        raise ValueError(
            f"samples has shape {tuple(samples.shape)}, expected (S, *truth.shape) = "
            f"(S, {', '.join(map(str, truth.shape))}) with the sample axis first"
        )


def _check_level(level: float) -> float:
    if isinstance(level, bool) or not isinstance(level, int | float | np.floating | np.integer):
        raise TypeError(f"level must be a real number in (0, 1), got {type(level).__name__}")
    level = float(level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in the open interval (0, 1), got level={level}")
    return level


def _normalize_over(over: Dims, shape: torch.Size) -> tuple[int, ...]:
    """Return ``over`` as sorted non-negative dims of ``shape`` (default: all but the last)."""
    ndim = len(shape)
    if over is None:
        return tuple(range(max(ndim - 1, 0)))
    dims = (over,) if isinstance(over, int | np.integer) else tuple(over)
    result = []
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, int | np.integer):
            raise TypeError(f"over must contain ints, got {d!r} in over={over!r}")
        if not -ndim <= d < ndim:
            raise ValueError(
                f"over={over!r} has dim {d} out of range for truth of shape {tuple(shape)} "
                f"(expected dims in [{-ndim}, {ndim - 1}])"
            )
        result.append(int(d) % ndim)
    if len(set(result)) != len(result):
        raise ValueError(f"over={over!r} repeats a dim (truth shape {tuple(shape)})")
    return tuple(sorted(result))


def _mean(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    # torch treats dim=() as "reduce everything", so the empty case is handled explicitly.
    return x.mean(dim=dims) if dims else x


def _sum(x: torch.Tensor, dims: tuple[int, ...], keepdim: bool = False) -> torch.Tensor:
    return x.sum(dim=dims, keepdim=keepdim) if dims else x


def _population_dims(over: Dims, truth: torch.Tensor, what: str) -> tuple[int, ...]:
    dims = _normalize_over(over, truth.shape)
    n = math.prod(truth.shape[d] for d in dims)
    if n < 2:
        raise ValueError(
            f"{what} needs >= 2 elements along over={dims} of truth with shape "
            f"{tuple(truth.shape)}, got {n}"
        )
    return dims


def _crps_sorted_spread(samples: torch.Tensor) -> torch.Tensor:
    """sum_{i<j} |x_i - x_j| along dim 0 in O(S log S) via sorting; shape samples.shape[1:]."""
    num = samples.shape[0]
    x = samples.sort(dim=0).values
    diff = x[1:] - x[:-1]
    k = torch.arange(1, num, device=x.device, dtype=x.dtype)
    weight = (k * (num - k)).reshape((num - 1,) + (1,) * (diff.dim() - 1))
    return (diff * weight).sum(0)


def _central_quantiles(samples: torch.Tensor, level: float) -> tuple[torch.Tensor, torch.Tensor]:
    probs = torch.tensor(
        [(1.0 - level) / 2.0, (1.0 + level) / 2.0], dtype=samples.dtype, device=samples.device
    )
    q = torch.quantile(samples, probs, dim=0)
    return q[0], q[1]


# --------------------------------------------------------------------------- point metrics


def mae(pred: ArrayLike, truth: ArrayLike, over: Dims = None) -> torch.Tensor:
    """Mean absolute error ``mean_over |pred - truth|``.

    pred, truth: ``(*shape)``. Returns ``(D,)`` by default, see the module docstring for ``over``.
    """
    pred, truth = _prepare(pred=pred, truth=truth)
    _check_same_shape(pred, truth)
    return _mean((pred - truth).abs(), _normalize_over(over, truth.shape))


def rmse(pred: ArrayLike, truth: ArrayLike, over: Dims = None) -> torch.Tensor:
    """Root mean squared error ``sqrt(mean_over (pred - truth)^2)``.

    pred, truth: ``(*shape)``. Returns ``(D,)`` by default; the root is taken after averaging.
    """
    pred, truth = _prepare(pred=pred, truth=truth)
    _check_same_shape(pred, truth)
    return _mean((pred - truth).square(), _normalize_over(over, truth.shape)).sqrt()


def r2(pred: ArrayLike, truth: ArrayLike, over: Dims = None) -> torch.Tensor:
    """Signed coefficient of determination ``1 - SSE / SST`` along ``over``.

    pred, truth: ``(*shape)``. SST uses the mean of truth along ``over``. 1 for a perfect
    predictor, 0 for predicting that mean, negative for anything worse (never clipped or
    abs'd). Constant truth along ``over`` gives SST = 0 and hence -inf or NaN.
    Returns ``(D,)`` by default.
    """
    pred, truth = _prepare(pred=pred, truth=truth)
    _check_same_shape(pred, truth)
    dims = _population_dims(over, truth, "r2")
    sse = _sum((pred - truth).square(), dims)
    centered = truth - truth.mean(dim=dims, keepdim=True)
    sst = _sum(centered.square(), dims)
    return 1.0 - sse / sst


def pearson_cc(pred: ArrayLike, truth: ArrayLike, over: Dims = None) -> torch.Tensor:
    """Pearson correlation coefficient between pred and truth along ``over``.

    pred, truth: ``(*shape)``. Returns ``(D,)`` by default, values in [-1, 1]; NaN where
    either input is constant along ``over``.
    """
    pred, truth = _prepare(pred=pred, truth=truth)
    _check_same_shape(pred, truth)
    dims = _population_dims(over, truth, "pearson_cc")
    p = pred - pred.mean(dim=dims, keepdim=True)
    t = truth - truth.mean(dim=dims, keepdim=True)
    cov = _sum(p * t, dims)
    denom = (_sum(p.square(), dims) * _sum(t.square(), dims)).sqrt()
    return (cov / denom).clamp(-1.0, 1.0)


# --------------------------------------------------------------------------- probabilistic


def crps_empirical(samples: ArrayLike, truth: ArrayLike, over: Dims = None) -> torch.Tensor:
    """CRPS of an ensemble, energy form ``E|X - y| - 1/2 E|X - X'|`` (lower is better).

    samples: ``(S, *shape)``, sample axis first; truth: ``(*shape)``. The spread term uses the
    plug-in ``1/(2 S^2) sum_ij |x_i - x_j|`` computed in O(S log S) by sorting, identical to
    ``pyro.ops.stats.crps_empirical`` per element (S = 1 gives the absolute error). It is
    biased upward by ``E|X - X'| / (2 S)``; see :func:`crps_fair`. Returns ``(D,)`` by default.
    """
    samples, truth = _prepare(samples=samples, truth=truth)
    _check_samples(samples, truth)
    num = samples.shape[0]
    score = (samples - truth).abs().mean(0)
    if num > 1:
        score = score - _crps_sorted_spread(samples) / num**2
    return _mean(score, _normalize_over(over, truth.shape))


def crps_fair(samples: ArrayLike, truth: ArrayLike, over: Dims = None) -> torch.Tensor:
    """Fair (unbiased) ensemble CRPS ``E|X - y| - 1/(2 S (S-1)) sum_ij |x_i - x_j|``.

    samples: ``(S, *shape)`` with ``S >= 2``, sample axis first; truth: ``(*shape)``. Its
    expectation over ensembles equals the CRPS of the sampling distribution for any S.
    O(S log S) via sorting. Returns ``(D,)`` by default.
    """
    samples, truth = _prepare(samples=samples, truth=truth)
    _check_samples(samples, truth)
    num = samples.shape[0]
    if num < 2:
        raise ValueError(
            f"crps_fair needs S >= 2 samples; got samples.shape={tuple(samples.shape)} (S={num})"
        )
    score = (samples - truth).abs().mean(0) - _crps_sorted_spread(samples) / (num * (num - 1))
    return _mean(score, _normalize_over(over, truth.shape))


def crps_gaussian(
    mean: ArrayLike, std: ArrayLike, truth: ArrayLike, over: Dims = None
) -> torch.Tensor:
    """Closed-form CRPS of ``N(mean, std^2)`` at truth.

    ``std * [z (2 Phi(z) - 1) + 2 phi(z) - 1/sqrt(pi)]`` with ``z = (truth - mean) / std``.
    mean, truth: ``(*shape)``; std: ``(*shape)`` or broadcastable to it (e.g. a scalar), all
    entries > 0. Returns ``(D,)`` by default.
    """
    mean, std, truth = _prepare(mean=mean, std=std, truth=truth)
    _check_same_shape(mean, truth, "mean")
    try:
        broadcastable = torch.broadcast_shapes(std.shape, truth.shape) == truth.shape
    except RuntimeError:
        broadcastable = False
    if not broadcastable:
        raise ValueError(
            f"std has shape {tuple(std.shape)}, expected truth.shape = {tuple(truth.shape)} "
            "or a shape broadcastable to it"
        )
    if not bool((std > 0).all()):
        raise ValueError(
            f"std (shape {tuple(std.shape)}) must be > 0 everywhere; min is {float(std.min())}"
        )
    z = (truth - mean) / std
    pdf = torch.exp(-0.5 * z.square()) / math.sqrt(2.0 * math.pi)
    cdf = torch.special.ndtr(z)
    score = std * (z * (2.0 * cdf - 1.0) + 2.0 * pdf - 1.0 / math.sqrt(math.pi))
    return _mean(score, _normalize_over(over, truth.shape))


def interval_coverage(
    samples: ArrayLike, truth: ArrayLike, level: float = 0.9, over: Dims = None
) -> torch.Tensor:
    """Fraction of truth inside the central ``level`` interval of the samples.

    samples: ``(S, *shape)``, sample axis first; truth: ``(*shape)``. The interval is
    ``[q_{(1-level)/2}, q_{(1+level)/2}]`` from ``torch.quantile`` (linear interpolation)
    along the sample axis, endpoints included. ``level`` in (0, 1). Returns ``(D,)`` by
    default, in the samples' float dtype. (``torch.quantile`` limits samples to < 2**24
    elements.)
    """
    level = _check_level(level)
    samples, truth = _prepare(samples=samples, truth=truth)
    _check_samples(samples, truth)
    lo, hi = _central_quantiles(samples, level)
    inside = ((truth >= lo) & (truth <= hi)).to(samples.dtype)
    return _mean(inside, _normalize_over(over, truth.shape))


def interval_width(samples: ArrayLike, level: float = 0.9, over: Dims = None) -> torch.Tensor:
    """Mean width of the central ``level`` sample interval, ``q_{(1+level)/2} - q_{(1-level)/2}``.

    samples: ``(S, *shape)``, sample axis first; ``over`` names dims of ``*shape``. ``level``
    in (0, 1). Returns ``(D,)`` by default.
    """
    level = _check_level(level)
    (samples,) = _prepare(samples=samples)
    _check_samples(samples, None)
    lo, hi = _central_quantiles(samples, level)
    return _mean(hi - lo, _normalize_over(over, samples.shape[1:]))


def interval_score(
    samples: ArrayLike, truth: ArrayLike, level: float = 0.9, over: Dims = None
) -> torch.Tensor:
    """Interval score of the central ``level`` sample interval [l, u] (lower is better):
    ``(u - l) + 2 / (1 - level) * ((l - y)+ + (y - u)+)`` (Gneiting & Raftery, 2007). A proper
    score of the interval: lowest in expectation when l and u are the true
    (1 -+ level) / 2 quantiles, so it rewards coverage ``level`` and narrowness together.

    samples: ``(S, *shape)``, sample axis first; truth: ``(*shape)``; quantiles as in
    :func:`interval_coverage`. Returns ``(D,)`` by default.
    """
    level = _check_level(level)
    samples, truth = _prepare(samples=samples, truth=truth)
    _check_samples(samples, truth)
    lo, hi = _central_quantiles(samples, level)
    miss = (lo - truth).clamp_min(0) + (truth - hi).clamp_min(0)
    return _mean(hi - lo + 2.0 / (1.0 - level) * miss, _normalize_over(over, truth.shape))
