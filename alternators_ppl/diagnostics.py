"""ArviZ diagnostics: InferenceData and NetCDF, calibration, PSIS-LOO, trace/rank and PPC figures.

Shapes follow the project's conventions: x (B, T, Dx), z (B, T+1, Dz) including z_0, sample
axes first. :func:`to_inference_data` names the axes for ArviZ:

* posterior ``z``: (chain, draw, sequence, time_z, latent) from z (C, D, B, T+1, Dz);
* posterior ``<param>``: (chain, draw, <param>_dim_0, ...) from params[name] (C, D, ...);
* posterior_predictive ``x``: (chain, draw, sequence, time, obs_dim) from x_pred (C, D, B, T, Dx);
* observed_data ``x``: (sequence, time, obs_dim) from x_obs (B, T, Dx), NaN where missing;
* log_likelihood ``x``: (chain, draw, sequence, time) from log_likelihood (C, D, B, T);
* sample_stats ``<name>``: (chain, draw, <name>_dim_0, ...) from sample_stats[name].

Coordinates are integers: ``time`` = 1..T (the paper's t, so x_t and z_t share a label),
``time_z`` = 0..T, and 0-based ``chain``, ``draw``, ``sequence``, ``latent``, ``obs_dim``.
Inputs may be torch tensors on any device (detached and copied to the CPU) or numpy arrays.

:func:`diagnose_run` applies all of it to the forecaster of a ``lorenz`` run folder.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import fields
from itertools import product
from pathlib import Path

import arviz as az
import numpy as np
import pyro.distributions as dist
import torch
import xarray as xr
from matplotlib.figure import Figure
from scipy import stats
from scipy.special import logsumexp

from alternators_ppl import metrics
from alternators_ppl.inference import load_checkpoint
from alternators_ppl.lorenz_job import LorenzJobConfig, build_alternator
from alternators_ppl.validation import (
    as_float_tensor,
    check_mask,
    check_positive_int,
    check_sequences,
)

__all__ = [
    "DiagnosticsExistError",
    "pointwise_log_likelihood",
    "to_inference_data",
    "save_netcdf",
    "coverage_table",
    "pit_values",
    "plot_pit",
    "plot_trace_and_rank",
    "plot_ppc",
    "loo_over_time",
    "summary_table",
    "diagnose_run",
    "format_diagnostics",
]

DPI = 120
TRUTH = "black"
MODEL = "tab:blue"
LIBRARY = "alternators_ppl"
_ROWS_PER_CHUNK = 2**18  # (sample, sequence, step) rows per network call: bounds peak memory
_QUANTILE_LIMIT = 2**24 - 1  # torch.quantile's input size limit


class DiagnosticsExistError(FileExistsError):
    """The diagnostics file exists and overwriting was not asked for."""


# --------------------------------------------------------------------------- helpers


def _numpy(value, name: str) -> np.ndarray:
    """A numeric numpy copy of a tensor (any device; detached) or an array."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy().copy()
    if isinstance(value, np.ndarray):
        if not (np.issubdtype(value.dtype, np.number) or value.dtype == bool):
            raise TypeError(f"{name} must have a numeric dtype, got {value.dtype}")
        return value.copy()
    raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(value).__name__}")


