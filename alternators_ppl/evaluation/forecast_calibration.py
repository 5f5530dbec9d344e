"""Calibration report of forecast draws: coverage per horizon, PIT, spread-skill, a warning.

Draws are (S, N, H, D) with the sample axis first; truth (N, H, D) may hold NaN (missing,
never scored). The report is plain data (JSON-ready) and goes into every run folder and into
``compare``'s results; :func:`coverage_warning` gives the one visible line when the 90%
coverage on validation (or test) data is outside 0.85-0.95.
"""

from __future__ import annotations

import numpy as np
import torch

from alternators_ppl import metrics

__all__ = ["COVERAGE_RANGE", "calibration_report", "coverage_warning", "format_calibration"]

#: the accepted range of the 90% interval's coverage
COVERAGE_RANGE = (0.85, 0.95)


def _check(draws, truth) -> tuple[torch.Tensor, torch.Tensor]:
    truth = torch.as_tensor(truth)
    draws = torch.as_tensor(draws, device=truth.device)
    dtype = torch.promote_types(draws.dtype, truth.dtype)
    draws, truth = draws.to(dtype), truth.to(dtype)
    if truth.dim() != 3 or draws.dim() != 4 or draws.shape[1:] != truth.shape:
        raise ValueError(
            f"draws must be (S, N, H, D) and truth (N, H, D) with matching shapes, got "
            f"{tuple(draws.shape)} and {tuple(truth.shape)}"
        )
    if draws.shape[0] < 2:
        raise ValueError(f"draws needs at least 2 samples, got {draws.shape[0]}")
    if not torch.isfinite(draws).all():
        raise ValueError("draws contain NaN or inf values")
    return draws, truth


def calibration_report(draws, truth, num_bins: int = 10, seed: int = 0) -> dict:
    """Calibration of forecast draws (S, N, H, D) against truth (N, H, D) (NaN = missing).

    Per horizon (lists of H): ``coverage_50``, ``coverage_90`` (central intervals, endpoints
    included), ``spread_skill`` (sqrt of the mean ensemble variance over the RMSE of the
    ensemble mean; 1 when calibrated, < 1 over-confident), and overall ``coverage_50_mean``,
    ``coverage_90_mean``, ``spread_skill_mean``, the randomised PIT histogram ``pit_histogram``
    (``num_bins`` frequencies summing to 1; flat when calibrated) with ``pit_max_deviation``
    (largest |frequency - 1/num_bins|), and ``warning`` (None, or a line from
    :func:`coverage_warning`). Horizons without an observed entry get None.
    """
    draws, truth = _check(draws, truth)
    observed = torch.isfinite(truth)
    filled = torch.where(observed, truth, torch.zeros((), dtype=truth.dtype, device=truth.device))
    weight = observed.to(draws.dtype)
    count = weight.sum((0, 2))

    def per_h(values: torch.Tensor) -> list:
        mean = (values * weight).sum((0, 2)) / count
        return [None if c == 0 else float(v) for v, c in zip(mean, count, strict=True)]

    cover = {
        level: metrics.interval_coverage(draws, filled, level, over=()) for level in (0.5, 0.9)
    }
    variance = draws.var(0)
    sq_error = (draws.mean(0) - filled).square()
    spread = per_h(variance)
    skill = per_h(sq_error)
    ratio = [
        None if s is None or e is None or e == 0 else (s / e) ** 0.5
        for s, e in zip(spread, skill, strict=True)
    ]
    total = weight.sum()
    below = (draws < filled).sum(0).cpu().numpy()
    equal = (draws == filled).sum(0).cpu().numpy()
    u = np.random.default_rng(seed).random(below.shape)
    pit = ((below + u * (equal + 1)) / (draws.shape[0] + 1))[observed.cpu().numpy()]
    hist = np.histogram(pit, bins=num_bins, range=(0.0, 1.0))[0] / max(len(pit), 1)
    coverage_90_mean = float((cover[0.9] * weight).sum() / total)
    report = {
        "coverage_50": per_h(cover[0.5]),
        "coverage_90": per_h(cover[0.9]),
        "spread_skill": ratio,
        "coverage_50_mean": float((cover[0.5] * weight).sum() / total),
        "coverage_90_mean": coverage_90_mean,
        "spread_skill_mean": float(((variance * weight).sum() / (sq_error * weight).sum()).sqrt()),
        "pit_histogram": [float(v) for v in hist],
        "pit_max_deviation": float(np.abs(hist - 1.0 / num_bins).max()),
        "observed": int(total),
    }
    report["warning"] = coverage_warning(coverage_90_mean)
    return report


def coverage_warning(coverage_90: float, where: str = "validation") -> str | None:
    """A visible line when the 90% coverage is outside :data:`COVERAGE_RANGE`, else None."""
    low, high = COVERAGE_RANGE
    if low <= coverage_90 <= high:
        return None
    kind = "too narrow (over-confident)" if coverage_90 < low else "too wide (under-confident)"
    return (
        f"WARNING: {where} 90% coverage {coverage_90:.3f} is outside {low}-{high}: "
        f"intervals are {kind}"
    )


def format_calibration(name: str, report: dict) -> str:
    """A few Markdown lines: 50/90% coverage and spread-skill per horizon, PIT, warning."""

    def row(values):
        return " ".join("-" if v is None else f"{v:.2f}" for v in values)

    lines = [
        f"**{name}**: 90% coverage {report['coverage_90_mean']:.3f}, 50% coverage "
        f"{report['coverage_50_mean']:.3f}, spread-skill {report['spread_skill_mean']:.2f}, "
        f"PIT max deviation {report['pit_max_deviation']:.3f}",
        f"- 50% coverage per horizon: {row(report['coverage_50'])}",
        f"- 90% coverage per horizon: {row(report['coverage_90'])}",
        f"- spread-skill per horizon: {row(report['spread_skill'])}",
        f"- PIT histogram: {row(report['pit_histogram'])}",
    ]
    if report.get("warning"):
        lines.append(f"- {report['warning']}")
    return "\n".join(lines)
