"""Diagnostic figures written straight to PNG files (Agg, no pyplot state).

Arrays are batch-first with the **sample axis first**; numpy arrays or torch tensors are
accepted (tensors are detached and moved to the CPU). Every public function validates shapes
(``ValueError`` naming the argument), builds a fresh :class:`matplotlib.figure.Figure`, writes
it to ``path`` as a PNG at 120 dpi (creating parent folders, overwriting any existing file) and
returns ``path`` as a :class:`pathlib.Path`. Nothing global is created or closed, so no GUI
backend is needed and nothing leaks between calls.

Colours: observations black, model ``tab:blue``, uncertainty bands translucent ``tab:blue``
(each model its own colour in the comparison). Every panel has a title; every axis has a
label: x in "steps", or "time (model time units)" when ``dt`` is given; y in ``units``
(pass ``STANDARDISED`` for standardised data; None claims no unit and labels y "value").
Legends sit outside the axes so that they never cover data. "Truth" in the forecast,
imputation and comparison figures is the noisy held-out observations, and is labelled so.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from alternators_ppl.validation import check_positive_int

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
OBS_LABEL = "held-out observations (noisy)"
CONTEXT_LABEL = "context (observed)"
STANDARDISED = "standardised units"  # the ``units`` of standardised data
LATENT_WINDOW = 500  # steps of the latent path drawn (a longer path is unreadable)
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


def _time_label(dt) -> str:
    """x-axis label: "steps" without ``dt``, else "time (model time units)"."""
    return "steps" if dt is None else "time (model time units)"


def _value_label(units: str | None, name: str | None = None) -> str:
    """Axis label ``"name (units)"``; ``units`` None gives ``name`` alone (or "value")."""
    if units is None:
        return "value" if name is None else name
    return units if name is None else f"{name} ({units})"


def _legend_outside(fig: Figure, ncols: int, where: str = "upper") -> None:
    """One figure legend above (or, with ``where="lower"``, below) all axes, off the data;
    constrained layout makes room for it."""
    entries = {}  # label -> first handle, over all axes (a panel may lack an entry)
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    fig.legend(
        list(entries.values()),
        list(entries),
        loc=f"outside {where} center",
        fontsize="small",
        ncols=min(ncols, len(entries)),
    )


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


def _attractor_figure(samples, truth, title: str | None, units: str | None = None) -> Figure:
    samples, truth = _np(samples, "samples"), _np(truth, "truth")
    for a, name, lead in ((samples, "samples", "S"), (truth, "truth", "N")):
        if a.ndim != 3 or a.shape[-1] != 3 or a.shape[0] < 1:
            raise ValueError(f"{name} must have shape ({lead}, T, 3), got {a.shape}")
    fig = Figure(figsize=(10.0, 4.5), dpi=DPI)
    for i, (data, color, label) in enumerate(
        (
            (samples, MODEL, "model samples"),
            (truth, TRUTH, "held-out trajectories (noise-free states)"),
        )
    ):
        ax = fig.add_subplot(1, 2, i + 1, projection="3d")
        for traj in data[:MAX_TRAJECTORIES]:
            ax.plot(traj[:, 0], traj[:, 1], traj[:, 2], color=color, lw=0.5, alpha=0.8)
        ax.set_title(label)
        ax.set_xlabel(_value_label(units, "x"))
        ax.set_ylabel(_value_label(units, "y"))
        ax.set_zlabel(_value_label(units, "z"))
    if title:
        fig.suptitle(title)
    return fig


def _forecast_figure(context, samples, truth, dims, dt, units=None) -> Figure:
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
        ax.plot(t_fut, q50[:, d], color=MODEL, lw=1.2, label="forecast median")
        ax.plot(t_ctx, context[:, d], color=TRUTH, lw=1.0, label=CONTEXT_LABEL)
        ax.plot(t_fut, truth[:, d], color=TRUTH, lw=1.0, ls="--", label=OBS_LABEL)
        ax.axvline(0.0, color="grey", lw=0.8, ls=":")
        ax.set_title(f"dim {d}: forecast from the last context step (x = 0)", fontsize="medium")
        ax.set_ylabel(_value_label(units))
    _legend_outside(fig, ncols=5)
    axes[-1].set_xlabel(_time_label(dt))
    return fig


def _imputation_figure(observed, mask, samples, truth, dims, dt=None, units=None):
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
    t = np.arange(len(truth)) * (1.0 if dt is None else float(dt))
    q05, q50, q95 = np.quantile(samples, [0.05, 0.5, 0.95], axis=0)

    fig, axes = _rows(len(dims))
    for ax, d in zip(axes, dims, strict=True):
        seen, miss = mask[:, d], ~mask[:, d]
        ax.plot(t, truth[:, d], color=TRUTH, lw=1.0, label=OBS_LABEL)
        ax.plot(
            t[seen], observed[seen, d], "o", color=TRUTH, ms=3, mfc="none", label="given to model"
        )
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
        ax.set_title(f"dim {d}: {int(miss.sum())} of {len(t)} steps hidden", fontsize="medium")
        ax.set_ylabel(_value_label(units))
    _legend_outside(fig, ncols=3)
    axes[-1].set_xlabel(_time_label(dt))
    return fig


def _latents_figure(
    z_true, z_samples, dims, dt, window: int | None = LATENT_WINDOW, units=None
) -> Figure:
    z_true, z_samples = _np(z_true, "z_true"), _np(z_samples, "z_samples")
    _check_ndim(z_true, "z_true", 2, "(T, Dz)")
    _check_samples(z_samples, z_true, "z_samples", "z_true")
    dims = _dims(dims, z_true.shape[1])
    steps = len(z_true)
    shown = steps if window is None else min(check_positive_int(window, "window"), steps)
    t = np.arange(shown) * (1.0 if dt is None else float(dt))
    mean = z_samples.mean(axis=0)  # over all steps: R² scores the whole path
    q05, q95 = np.quantile(z_samples[:, :shown], [0.05, 0.95], axis=0)

    fig, axes = _rows(len(dims))
    for ax, d in zip(axes, dims, strict=True):
        ax.fill_between(t, q05[:, d], q95[:, d], color=MODEL, alpha=0.25, lw=0, label="90%")
        ax.plot(t, mean[:shown, d], color=MODEL, lw=1.2, label="posterior sample mean")
        ax.plot(t, z_true[:shown, d], color=TRUTH, lw=1.0, label="true latent (noise-free)")
        ax.set_title(_r2_title(mean[:, d], z_true[:, d], f"z[{d}]"), fontsize="medium")
        ax.set_ylabel(_value_label(units, f"z[{d}]"))
    span = f"all {steps} steps" if shown == steps else f"first {shown} of {steps} steps"
    fig.suptitle(f"latent recovery: {span} shown; R² over all {steps} steps", fontsize="medium")
    _legend_outside(fig, ncols=3, where="lower")  # below: the suptitle holds the top
    axes[-1].set_xlabel(_time_label(dt))
    return fig


def _loss_figure(history: Mapping[str, Sequence[float]], title: str | None = None) -> Figure:
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
    ax.set_title("loss per epoch" if not title else f"{title}: loss per epoch")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("loss")
    _legend_outside(fig, ncols=2, where="lower")
    return fig


def _comparison_figure(context, truth, draws: Mapping, dims, dt=None, units=None):
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
    scale = 1.0 if dt is None else float(dt)
    t_ctx = (np.arange(len(context)) - (len(context) - 1)) * scale
    t_fut = np.arange(1, len(truth) + 1) * scale
    # Extra height for the legend row above the panels.
    height = ROW_HEIGHT * len(dims) + 0.6
    fig = Figure(figsize=(3.0 * len(draws), height), dpi=DPI, layout="constrained")
    axes = fig.subplots(len(dims), len(draws), sharex=True, sharey="row", squeeze=False)
    handles = []
    for col, (name, d) in enumerate(draws.items()):
        color = f"C{col % 10}"
        q05, q50, q95 = np.quantile(d, [0.05, 0.5, 0.95], axis=0)
        for row, dim in enumerate(dims):
            ax = axes[row, col]
            ax.fill_between(t_fut, q05[:, dim], q95[:, dim], color=color, alpha=0.25, lw=0)
            (median,) = ax.plot(t_fut, q50[:, dim], color=color, lw=1.2)
            (ctx,) = ax.plot(t_ctx[-20:], context[-20:, dim], color=TRUTH, lw=1.0)
            (obs,) = ax.plot(t_fut, truth[:, dim], color=TRUTH, lw=1.0, ls="--")
            ax.axvline(0.0, color="grey", lw=0.8, ls=":")
            ax.set_title(f"{name}: dim {dim}", fontsize="medium")
            if col == 0:
                ax.set_ylabel(_value_label(units, f"dim {dim}"))
            if row == len(dims) - 1:
                ax.set_xlabel(_time_label(dt))
        handles.append((median, f"{name} (median, 90% band)"))
    handles += [(ctx, CONTEXT_LABEL), (obs, OBS_LABEL)]
    fig.legend(
        [h for h, _ in handles],
        [label for _, label in handles],
        loc="outside upper center",
        fontsize="small",
        ncols=min(len(handles), 3),
    )
    return fig


# --------------------------------------------------------------------------- public API


def plot_attractor(
    samples,
    truth,
    path: str | os.PathLike,
    title: str | None = "Lorenz attractor",
    units: str | None = None,
) -> Path:
    """Side-by-side 3-D trajectories: model ``samples`` (S, T, 3), held-out ``truth`` (N, T', 3).

    ``truth`` is meant to be the noise-free held-out states (its panel says so). Up to 8
    trajectories of each are drawn as thin lines; both must be in the same ``units``, which
    label the axes ("x (units)"). The PNG is 1200 x 540 px.
    """
    return _save(_attractor_figure(samples, truth, title, units), path)


def plot_forecast_fan(
    context,
    samples,
    truth,
    path: str | os.PathLike,
    dims: Sequence[int] | None = None,
    dt: float | None = None,
    units: str | None = None,
) -> Path:
    """Fan chart: ``context`` (Tc, D), forecast ``samples`` (S, H, D), held-out ``truth`` (H, D).

    ``truth`` is the noisy held-out observations (labelled so). One row per dim in ``dims``
    (default the first ``min(D, 3)``): context, future observations (dashed), sample median
    and 50% / 90% central bands; the legend sits above the panels. The last context step is
    the forecast origin (vertical line at x = 0); x is in steps, or time if ``dt`` is given;
    y is in ``units``. The PNG is 960 x 300·len(dims) px.
    """
    return _save(_forecast_figure(context, samples, truth, dims, dt, units), path)


def plot_imputation(
    observed,
    mask,
    samples,
    truth,
    path: str | os.PathLike,
    dims: Sequence[int] | None = None,
    dt: float | None = None,
    units: str | None = None,
) -> Path:
    """Imputation check: ``observed`` (T, D) (NaN where missing), ``mask`` (T, D) bool
    (True = observed), imputation ``samples`` (S, T, D), ``truth`` (T, D), the noisy
    held-out observations (labelled so).

    Per dim: the observations as a line, the entries given to the model as points, and at
    missing steps the sample median with 90% error bars; the legend sits above the panels.
    x is in steps, or time if ``dt`` is given; y in ``units``. The PNG is
    960 x 300·len(dims) px.
    """
    return _save(_imputation_figure(observed, mask, samples, truth, dims, dt, units), path)


def plot_latents(
    z_true,
    z_samples,
    path: str | os.PathLike,
    dims: Sequence[int] | None = None,
    dt: float | None = None,
    window: int | None = LATENT_WINDOW,
    units: str | None = None,
) -> Path:
    """Latent recovery: ``z_true`` (T, Dz) against posterior ``z_samples`` (S, T, Dz).

    One panel per dim, titled ``z[d]`` with the R² of the sample mean over all T steps
    (1 - SSE/SST over time): truth, sample mean and 90% band over the first ``window`` steps
    (None: all), as the figure's title states. The PNG is 960 x 300·len(dims) px.
    """
    return _save(_latents_figure(z_true, z_samples, dims, dt, window, units), path)


def plot_loss(
    history: Mapping[str, Sequence[float]], path: str | os.PathLike, title: str | None = None
) -> Path:
    """Training curves from ``history["train_loss"]`` and optional ``history["val_loss"]``.

    ``val_loss[i]`` is drawn at epoch ``i + 1`` like ``train_loss``; an empty or missing
    ``val_loss`` is skipped. The y axis is logarithmic when every loss is positive. The panel
    is titled "{title}: loss per epoch". The PNG is 720 x 480 px.
    """
    return _save(_loss_figure(history, title), path)


def plot_forecast_comparison(
    context,
    truth,
    draws: Mapping,
    path: str | os.PathLike,
    dims: Sequence[int] | None = None,
    dt: float | None = None,
    units: str | None = None,
) -> Path:
    """Forecasts of several models on one held-out window, one column per model.

    ``context`` (Tc, D) (its last 20 steps are drawn), ``truth`` (H, D) the noisy held-out
    observations, ``draws`` maps a model name to its forecast samples (S, H, D): median and
    90% band per dim (default first 3), one colour per model. A legend above the panels names
    each model and the observations; x is in steps, or time if ``dt`` is given; y in ``units``.
    """
    return _save(_comparison_figure(context, truth, draws, dims, dt, units), path)
