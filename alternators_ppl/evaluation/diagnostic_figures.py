"""Diagnostic figures: PIT histogram, trace and rank plots, posterior predictive checks."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import product
from pathlib import Path

import arviz as az
import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from scipy import stats

from alternators_ppl.evaluation.inference_data import idata_group, select_coords, to_numpy
from alternators_ppl.runs import atomic_write
from alternators_ppl.validation import (
    check_positive_int,
)

__all__ = [
    "plot_pit",
    "plot_trace_and_rank",
    "plot_ppc",
]

DPI = 120
TRUTH = "black"
MODEL = "tab:blue"


def _save_figure(fig: Figure, path) -> Path:
    return atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=DPI, format="png"))


def _pit_figure(pit: np.ndarray, bins: int) -> Figure:
    n = pit.size
    counts, edges = np.histogram(pit, bins=bins, range=(0.0, 1.0))
    expected = n / bins
    spread = 2.576 * math.sqrt(n * (1 / bins) * (1 - 1 / bins))  # 99% band of one bin count
    fig = Figure(figsize=(6.0, 4.0), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    ax.axhspan(
        max(0.0, expected - spread),
        expected + spread,
        color="grey",
        alpha=0.2,
        lw=0,
        label="99% band if uniform",
    )
    ax.bar(
        edges[:-1],
        counts,
        width=np.diff(edges),
        align="edge",
        color=MODEL,
        alpha=0.7,
        edgecolor="white",
        label="PIT counts",
    )
    ax.axhline(expected, color=TRUTH, lw=1.0, ls="--", label="uniform")
    ks = stats.kstest(pit, "uniform").statistic
    ax.set_title(f"PIT histogram (n = {n}, KS statistic {ks:.3f})")
    ax.set_xlabel("PIT value")
    ax.set_ylabel("count")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.3 * max(counts.max(), expected + spread))
    ax.legend(loc="upper center", fontsize="small", ncols=3)
    return fig


def plot_pit(pit, path, bins: int = 10) -> Path:
    """Histogram of PIT values (any shape, in [0, 1]) with the uniform level and its 99% band.

    Writes a 720 x 480 px PNG to ``path`` (atomically, replacing an existing file); returns it.
    """
    pit = np.asarray(to_numpy(pit, "pit"), dtype=float).reshape(-1)
    bins = check_positive_int(bins, "bins")
    if pit.size == 0:
        raise ValueError("pit is empty")
    if not np.isfinite(pit).all() or pit.min() < 0.0 or pit.max() > 1.0:
        raise ValueError("pit values must be finite and lie in [0, 1]")
    return _save_figure(_pit_figure(pit, bins), path)


def _elements(da: xr.DataArray, name: str, limit: int) -> list[tuple[str, np.ndarray]]:
    """Up to ``limit`` scalar components of ``da`` (chain, draw, ...) as (label, (C, D))."""
    rest = [d for d in da.dims if d not in ("chain", "draw")]
    values = da.transpose("chain", "draw", *rest).values
    values = values.reshape(values.shape[0], values.shape[1], -1)
    labels = [
        f"{name}[{', '.join(map(str, idx))}]" if rest else name
        for idx in product(*(da[d].values.tolist() for d in rest))
    ]
    picks = np.unique(np.linspace(0, len(labels) - 1, min(limit, len(labels))).round())
    return [(labels[int(i)], values[:, :, int(i)]) for i in picks]


def _trace_rank_figure(rows: list[tuple[str, np.ndarray]]) -> Figure:
    fig = Figure(figsize=(10.0, 2.2 * len(rows)), dpi=DPI, layout="constrained")
    axes = fig.subplots(len(rows), 2, squeeze=False)
    for (label, values), (ax_trace, ax_rank) in zip(rows, axes, strict=True):
        chains, draws = values.shape
        ranks = stats.rankdata(values.reshape(-1)).reshape(chains, draws)
        bins = max(1, min(20, draws // 5))
        edges = np.linspace(0.5, chains * draws + 0.5, bins + 1)
        for c in range(chains):
            color = f"C{c % 10}"
            ax_trace.plot(values[c], color=color, lw=0.6, alpha=0.8, label=f"chain {c}")
            counts, _ = np.histogram(ranks[c], bins=edges)
            ax_rank.stairs(counts, edges, color=color, lw=1.2)
        ax_rank.axhline(draws / bins, color=TRUTH, lw=0.8, ls="--")
        ax_trace.set_ylabel(label)
        ax_rank.set_ylabel("count")
    axes[0, 0].set_title("trace (per chain)")
    axes[0, 1].set_title("rank histogram (uniform if chains agree)")
    axes[-1, 0].set_xlabel("draw")
    axes[-1, 1].set_xlabel("rank among all draws")
    if len(rows[0][1]) <= 10:
        axes[0, 0].legend(loc="upper right", fontsize="x-small", ncols=len(rows[0][1]))
    return fig


def plot_trace_and_rank(
    idata: az.InferenceData,
    var_names: Sequence[str],
    path,
    coords: Mapping | None = None,
    max_rows: int = 6,
) -> Path:
    """Trace (left) and rank (right) plots of posterior scalars, one row per component.

    ``coords`` selects components (e.g. ``{"sequence": [0], "time_z": [50], "latent": [0, 1]}``;
    keys a variable lacks are ignored); at most ``max_rows`` components in all, spread evenly
    over each variable. The rank plot is the histogram of the ranks of each chain's draws among
    all draws; it is flat (dashed line) when the chains sample the same distribution. Writes a
    PNG (1200 px wide, 264 px per row) to ``path``; returns it.
    """
    data = idata_group(idata, "posterior", var_names)
    max_rows = check_positive_int(max_rows, "max_rows")
    per_var = max(1, max_rows // len(var_names))
    rows = []
    for name in var_names:
        da = select_coords(data[name], coords, name)
        if da.size == 0:
            raise ValueError(f"coords {dict(coords or {})} select no element of {name}")
        rows.extend(_elements(da, name, per_var))
    return _save_figure(_trace_rank_figure(rows[:max_rows]), path)


def _ppc_figure(pred: np.ndarray, observed: np.ndarray, time: np.ndarray, sequence) -> Figure:
    dims = observed.shape[-1]
    q05, q25, q50, q75, q95 = np.quantile(pred, [0.05, 0.25, 0.5, 0.75, 0.95], axis=0)
    fig = Figure(figsize=(8.0, 2.5 * dims), dpi=DPI, layout="constrained")
    axes = fig.subplots(dims, 1, sharex=True, squeeze=False)[:, 0]
    for d, ax in enumerate(axes):
        ax.fill_between(time, q05[:, d], q95[:, d], color=MODEL, alpha=0.2, lw=0, label="90%")
        ax.fill_between(time, q25[:, d], q75[:, d], color=MODEL, alpha=0.4, lw=0, label="50%")
        ax.plot(time, q50[:, d], color=MODEL, lw=1.0, label="median")
        ax.plot(time, observed[:, d], color=TRUTH, lw=0.8, marker=".", ms=2, label="observed")
        ax.set_ylabel(f"obs_dim {d}")
    axes[0].legend(loc="upper left", fontsize="small", ncols=4)
    axes[0].set_title(f"posterior predictive vs observed, sequence {sequence}")
    axes[-1].set_xlabel("time step t")
    return fig


def plot_ppc(idata: az.InferenceData, path, sequence: int = 0, var_name: str = "x") -> Path:
    """Observed x against 50% / 90% posterior-predictive bands and median, one row per dim.

    Needs posterior_predictive ``var_name`` (chain, draw, sequence, time, obs_dim) and the
    matching observed_data (sequence, time, obs_dim); draws one ``sequence`` (index). Writes a
    PNG (960 x 300 px per dim) to ``path``; returns it.
    """
    pp = idata_group(idata, "posterior_predictive", [var_name])[var_name]
    obs = idata_group(idata, "observed_data", [var_name])[var_name]
    expected = ("chain", "draw", "sequence", "time", "obs_dim")
    if pp.dims != expected or obs.dims != expected[2:]:
        raise ValueError(
            f"plot_ppc needs posterior_predictive dims {expected} and observed_data dims "
            f"{expected[2:]}, got {pp.dims} and {obs.dims}"
        )
    if pp.shape[2:] != obs.shape:
        raise ValueError(f"posterior_predictive {pp.shape} does not match observed {obs.shape}")
    if isinstance(sequence, bool) or not isinstance(sequence, int | np.integer):
        raise TypeError(f"sequence must be an int index, got {type(sequence).__name__}")
    if not 0 <= sequence < obs.shape[0]:
        raise ValueError(f"sequence must lie in [0, {obs.shape[0]}), got {sequence}")
    pred = pp.values[:, :, sequence].reshape(-1, *pp.shape[3:])
    label = obs["sequence"].values[sequence]
    figure = _ppc_figure(pred, obs.values[sequence], obs["time"].values, label)
    return _save_figure(figure, path)