def _tensor(value, name: str, device=None) -> torch.Tensor:
    """A floating tensor (numpy arrays go to ``device``); tensors keep their device."""
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            value = value.to(torch.get_default_dtype())
        return value.detach()
    if isinstance(value, np.ndarray):
        if not np.issubdtype(value.dtype, np.number):
            raise TypeError(f"{name} must have a numeric dtype, got {value.dtype}")
        value = torch.from_numpy(np.asarray(value, dtype=np.float64))
        return value.to(device)
    raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(value).__name__}")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, write) -> Path:
    """Call ``write(tmp_path)`` on a temp file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _save_figure(fig: Figure, path) -> Path:
    return _atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=DPI, format="png"))


def _chunks(total: int, rows_per_item: int):
    """Slices of ``range(total)`` holding about ``_ROWS_PER_CHUNK`` rows each."""
    step = max(1, _ROWS_PER_CHUNK // max(1, rows_per_item))
    for start in range(0, total, step):
        yield slice(start, min(total, start + step))


def _x_loc(model, z: torch.Tensor) -> torch.Tensor:
    """OTN mean of x_t given z_{t-1} for a path batch z (N, B, T+1, Dz): (N, B, T, Dx)."""
    rows = z.shape[1] * (z.shape[2] - 1)
    return torch.cat([model.x_loc(z[part, :, :-1]) for part in _chunks(z.shape[0], rows)])


def _log_lik_from_loc(loc, x, mask, sigma_x: float) -> torch.Tensor:
    """Sum over observed entries of log N(x | loc, sigma_x^2): (..., B, T, Dx) -> (..., B, T)."""
    x = torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))
    log_p = dist.Normal(loc, sigma_x).log_prob(x)
    return torch.where(mask, log_p, torch.zeros((), dtype=log_p.dtype, device=log_p.device)).sum(-1)


# --------------------------------------------------------------------------- log-likelihood


def pointwise_log_likelihood(model, x, z, mask=None) -> torch.Tensor:
    """log p(x_t | z_{t-1}) per sequence and step for latent paths z: (..., B, T).

    x (B, T, Dx) (NaN = missing, or ``mask`` (B, T) / (B, T, Dx), True = observed); z
    (..., B, T+1, Dz) with any leading sample axes. Each entry is the sum over the observed
    entries of x_t of log N(x_t | sqrt(1 - sigma_x^2) f(z_{t-1}), sigma_x^2): the log-density of
    the site ``x_t`` of :meth:`Alternator.model` conditioned on the same z (0 at a step with no
    observed entry). Vectorised (one OTN call per chunk of paths); follows autograd. Inputs are
    moved to the model's device and dtype.
    """
    x = as_float_tensor(x, "x", device=model.device, dtype=model.dtype)
    check_sequences(x, "x", model.obs_dim)
    mask = check_mask(mask, x)
    z = as_float_tensor(z, "z", device=model.device, dtype=model.dtype)
    batch, steps, _ = x.shape
    expected = (batch, steps + 1, model.latent_dim)
    if z.dim() < 3 or tuple(z.shape[-3:]) != expected:
        raise ValueError(
            f"z has shape {tuple(z.shape)}, expected (..., B, T+1, Dz) ending in {expected}"
        )
    if not torch.isfinite(z).all():
        raise ValueError("z contains NaN or inf values")
    lead = z.shape[:-3]
    loc = _x_loc(model, z.reshape(-1, *expected))
    return _log_lik_from_loc(loc, x, mask, model.sigma_x).reshape(*lead, batch, steps)


# --------------------------------------------------------------------------- InferenceData


def _check_draws(array: np.ndarray, name: str, layout: str, ndim: int | None, cd) -> None:
    """Require ``array`` of rank ``ndim`` (or >= 2 if None) whose (chain, draw) match ``cd``."""
    if (ndim is not None and array.ndim != ndim) or array.ndim < 2:
        raise ValueError(f"{name} must have shape {layout}, got {array.shape}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"{name} has shape {array.shape}: expected >= 1 chain and >= 1 draw")
    if cd[0] is None:
        cd[0] = (array.shape[:2], name)
    elif array.shape[:2] != cd[0][0]:
        raise ValueError(
            f"{name} has (chain, draw) = {array.shape[:2]}, but {cd[0][1]} has {cd[0][0]}"
        )


def _agree(found: dict, key: str, size: int, name: str) -> None:
    """Record axis ``key`` = ``size`` from ``name``, or raise if an earlier input disagrees."""
    if key in found and found[key][0] != size:
        raise ValueError(
            f"{name} has {key} = {size}, but {found[key][1]} has {key} = {found[key][0]}"
        )
    found.setdefault(key, (size, name))


def _dataset(variables: dict, attrs: dict) -> xr.Dataset:
    coords = {}
    for dims, values in variables.values():
        for dim, size in zip(dims, values.shape, strict=True):
            start = 1 if dim == "time" else 0
            coords.setdefault(dim, np.arange(start, start + size))
    return xr.Dataset(variables, coords=coords, attrs=attrs)


def _named_arrays(group: Mapping | None, what: str, cd, reserved=()) -> dict:
    if group is None:
        return {}
    if not isinstance(group, Mapping):
        raise TypeError(f"{what} must be a dict name -> array, got {type(group).__name__}")
    out = {}
    for key, value in group.items():
        if not isinstance(key, str) or not key or key in reserved:
            raise ValueError(f"{what} has an invalid name {key!r} (reserved: {list(reserved)})")
        array = _numpy(value, f"{what}[{key!r}]")
        _check_draws(array, f"{what}[{key!r}]", "(C, D, ...)", None, cd)
        dims = ("chain", "draw", *(f"{key}_dim_{i}" for i in range(array.ndim - 2)))
        out[key] = (dims, array)
    return out


def to_inference_data(
    z=None,
    params: Mapping | None = None,
    x_pred=None,
    x_obs=None,
    log_likelihood=None,
    sample_stats: Mapping | None = None,
    mask=None,
    attrs: Mapping | None = None,
) -> az.InferenceData:
    """Collect draws into an ``az.InferenceData`` with the dims and coords of the module doc.

    z (C, D, B, T+1, Dz); ``params`` name -> (C, D, *shape) (global parameters, posterior
    group); x_pred (C, D, B, T, Dx) posterior predictive; x_obs (B, T, Dx) observed data, set to
    NaN where ``mask`` (B, T) or (B, T, Dx) is False; log_likelihood (C, D, B, T), finite;
    ``sample_stats`` name -> (C, D, ...) (e.g. "lp", "diverging", "energy"). Every argument is
    optional but at least one group must be given; C, D, B, T and Dx must agree across inputs
    (``ValueError`` naming both). ``attrs`` (str/number values) go on every group.
    """
    cd = [None]  # (chain, draw) sizes and the input that set them
    found: dict[str, tuple[int, str]] = {}
    base_attrs = {
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "arviz_version": az.__version__,
        "inference_library": LIBRARY,
        **dict(attrs or {}),
    }
    groups: dict[str, xr.Dataset] = {}

    posterior = {}
    if z is not None:
        z = _numpy(z, "z")
        _check_draws(z, "z", "(C, D, B, T+1, Dz)", 5, cd)
        if z.shape[3] < 2:
            raise ValueError(f"z has shape {z.shape}: expected T+1 >= 2 time points (z_0..z_T)")
        _agree(found, "B", z.shape[2], "z")
        _agree(found, "T", z.shape[3] - 1, "z")
        posterior["z"] = (("chain", "draw", "sequence", "time_z", "latent"), z)
    posterior.update(_named_arrays(params, "params", cd, reserved=("z",)))
    if posterior:
        groups["posterior"] = _dataset(posterior, base_attrs)

    if x_pred is not None:
        x_pred = _numpy(x_pred, "x_pred")
        _check_draws(x_pred, "x_pred", "(C, D, B, T, Dx)", 5, cd)
        for key, size in zip(("B", "T", "Dx"), x_pred.shape[2:], strict=True):
            _agree(found, key, size, "x_pred")
        dims = ("chain", "draw", "sequence", "time", "obs_dim")
        groups["posterior_predictive"] = _dataset({"x": (dims, x_pred)}, base_attrs)

    if log_likelihood is not None:
        log_likelihood = _numpy(log_likelihood, "log_likelihood")
        _check_draws(log_likelihood, "log_likelihood", "(C, D, B, T)", 4, cd)
        if not np.isfinite(log_likelihood).all():
            raise ValueError("log_likelihood contains NaN or inf values")
        _agree(found, "B", log_likelihood.shape[2], "log_likelihood")
        _agree(found, "T", log_likelihood.shape[3], "log_likelihood")
        dims = ("chain", "draw", "sequence", "time")
        groups["log_likelihood"] = _dataset({"x": (dims, log_likelihood)}, base_attrs)

    if x_obs is not None:
        x_obs = _numpy(x_obs, "x_obs")
        if not np.issubdtype(x_obs.dtype, np.floating):
            x_obs = x_obs.astype(np.float64)
        if x_obs.ndim != 3:
            raise ValueError(f"x_obs must have shape (B, T, Dx), got {x_obs.shape}")
        if np.isinf(x_obs).any():
            raise ValueError("x_obs contains inf values; use NaN or mask for missing entries")
        for key, size in zip(("B", "T", "Dx"), x_obs.shape, strict=True):
            _agree(found, key, size, "x_obs")
        if mask is not None:
            observed = np.asarray(_numpy(mask, "mask"))
            if observed.dtype != bool:
                raise TypeError(f"mask must be bool (True = observed), got {observed.dtype}")
            if observed.shape == x_obs.shape[:2]:
                observed = observed[..., None]
            elif observed.shape != x_obs.shape:
                raise ValueError(
                    f"mask has shape {observed.shape}, expected {x_obs.shape[:2]} or {x_obs.shape}"
                )
            x_obs = np.where(observed, x_obs, np.nan)
        dims = ("sequence", "time", "obs_dim")
        groups["observed_data"] = _dataset({"x": (dims, x_obs)}, base_attrs)
    elif mask is not None:
        raise ValueError("mask needs x_obs (it marks which entries of x_obs are observed)")

    stats_vars = _named_arrays(sample_stats, "sample_stats", cd)
    if stats_vars:
        groups["sample_stats"] = _dataset(stats_vars, base_attrs)
    if not groups:
        raise ValueError("nothing to convert: give at least one of z, params, x_pred, x_obs, ...")
    return az.InferenceData(**groups)


def save_netcdf(idata: az.InferenceData, path, overwrite: bool = False) -> Path:
    """Write ``idata`` to NetCDF (one HDF5 group per ArviZ group) atomically; return the path.

    Written to a temp file beside ``path`` and renamed into place, so a reader never sees a
    partial file. Raises :class:`DiagnosticsExistError` if ``path`` exists and not
    ``overwrite``. ArviZ 1.x (and plain xarray) read it with ``xarray.open_datatree(path)``.
    """
    if not isinstance(idata, az.InferenceData):
        raise TypeError(f"idata must be an arviz.InferenceData, got {type(idata).__name__}")
    path = Path(path)
    if path.exists() and not overwrite:
        raise DiagnosticsExistError(f"{path} exists; pass overwrite=True (CLI: --overwrite)")
    return _atomic_write(path, lambda tmp: idata.to_netcdf(str(tmp)))


# --------------------------------------------------------------------------- calibration


def _samples_and_truth(samples, truth) -> tuple[torch.Tensor, torch.Tensor]:
    truth_t = _tensor(truth, "truth")
    samples_t = _tensor(samples, "samples", device=truth_t.device)
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


# --------------------------------------------------------------------------- figures


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
    pit = np.asarray(_numpy(pit, "pit"), dtype=float).reshape(-1)
    bins = check_positive_int(bins, "bins")
    if pit.size == 0:
        raise ValueError("pit is empty")
    if not np.isfinite(pit).all() or pit.min() < 0.0 or pit.max() > 1.0:
        raise ValueError("pit values must be finite and lie in [0, 1]")
    return _save_figure(_pit_figure(pit, bins), path)


def _check_group(idata, group: str, var_names: Sequence[str]) -> xr.Dataset:
    if not isinstance(idata, az.InferenceData):
        raise TypeError(f"idata must be an arviz.InferenceData, got {type(idata).__name__}")
    if group not in idata.groups():
        raise ValueError(f"idata has no {group} group (groups: {idata.groups()})")
    data = idata[group]
    if isinstance(var_names, str) or not var_names:
        raise ValueError(f"var_names must be a non-empty list of names, got {var_names!r}")
    missing = [v for v in var_names if v not in data.data_vars]
    if missing:
        raise ValueError(f"var_names {missing} not in {group} (has {list(data.data_vars)})")
    return data


def _select(da: xr.DataArray, coords: Mapping | None, name: str) -> xr.DataArray:
    if not coords:
        return da
    coords = {k: v for k, v in coords.items() if k in da.dims}
    try:
        return da.sel(coords)
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(f"coords {coords} do not select from {name} {dict(da.sizes)}") from err


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
    data = _check_group(idata, "posterior", var_names)
    max_rows = check_positive_int(max_rows, "max_rows")
    per_var = max(1, max_rows // len(var_names))
    rows = []
    for name in var_names:
        da = _select(data[name], coords, name)
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
    pp = _check_group(idata, "posterior_predictive", [var_name])[var_name]
    obs = _check_group(idata, "observed_data", [var_name])[var_name]
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


# --------------------------------------------------------------------------- ArviZ wrappers


def loo_over_time(idata: az.InferenceData, var_name: str = "x", reff: float | None = None) -> dict:
    """PSIS-LOO over the (sequence, time) points of the log_likelihood group (``az.loo``).

    Scores leave-one-time-point-out prediction: how well the model predicts x_t with that one
    point removed from the data the draws were conditioned on. It is NOT a forecasting metric:
    for a smoothing posterior the other points include the future; for the Alternator's
    filtering draws (z_{t-1} never saw x_t) the mean of p(x_t | z_{t-1}) over draws is already
    the held-out one-step predictive density (``lppd`` here), and PSIS removes x_t a second
    time, so ``elpd_loo`` understates it by ``p_loo``. Use it to compare models scored the
    same way and to find influential points (Pareto k); use CRPS / coverage for forecasts.

    log_likelihood ``var_name`` has dims (chain, draw, *points). Points whose log-likelihood is
    the same in every draw (a step with no observed entry scores 0) are exact: their loo_i is
    that value and their Pareto k NaN; PSIS runs on the others. ``reff`` (relative efficiency
    of the draws) defaults to ArviZ's estimate from the posterior group; pass 1.0 for
    independent draws. Returns {"elpd_loo", "se", "p_loo", "lppd", "n_points", "n_constant",
    "n_samples", "pareto_k_max", "pareto_k_threshold", "n_pareto_k_bad", "warning", "messages",
    "loo_i", "pareto_k"}; the last two are arrays of shape ``points``; ``messages`` holds the
    warnings ArviZ issued (recorded, not raised).
    """
    log_lik = _check_group(idata, "log_likelihood", [var_name])[var_name]
    if log_lik.dims[:2] != ("chain", "draw") or log_lik.ndim < 3:
        raise ValueError(
            f"log_likelihood {var_name} needs dims (chain, draw, ...), got {log_lik.dims}"
        )
    if reff is None and "posterior" not in idata.groups():
        raise ValueError("loo_over_time needs a posterior group (to estimate reff) or reff=")
    chains, draws = log_lik.shape[:2]
    points = log_lik.values.reshape(chains, draws, -1).astype(np.float64)
    constant = (points == points[:1, :1]).all(axis=(0, 1))
    if constant.all():
        raise ValueError(f"log_likelihood {var_name} is the same in every draw: nothing to score")
    informative = xr.Dataset({var_name: (("chain", "draw", "point"), points[:, :, ~constant])})
    groups = {"log_likelihood": informative}
    if reff is None:
        groups["posterior"] = idata.posterior
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = az.loo(az.InferenceData(**groups), pointwise=True, var_name=var_name, reff=reff)
    loo_i = points[0, 0].copy()  # the exact value at constant points
    loo_i[~constant] = np.asarray(result.loo_i)
    pareto_k = np.full(loo_i.shape, np.nan)
    pareto_k[~constant] = np.asarray(result.pareto_k)
    flat = points.reshape(chains * draws, -1)
    lppd = float((logsumexp(flat, axis=0) - math.log(chains * draws)).sum())
    elpd = float(loo_i.sum())
    threshold = float(getattr(result, "good_k", 0.7))
    shape = log_lik.shape[2:]
    return {
        "elpd_loo": elpd,
        "se": float(math.sqrt(loo_i.size * np.var(loo_i))),
        "p_loo": lppd - elpd,
        "lppd": lppd,
        "n_points": int(loo_i.size),
        "n_constant": int(constant.sum()),
        "n_samples": int(chains * draws),
        "pareto_k_max": float(np.nanmax(pareto_k)),
        "pareto_k_threshold": threshold,
        "n_pareto_k_bad": int((pareto_k[~constant] > threshold).sum()),
        "warning": bool(result.warning),
        "messages": sorted({str(w.message) for w in caught}),
        "loo_i": loo_i.reshape(shape),
        "pareto_k": pareto_k.reshape(shape),
    }


def summary_table(
    idata: az.InferenceData, var_names: Sequence[str], coords: Mapping | None = None, **kwargs
):
    """``az.summary`` of posterior ``var_names`` (a pandas DataFrame: mean, sd, HDI, ESS, R-hat).

    ``coords`` selects components (keys a variable lacks are ignored); ``kwargs`` go to
    ``az.summary`` (e.g. ``kind="diagnostics"``, ``hdi_prob=0.9``).
    """
    data = _check_group(idata, "posterior", var_names)
    selected = xr.Dataset({name: _select(data[name], coords, name) for name in var_names})
    return az.summary(selected, **kwargs)


# --------------------------------------------------------------------------- run folders


def _load_forecaster(run_dir: Path, device: torch.device):
    config_path = run_dir / "config.json"
    checkpoint = run_dir / "checkpoints" / "forecaster" / "best.pt"
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder not found: {run_dir}")
    if not config_path.is_file():
        raise FileNotFoundError(f"no config.json in {run_dir}: not a run folder")
    if not checkpoint.is_file():
        raise FileNotFoundError(f"no forecaster checkpoint in {run_dir}: missing {checkpoint}")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_path} is not valid JSON: {err}") from err
    job = config.get("job") if isinstance(config, dict) else None
    if job != "lorenz":
        raise ValueError(f"{config_path} is not a lorenz run (job = {job!r})")
    names = {f.name for f in fields(LorenzJobConfig)}
    cfg = LorenzJobConfig(**{k: v for k, v in config.items() if k in names})
    model = build_alternator(cfg, 3, cfg.latent_dim, device)
    try:
        load_checkpoint(checkpoint, model, restore_rng=False)
    except (RuntimeError, KeyError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"{checkpoint} does not fit the model of config.json: {first}") from err
    return cfg, model, checkpoint


def _fork_rng(device: torch.device):
    cuda = [device.index or 0] if device.type == "cuda" else []
    return torch.random.fork_rng(devices=cuda)


def _log_joint_terms(model, x: torch.Tensor, z: torch.Tensor, log_lik: torch.Tensor):
    """log p(x, z) per path for complete x (B, T, Dx), paths z (N, B, T+1, Dz): (N, B).

    Equals :meth:`Alternator.log_joint` per path, with the FTN run once on x (shared by all
    paths) and the x-terms taken from ``log_lik`` (N, B, T).
    """
    alpha = model.alpha_schedule(x.shape[1]).unsqueeze(-1)
    drive = torch.sqrt(alpha) * model.ftn(x)  # (B, T, Dz)
    loc = drive + torch.sqrt(1 - alpha - model.sigma_z**2) * z[..., :-1, :]
    log_z = dist.Normal(loc, model.sigma_z).log_prob(z[..., 1:, :]).sum((-2, -1))
    log_z0 = dist.Normal(torch.zeros_like(z[..., 0, :]), 1.0).log_prob(z[..., 0, :]).sum(-1)
    return log_z0 + log_z + log_lik.sum(-1)


def _draw(model, x: torch.Tensor, chains: int, draws: int):
    """Latent paths, one-step predictive draws, pointwise log-lik and log p(x, z) per draw."""
    batch, steps, _ = x.shape
    mask = torch.ones_like(x, dtype=torch.bool)
    z = torch.cat(
        [
            model.infer_latents(x, num_samples=part.stop - part.start)
            for part in _chunks(chains * draws, batch * steps)
        ]
    )
    loc = _x_loc(model, z)
    log_lik = _log_lik_from_loc(loc, x, mask, model.sigma_x)
    x_pred = loc + model.sigma_x * torch.randn_like(loc)
    lp = _log_joint_terms(model, x, z, log_lik).sum(-1)

    def shape(t):
        return t.reshape(chains, draws, *t.shape[1:])

    return shape(z), shape(x_pred), shape(log_lik), shape(lp)


def _fmt(value, digits: int = 3) -> str:
    if isinstance(value, float | np.floating):
        return f"{value:.{digits}f}" if math.isfinite(value) else str(value)
    return str(value)


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines


def _report(result: dict, summary, run_dir: Path) -> str:
    r = result
    lines = [
        f"# Diagnostics of {run_dir.name}",
        "",
        f"Forecaster of `{run_dir}` ({r['checkpoint']}), test split: {r['num_sequences']} "
        f"sequences x {r['num_steps']} steps; {r['num_chains']} chains x {r['num_draws']} draws "
        f"of the latent path (seed {r['seed']}, {r['device']}).",
        "",
        "The posterior draws are **exact independent draws** of the model's conditioned "
        "recursion (`Alternator.infer_latents`: z_t given x_1..x_t, the latent inference the "
        "model forecasts with; not the smoothing posterior given all of x). Chains are "
        "independent batches of draws, so R-hat and ESS check the sampling plumbing (they "
        "should be ~1 and ~the number of draws); they say nothing about MCMC mixing. The "
        "posterior predictive is the one-step-ahead draw x_t ~ N(sqrt(1 - sigma_x^2) "
        "f(z_{t-1}), sigma_x^2): z_{t-1} never saw x_t, so its coverage and PIT are held-out "
        "one-step calibration checks.",
        "",
        f"## Posterior summary of z (sequence 0, time_z {r['summary_time_z']})",
        "",
    ]
    header = ["", *summary.columns]
    rows = [[index, *row] for index, row in zip(summary.index, summary.to_numpy(), strict=True)]
    lines += _markdown_table(header, rows)
    lines += [
        "",
        f"## ESS and R-hat (z at {len(r['ess_time_z'])} time points, all sequences and dims)",
        "",
        *_markdown_table(
            ["statistic", "min", "median", "max"],
            [
                ["ESS bulk", *r["ess_bulk"]],
                ["ESS tail", *r["ess_tail"]],
                ["R-hat", *r["rhat"]],
            ],
        ),
        "",
        f"Total draws {r['num_chains'] * r['num_draws']}; R-hat > 1.01 for "
        f"{r['rhat_above_1_01']:.1%} of the components.",
        "",
        "## PSIS-LOO over time points",
        "",
        "Leave-one-(sequence, time)-point-out, **not a forecasting metric**: the filtering "
        "draws of z_{t-1} never saw x_t, so `lppd` (log mean over draws of p(x_t | z_{t-1})) is "
        "already the held-out one-step log predictive density, and PSIS removes x_t a second "
        "time (elpd_loo understates it by p_loo). Use it to compare models scored the same way "
        "and to spot influential points (Pareto k). Relative efficiency reff = 1 (independent "
        "draws); steps with no observed entry are exact and get no Pareto k.",
        "",
    ]
    loo = r["loo"]
    lines += _markdown_table(
        ["elpd_loo", "se", "p_loo", "lppd", "points", "max Pareto k", "k > threshold"],
        [
            [
                loo["elpd_loo"],
                loo["se"],
                loo["p_loo"],
                loo["lppd"],
                loo["n_points"],
                loo["pareto_k_max"],
                f"{loo['n_pareto_k_bad']} (k > {loo['pareto_k_threshold']:.2f})",
            ]
        ],
    )
    if loo["messages"]:
        lines += ["", "ArviZ warnings: " + "; ".join(loo["messages"])]
    lines += [
        "",
        "## One-step predictive: interval coverage",
        "",
        *_markdown_table(
            ["nominal", "coverage", "mean width", "coverage per dim"],
            [
                [
                    f"{level:.0%}",
                    row["coverage"],
                    row["width"],
                    ", ".join(f"{c:.3f}" for c in row["coverage_per_dim"]),
                ]
                for level, row in r["coverage"].items()
            ],
        ),
        "",
        "## One-step predictive: PIT histogram",
        "",
        f"{len(r['pit_counts'])} equal bins over [0, 1] (uniform = "
        f"{sum(r['pit_counts']) / len(r['pit_counts']):.1f} per bin); KS statistic "
        f"{r['pit_ks']:.4f} (neighbouring steps are correlated, so no p-value is given).",
        "",
        *_markdown_table(
            ["bin", *(f"{i / len(r['pit_counts']):.1f}" for i in range(len(r["pit_counts"])))],
            [["count", *r["pit_counts"]]],
        ),
        "",
        "## Files",
        "",
        *(f"- `{Path(p).relative_to(run_dir)}`" for p in r["files"].values()),
        "",
    ]
    return "\n".join(lines)


def _ranges(values: np.ndarray) -> list[float]:
    values = np.asarray(values, dtype=float).reshape(-1)
    return [float(values.min()), float(np.median(values)), float(values.max())]


def diagnose_run(
    run_dir,
    num_chains: int = 4,
    num_draws: int = 250,
    overwrite: bool = False,
    device="cpu",
    num_sequences: int | None = 8,
    seed: int | None = None,
) -> dict:
    """ArviZ diagnostics of the forecaster of a ``lorenz`` run folder; return the key numbers.

    Rebuilds the Alternator from ``config.json`` and ``checkpoints/forecaster/best.pt``,
    regenerates the test split (the config's seed) and keeps its first ``num_sequences`` (None:
    all). Draws ``num_chains`` x ``num_draws`` latent paths with ``infer_latents``; chains are
    independent batches of **exact independent draws** of the conditioned recursion, so R-hat and
    ESS are a sanity check of the sampler plumbing, not of MCMC mixing. The posterior predictive
    is one one-step-ahead x_t ~ N(x_loc(z_{t-1}), sigma_x^2) per path; the pointwise
    log-likelihood is log p(x_t | z_{t-1}); sample_stats "lp" is log p(x, z) summed over
    sequences. Writes ``run_dir/diagnostics.nc`` (InferenceData), ``diagnostics.md`` (z summary
    at a few time points, ESS/R-hat ranges, PSIS-LOO over time points with its caveat, 50/90%
    coverage and PIT counts of the one-step predictive) and ``figures/{pit,trace_rank,ppc}.png``.

    The model and the draws live on ``device``; diagnostics.nc is written last, so its presence
    marks a finished diagnosis. Raises ``FileNotFoundError`` without config.json or the
    checkpoint, ``ValueError`` for a run of another job or a checkpoint that does not fit,
    :class:`DiagnosticsExistError` if diagnostics.nc exists and not ``overwrite``. Random draws
    are seeded by ``seed`` (default: the run's seed) without touching the caller's global random
    state. With the defaults (8 sequences x 200 steps, Dz = 8) diagnostics.nc is about 72 MB.
    """
    run_dir = Path(run_dir)
    num_chains = check_positive_int(num_chains, "num_chains")
    num_draws = check_positive_int(num_draws, "num_draws")
    if num_chains < 2 or num_draws < 4:
        raise ValueError(
            f"R-hat needs >= 2 chains of >= 4 draws, got num_chains={num_chains}, "
            f"num_draws={num_draws}"
        )
    if num_sequences is not None:
        num_sequences = check_positive_int(num_sequences, "num_sequences")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} requested but CUDA is not available")
    netcdf = run_dir / "diagnostics.nc"
    # model initialisation and the draws run on a forked random state: the caller's is untouched
    with _fork_rng(device):
        cfg, model, checkpoint = _load_forecaster(run_dir, device)
        if netcdf.exists() and not overwrite:
            raise DiagnosticsExistError(f"{netcdf} exists; pass overwrite=True (CLI: --overwrite)")
        seed = cfg.seed if seed is None else seed
        task = cfg.forecasting_task()
        x = torch.as_tensor(task.x_test[:num_sequences], device=device, dtype=model.dtype)
        batch, steps, _ = x.shape
        torch.manual_seed(seed)
        with torch.no_grad():
            z, x_pred, log_lik, lp = _draw(model, x, num_chains, num_draws)
    idata = to_inference_data(
        z=z,
        x_pred=x_pred,
        x_obs=x,
        log_likelihood=log_lik,
        sample_stats={"lp": lp},
        attrs={
            "run_dir": str(run_dir),
            "checkpoint": str(checkpoint.relative_to(run_dir)),
            "sampler": "Alternator.infer_latents (exact independent draws; chains = batches)",
            "seed": int(seed),
        },
    )

    time_z = np.unique(np.linspace(0, steps, min(steps + 1, 12)).round().astype(int))
    z_sel = idata.posterior[["z"]].sel(time_z=time_z)
    ess_bulk = az.ess(z_sel, method="bulk")["z"].values
    ess_tail = az.ess(z_sel, method="tail")["z"].values
    rhat = az.rhat(z_sel)["z"].values
    summary_times = sorted({1, steps // 2, steps})
    latents = list(range(model.latent_dim))
    summary = summary_table(
        idata,
        ["z"],
        coords={"sequence": [0], "time_z": summary_times, "latent": latents[:3]},
        round_to="none",
    )
    loo = loo_over_time(idata, reff=1.0)  # exact independent draws
    pred_flat = x_pred.reshape(-1, batch, steps, x.shape[-1])
    coverage = coverage_table(pred_flat, x, levels=(0.5, 0.9))
    pit = pit_values(pred_flat, x, seed=seed)
    pit_counts, _ = np.histogram(pit, bins=10, range=(0.0, 1.0))

    figures = run_dir / "figures"
    files = {
        "pit": plot_pit(pit, figures / "pit.png"),
        "trace_rank": plot_trace_and_rank(
            idata,
            ["z"],
            figures / "trace_rank.png",
            coords={"sequence": [0], "time_z": [steps // 2, steps], "latent": latents[:2]},
        ),
        "ppc": plot_ppc(idata, figures / "ppc.png", sequence=0),
        "markdown": run_dir / "diagnostics.md",
        "netcdf": netcdf,
    }
    result = {
        "run_dir": str(run_dir),
        "checkpoint": str(checkpoint.relative_to(run_dir)),
        "device": str(device),
        "seed": int(seed),
        "num_chains": num_chains,
        "num_draws": num_draws,
        "num_sequences": batch,
        "num_steps": steps,
        "summary_time_z": summary_times,
        "ess_time_z": time_z.tolist(),
        "ess_bulk": _ranges(ess_bulk),
        "ess_tail": _ranges(ess_tail),
        "rhat": _ranges(rhat),
        "rhat_above_1_01": float((rhat > 1.01).mean()),
        "loo": {k: v for k, v in loo.items() if k not in ("loo_i", "pareto_k")},
        "coverage": coverage,
        "pit_counts": pit_counts.tolist(),
        "pit_ks": float(stats.kstest(pit.reshape(-1), "uniform").statistic),
        "files": {k: str(v) for k, v in files.items()},
    }
    text = _report(result, summary, run_dir)
    _atomic_write(files["markdown"], lambda tmp: tmp.write_text(text))
    save_netcdf(idata, netcdf, overwrite=overwrite)  # last: its presence marks a finished run
    return result


def format_diagnostics(result: dict) -> str:
    """A few lines summarising :func:`diagnose_run`'s result."""
    cov = result["coverage"]
    loo = result["loo"]
    lines = [
        f"diagnostics of {result['num_chains']} x {result['num_draws']} latent paths, "
        f"{result['num_sequences']} test sequences x {result['num_steps']} steps",
        f"  ESS bulk min {result['ess_bulk'][0]:.0f}, R-hat max {result['rhat'][2]:.3f} "
        "(exact independent draws: a plumbing check)",
        "  one-step coverage "
        + ", ".join(f"{level:.0%}: {row['coverage']:.3f}" for level, row in cov.items())
        + f"; PIT KS statistic {result['pit_ks']:.3f}",
        f"  PSIS-LOO over time points (not a forecasting metric): elpd_loo {loo['elpd_loo']:.1f} "
        f"(se {loo['se']:.1f}), lppd {loo['lppd']:.1f}, max Pareto k {loo['pareto_k_max']:.2f}",
        f"  wrote {result['files']['netcdf']}, {result['files']['markdown']} and figures/",
    ]
    return "\n".join(lines)
