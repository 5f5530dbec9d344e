"""Calibration of sample-based predictions: interval coverage tables and PIT values.

Samples are (S, ...) with the sample axis first; truth has the trailing shape (...).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from alternators_ppl import metrics
from alternators_ppl.evaluation.inference_data import to_float_tensor

__all__ = [
    "coverage_table",
    "pit_values",
]

_QUANTILE_LIMIT = 2**24 - 1  # torch.quantile's input size limit


def _samples_and_truth(samples, truth) -> tuple[torch.Tensor, torch.Tensor]:
    truth_t = to_float_tensor(truth, "truth")
    samples_t = to_float_tensor(samples, "samples", device=truth_t.device)
    truth_t = truth_t.to(samples_t.device)
    dtype = torch.promote_types(samples_t.dtype, truth_t.dtype)
    samples_t, truth_t = samples_t.to(dtype), truth_t.to(dtype)
    if truth_t.numel() == 0:
        raise ValueError(f"truth is empty: shape {tuple(truth_t.shape)}")
    if samples_t.dim() != truth_t.dim() + 1 or samples_t.shape[1:] != truth_t.shape:
        raise ValueError(
            f"samples has shape {tuple(samples_t.shape)}, expected (S, *truth.shape) = "
            f"(S, {', '.join(map(str, truth_t.shape))}) with the sample axis first"
        )
    if samples_t.shape[0] < 1:
        raise ValueError("samples has no samples (S = 0)")
    for name, value in (("samples", samples_t), ("truth", truth_t)):
        if not torch.isfinite(value).all():
            raise ValueError(f"{name} contains NaN or inf values; score observed entries only")
    return samples_t, truth_t


def coverage_table(samples, truth, levels: Sequence[float] = (0.5, 0.9)) -> dict:
    """Empirical coverage and width of central intervals: {level: {...}} for each level.

    samples (S, *shape) sample axis first, truth (*shape), finite. For each level (in (0, 1))
    the interval is [q_{(1-level)/2}, q_{(1+level)/2}] of the samples per element (as in
    :func:`alternators_ppl.metrics.interval_coverage`, endpoints included). Entry:
    ``{"nominal", "coverage", "width", "coverage_per_dim", "width_per_dim", "n"}`` where the
    per-dim lists run over the last axis of truth (empty for 0-d or 1-d truth). Works on CPU or
    CUDA tensors, and on any size (chunked under ``torch.quantile``'s input limit).
    """
    samples, truth = _samples_and_truth(samples, truth)
    if isinstance(levels, int | float):
        levels = (levels,)
    levels = [float(level) for level in levels]
    if not levels:
        raise ValueError("levels must hold at least one level in (0, 1)")
    flat_samples = samples.reshape(samples.shape[0], -1)
    flat_truth = truth.reshape(-1)
    step = max(1, _QUANTILE_LIMIT // samples.shape[0])  # torch.quantile's size limit
    per_dim = truth.dim() >= 2
    table = {}
    for level in levels:
        inside, width = [], []
        for start in range(0, flat_truth.numel(), step):
            part = slice(start, start + step)
            inside.append(
                metrics.interval_coverage(flat_samples[:, part], flat_truth[part], level, over=())
            )
            width.append(metrics.interval_width(flat_samples[:, part], level, over=()))
        inside = torch.cat(inside).reshape(truth.shape)
        width = torch.cat(width).reshape(truth.shape)
        dims = tuple(range(truth.dim() - 1))
        table[level] = {
            "nominal": level,
            "coverage": float(inside.mean()),
            "width": float(width.mean()),
            "coverage_per_dim": inside.mean(dims).reshape(-1).tolist() if per_dim else [],
            "width_per_dim": width.mean(dims).reshape(-1).tolist() if per_dim else [],
            "n": int(truth.numel()),
        }
    return table


def pit_values(samples, truth, seed: int | None = 0) -> np.ndarray:
    """Randomised probability integral transform of truth under the samples: truth.shape.

    samples (S, *shape) sample axis first, truth (*shape), finite. PIT = (n_below + U (n_equal +
    1)) / (S + 1) with U ~ Uniform(0, 1) (seeded by ``seed``): the fraction of samples below the
    truth, with the truth's place among tied samples (and in its rank bin) drawn at random, so
    that it is exactly Uniform(0, 1) when the truth is exchangeable with the samples. A
    calibrated forecast gives a flat PIT histogram; U-shaped = too narrow, hump = too wide.
    """
    samples, truth = _samples_and_truth(samples, truth)
    below = (samples < truth).sum(0).cpu().numpy()
    equal = (samples == truth).sum(0).cpu().numpy()
    u = np.random.default_rng(seed).random(below.shape)
    return (below + u * (equal + 1)) / (samples.shape[0] + 1)
