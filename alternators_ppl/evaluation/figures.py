"""Diagnostic figures written straight to PNG files (Agg, no pyplot state).

Arrays are batch-first with the **sample axis first**; numpy arrays or torch tensors are
accepted (tensors are detached and moved to the CPU). Every public function validates shapes
(``ValueError`` naming the argument), builds a fresh :class:`matplotlib.figure.Figure`, writes
it to ``path`` as a PNG at 120 dpi (creating parent folders, overwriting any existing file) and
returns ``path`` as a :class:`pathlib.Path`. Nothing global is created or closed, so no GUI
backend is needed and nothing leaks between calls.

Colours: truth black, model ``tab:blue``, uncertainty bands translucent ``tab:blue``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

__all__ = [
    "plot_attractor",
    "plot_forecast_fan",
    "plot_imputation",
    "plot_latents",
    "plot_loss",
    "plot_forecast_comparison",
]

DPI = 120
TRUTH = "black"
MODEL = "tab:blue"
MAX_DIMS = 3
MAX_TRAJECTORIES = 8
ROW_HEIGHT = 2.5  # inches per row of axes (300 px at 120 dpi)
WIDTH = 8.0  # inches for the per-dimension figures (960 px)


# --------------------------------------------------------------------------- helpers


def _np(x, name: str, dtype=float) -> np.ndarray:
    """Convert a numpy array or torch tensor to a numpy array of ``dtype``."""
    if hasattr(x, "detach"):
        x = np.asarray(x.detach().cpu())
    try:
        return np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be array-like, got {type(x).__name__}") from err


def _check_ndim(a: np.ndarray, name: str, ndim: int, layout: str) -> None:
    if a.ndim != ndim:
        raise ValueError(f"{name} must have shape {layout}, got {a.shape}")


def _check_samples(samples: np.ndarray, truth: np.ndarray, s_name: str, t_name: str) -> None:
    """Require ``samples`` (S, *truth.shape) with S >= 1."""
    if samples.ndim != truth.ndim + 1 or samples.shape[1:] != truth.shape or len(samples) < 1:
        raise ValueError(
            f"{s_name} must have shape (S, *{t_name}.shape) with S >= 1; "
            f"got {s_name} {samples.shape} and {t_name} {truth.shape}"
        )


def _dims(dims: Sequence[int] | None, d: int) -> list[int]:
    """Default to the first ``min(D, 3)`` dims; otherwise check every index is in range."""
    if dims is None:
        return list(range(min(d, MAX_DIMS)))
    out = [int(i) for i in np.atleast_1d(np.asarray(dims))]
    if not out or any(not 0 <= i < d for i in out):
        raise ValueError(f"dims must be a non-empty sequence of indices in [0, {d}), got {dims}")
    return out


def _rows(n: int) -> tuple[Figure, list]:
    """A figure with ``n`` stacked axes sharing x, 960 px wide and 300 px per row."""
    fig = Figure(figsize=(WIDTH, ROW_HEIGHT * n), dpi=DPI, layout="constrained")
    axes = fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0]
    return fig, list(axes)


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png")
    return path


def _r2_title(pred, truth, name: str) -> str:
    """``"{name}   R² = 0.973"`` for 1-D ``pred`` and ``truth`` of length T (1 - SSE/SST).

    ``"R² = n/a"`` when ``truth`` is constant (SST = 0).
    """
    pred, truth = np.asarray(pred, dtype=float), np.asarray(truth, dtype=float)
    sst = float(np.sum((truth - truth.mean()) ** 2))
    if sst == 0.0:
        return f"{name}   R² = n/a"
    r2 = 1.0 - float(np.sum((truth - pred) ** 2)) / sst
    return f"{name}   R² = {r2:.3f}"


# --------------------------------------------------------------------------- builders


def _attractor_figure(samples, truth, title: str | None) -> Figure:
    samples, truth = _np(samples, "samples"), _np(truth, "truth")
    for a, name, lead in ((samples, "samples", "S"), (truth, "truth", "N")):
        if a.ndim != 3 or a.shape[-1] != 3 or a.shape[0] < 1:
            raise ValueError(f"{name} must have shape ({lead}, T, 3), got {a.shape}")
    fig = Figure(figsize=(10.0, 4.5), dpi=DPI)
    for i, (data, color, label) in enumerate(
        ((samples, MODEL, "model samples"), (truth, TRUTH, "held-out truth"))
    ):
        ax = fig.add_subplot(1, 2, i + 1, projection="3d")
        for traj in data[:MAX_TRAJECTORIES]:
            ax.plot(traj[:, 0], traj[:, 1], traj[:, 2], color=color, lw=0.5, alpha=0.8)
        ax.set_title(label)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.set_zlabel("z")
    if title:
        fig.suptitle(title)
    return fig


def _forecast_figure(context, samples, truth, dims, dt) -> Figure:
    context, samples, truth = (
        _np(context, "context"),
        _np(samples, "samples"),
        _np(truth, "truth"),
    )
    _check_ndim(truth, "truth", 2, "(H, D)")
    _check_samples(samples, truth, "samples", "truth")
    if context.ndim != 2 or context.shape[1] != truth.shape[1] or len(context) < 1:
        raise ValueError(
            f"context must have shape (Tc, D) with Tc >= 1 and D = {truth.shape[1]}, "
            f"got {context.shape}"
        )
    dims = _dims(dims, truth.shape[1])
    scale = 1.0 if dt is None else float(dt)
    # The last context step is the forecast origin (x = 0); forecast steps are 1..H.
    t_ctx = (np.arange(len(context)) - (len(context) - 1)) * scale
    t_fut = np.arange(1, len(truth) + 1) * scale
    q05, q25, q50, q75, q95 = np.quantile(samples, [0.05, 0.25, 0.5, 0.75, 0.95], axis=0)

    fig, axes = _rows(len(dims))
    for ax, d in zip(axes, dims, strict=True):
        ax.fill_between(t_fut, q05[:, d], q95[:, d], color=MODEL, alpha=0.2, lw=0, label="90%")
        ax.fill_between(t_fut, q25[:, d], q75[:, d], color=MODEL, alpha=0.4, lw=0, label="50%")
        ax.plot(t_fut, q50[:, d], color=MODEL, lw=1.2, label="median")
        ax.plot(t_ctx, context[:, d], color=TRUTH, lw=1.0, label="context")
        ax.plot(t_fut, truth[:, d], color=TRUTH, lw=1.0, ls="--", label="truth")
        ax.axvline(0.0, color="grey", lw=0.8, ls=":")
        ax.set_ylabel(f"dim {d}")
    axes[0].legend(loc="upper left", fontsize="small", ncols=5)
    axes[-1].set_xlabel("steps" if dt is None else "time")
    return fig


def _imputation_figure(observed, mask, samples, truth, dims) -> Figure:
    observed, samples, truth = (
        _np(observed, "observed"),
        _np(samples, "samples"),
        _np(truth, "truth"),
    )
    mask = _np(mask, "mask", dtype=bool)
    _check_ndim(truth, "truth", 2, "(T, D)")
    _check_samples(samples, truth, "samples", "truth")
    for a, name in ((observed, "observed"), (mask, "mask")):
        if a.shape != truth.shape:
            raise ValueError(f"{name} must have shape (T, D) = {truth.shape}, got {a.shape}")
    if not np.all(np.isfinite(observed[mask])):
        raise ValueError("observed must be finite wherever mask is True")
    dims = _dims(dims, truth.shape[1])
    t = np.arange(len(truth))
    q05, q50, q95 = np.quantile(samples, [0.05, 0.5, 0.95], axis=0)

    fig, axes = _rows(len(dims))
    for ax, d in zip(axes, dims, strict=True):
        seen, miss = mask[:, d], ~mask[:, d]
        ax.plot(t, truth[:, d], color=TRUTH, lw=1.0, label="truth")
        ax.plot(t[seen], observed[seen, d], "o", color=TRUTH, ms=3, mfc="none", label="observed")
        if miss.any():
            med = q50[miss, d]
            yerr = np.stack([med - q05[miss, d], q95[miss, d] - med])
            ax.errorbar(
                t[miss],
                med,
                yerr=yerr,
                fmt="o",
                color=MODEL,
                ms=3,
                lw=0.8,
                capsize=0,
                label="imputed (median, 90%)",
            )
        ax.set_ylabel(f"dim {d}")
    axes[0].legend(loc="upper left", fontsize="small", ncols=3)
    axes[-1].set_xlabel("steps")
    return fig


def _latents_figure(z_true, z_samples, dims, dt) -> Figure:
    z_true, z_samples = _np(z_true, "z_true"), _np(z_samples, "z_samples")
    _check_ndim(z_true, "z_true", 2, "(T, Dz)")
    _check_samples(z_samples, z_true, "z_samples", "z_true")
    dims = _dims(dims, z_true.shape[1])
    t = np.arange(len(z_true)) * (1.0 if dt is None else float(dt))
    mean = z_samples.mean(axis=0)
    q05, q95 = np.quantile(z_samples, [0.05, 0.95], axis=0)

    fig, axes = _rows(len(dims))
    for ax, d in zip(axes, dims, strict=True):
        ax.fill_between(t, q05[:, d], q95[:, d], color=MODEL, alpha=0.25, lw=0, label="90%")
        ax.plot(t, mean[:, d], color=MODEL, lw=1.2, label="sample mean")
        ax.plot(t, z_true[:, d], color=TRUTH, lw=1.0, label="truth")
        ax.set_title(_r2_title(mean[:, d], z_true[:, d], f"z[{d}]"), fontsize="medium")
        ax.set_ylabel(f"z[{d}]")
    axes[0].legend(loc="upper left", fontsize="small", ncols=3)
    axes[-1].set_xlabel("steps" if dt is None else "time")
    return fig


def _loss_figure(history: Mapping[str, Sequence[float]]) -> Figure:
    if "train_loss" not in history:
        raise ValueError(f"history must have a 'train_loss' key, got keys {sorted(history)}")
    train = _np(history["train_loss"], "train_loss").ravel()
    val = history.get("val_loss")
    val = _np([] if val is None else val, "val_loss").ravel()
    if train.size == 0:
        raise ValueError("history['train_loss'] must be non-empty")
    fig = Figure(figsize=(6.0, 4.0), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.plot(np.arange(1, train.size + 1), train, color=TRUTH, lw=1.0, label="train")
    if val.size:
        ax.plot(np.arange(1, val.size + 1), val, color=MODEL, lw=1.0, label="val")
    if np.all(np.concatenate([train, val]) > 0):
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend(fontsize="small")
    return fig


def _comparison_figure(context, truth, draws: Mapping, dims) -> Figure:
    context, truth = _np(context, "context"), _np(truth, "truth")
    _check_ndim(truth, "truth", 2, "(H, D)")
    if context.ndim != 2 or context.shape[1] != truth.shape[1]:
        raise ValueError(f"context must have shape (Tc, {truth.shape[1]}), got {context.shape}")
    if not draws:
        raise ValueError("draws must name at least one model")
    draws = {name: _np(d, f"draws[{name!r}]") for name, d in draws.items()}
    for name, d in draws.items():
        _check_samples(d, truth, f"draws[{name!r}]", "truth")
    dims = _dims(dims, truth.shape[1])
    t_ctx = np.arange(len(context)) - (len(context) - 1)
    t_fut = np.arange(1, len(truth) + 1)
    fig = Figure(figsize=(3.0 * len(draws), ROW_HEIGHT * len(dims)), dpi=DPI, layout="constrained")
    axes = fig.subplots(len(dims), len(draws), sharex=True, sharey="row", squeeze=False)
    for col, (name, d) in enumerate(draws.items()):
        q05, q50, q95 = np.quantile(d, [0.05, 0.5, 0.95], axis=0)
        for row, dim in enumerate(dims):
            ax = axes[row, col]
            ax.fill_between(t_fut, q05[:, dim], q95[:, dim], color=MODEL, alpha=0.25, lw=0)
            ax.plot(t_fut, q50[:, dim], color=MODEL, lw=1.2)
            ax.plot(t_ctx[-20:], context[-20:, dim], color=TRUTH, lw=1.0)
            ax.plot(t_fut, truth[:, dim], color=TRUTH, lw=1.0, ls="--")
            ax.axvline(0.0, color="grey", lw=0.8, ls=":")
            if row == 0:
                ax.set_title(name)
            if col == 0:
                ax.set_ylabel(f"dim {dim}")
    return fig


# --------------------------------------------------------------------------- public API


def plot_attractor(
    samples, truth, path: str | os.PathLike, title: str | None = "Lorenz attractor"
) -> Path:
    """Side-by-side 3-D trajectories: model ``samples`` (S, T, 3), held-out ``truth`` (N, T', 3).

    Up to 8 trajectories of each are drawn as thin lines; both must be in the same units.
    The PNG is 1200 x 540 px.
    """
    return _save(_attractor_figure(samples, truth, title), path)


def plot_forecast_fan(
    context,
    samples,
    truth,
    path: str | os.PathLike,
    dims: Sequence[int] | None = None,
    dt: float | None = None,
) -> Path:
    """Fan chart: ``context`` (Tc, D), forecast ``samples`` (S, H, D), held-out ``truth`` (H, D).

    One row per dim in ``dims`` (default the first ``min(D, 3)``): context, future truth
    (dashed), sample median and 50% / 90% central bands. The last context step is the
    forecast origin (vertical line at x = 0); x is in steps, or time if ``dt`` is given.
    The PNG is 960 x 300·len(dims) px.
    """
    return _save(_forecast_figure(context, samples, truth, dims, dt), path)


def plot_imputation(
    observed,
    mask,
    samples,
    truth,
    path: str | os.PathLike,
    dims: Sequence[int] | None = None,
) -> Path:
    """Imputation check: ``observed`` (T, D) (NaN where missing), ``mask`` (T, D) bool
    (True = observed), imputation ``samples`` (S, T, D), ``truth`` (T, D).

    Per dim: truth line, observed points, and at missing steps the sample median with 90%
    error bars. The PNG is 960 x 300·len(dims) px.
    """
    return _save(_imputation_figure(observed, mask, samples, truth, dims), path)


def plot_latents(
    z_true,
    z_samples,
    path: str | os.PathLike,
    dims: Sequence[int] | None = None,
    dt: float | None = None,
) -> Path:
    """Latent recovery: ``z_true`` (T, Dz) against posterior ``z_samples`` (S, T, Dz).

    Per dim: truth, sample mean and 90% band, titled with the R² of the sample mean
    (1 - SSE/SST over time). The PNG is 960 x 300·len(dims) px.
    """
    return _save(_latents_figure(z_true, z_samples, dims, dt), path)


def plot_loss(history: Mapping[str, Sequence[float]], path: str | os.PathLike) -> Path:
    """Training curves from ``history["train_loss"]`` and optional ``history["val_loss"]``.

    ``val_loss[i]`` is drawn at epoch ``i + 1`` like ``train_loss``; an empty or missing
    ``val_loss`` is skipped. The y axis is logarithmic when every loss is positive.
    The PNG is 720 x 480 px.
    """
    return _save(_loss_figure(history), path)


def plot_forecast_comparison(
    context, truth, draws: Mapping, path: str | os.PathLike, dims: Sequence[int] | None = None
) -> Path:
    """Forecasts of several models on one held-out window, one column per model.

    ``context`` (Tc, D) (its last 20 steps are drawn), ``truth`` (H, D), ``draws`` maps a model
    name to its forecast samples (S, H, D): median and 90% band per dim (default first 3).
    """
    return _save(_comparison_figure(context, truth, draws, dims), path)
