"""ArviZ InferenceData and NetCDF, pointwise log-likelihoods, PSIS-LOO over time, summaries.

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
"""

from __future__ import annotations

import datetime
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import arviz as az
import numpy as np
import torch
import xarray as xr
from scipy.special import logsumexp

from alternators_ppl.models.alternator import Alternator
from alternators_ppl.runs import atomic_write
from alternators_ppl.validation import (
    as_float_tensor,
    check_mask,
    check_sequences,
)

__all__ = [
    "to_numpy",
    "to_float_tensor",
    "chunks",
    "idata_group",
    "select_coords",
    "DiagnosticsExistError",
    "check_alternator",
    "pointwise_log_likelihood",
    "to_inference_data",
    "save_netcdf",
    "loo_over_time",
    "summary_table",
]

LIBRARY = "alternators_ppl"
_ROWS_PER_CHUNK = 2**18  # (sample, sequence, step) rows per network call: bounds peak memory


class DiagnosticsExistError(FileExistsError):
    """The diagnostics file exists and overwriting was not asked for."""


def to_numpy(value, name: str) -> np.ndarray:
    """A numeric numpy copy of a tensor (any device; detached) or an array."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy().copy()
    if isinstance(value, np.ndarray):
        if not (np.issubdtype(value.dtype, np.number) or value.dtype == bool):
            raise TypeError(f"{name} must have a numeric dtype, got {value.dtype}")
        return value.copy()
    raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(value).__name__}")


def to_float_tensor(value, name: str, device=None) -> torch.Tensor:
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


def chunks(total: int, rows_per_item: int):
    """Slices of ``range(total)`` holding about ``_ROWS_PER_CHUNK`` rows each."""
    step = max(1, _ROWS_PER_CHUNK // max(1, rows_per_item))
    for start in range(0, total, step):
        yield slice(start, min(total, start + step))


def idata_group(idata, group: str, var_names: Sequence[str]) -> xr.Dataset:
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


def select_coords(da: xr.DataArray, coords: Mapping | None, name: str) -> xr.DataArray:
    if not coords:
        return da
    coords = {k: v for k, v in coords.items() if k in da.dims}
    try:
        return da.sel(coords)
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(f"coords {coords} do not select from {name} {dict(da.sizes)}") from err


def check_alternator(model, what: str) -> None:
    """``TypeError`` unless ``model`` is an Alternator (or a variant of it), naming ``what``."""
    if not isinstance(model, Alternator):
        hint = ""
        if hasattr(model, "alternator") and hasattr(model, "sample_globals"):
            hint = (
                "; for a HyperpriorAlternator pass program.alternator, inside "
                "program.alternator.hyperparameters(...) for given globals"
            )
        raise TypeError(f"{what} needs an Alternator, got {type(model).__name__}{hint}")


def pointwise_log_likelihood(model, x, z, mask=None) -> torch.Tensor:
    """log p(x_t | z_{t-1}) per sequence and step for latent paths z: (..., B, T).

    x (B, T, Dx) (NaN = missing, or ``mask`` (B, T) / (B, T, Dx), True = observed); z
    (..., B, T+1, Dz) with any leading sample axes. Each entry is the sum over the observed
    entries of x_t of log p(x_t | z_{t-1}) (the model's own ``x_dist``, so variants count):
    the log-density of the site ``x_t`` of :meth:`Alternator.model` conditioned on the same z
    (0 at a step with no observed entry). Vectorised (one OTN call per chunk of paths);
    follows autograd. Inputs are moved to the model's device and dtype. A model that is not an
    :class:`~alternators_ppl.models.Alternator` (e.g. a ``HyperpriorAlternator``, whose x-factor
    depends on drawn globals) raises ``TypeError``.
    """
    check_alternator(model, "pointwise_log_likelihood")
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
    paths = z.reshape(-1, *expected)
    x_obs = torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))
    log_lik = torch.cat(
        [
            (model.x_dist(paths[part, :, :-1]).log_prob(x_obs) * mask).sum(-1)
            for part in chunks(paths.shape[0], batch * steps)
        ]
    )
    return log_lik.reshape(*lead, batch, steps)


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
        array = to_numpy(value, f"{what}[{key!r}]")
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
        z = to_numpy(z, "z")
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
        x_pred = to_numpy(x_pred, "x_pred")
        _check_draws(x_pred, "x_pred", "(C, D, B, T, Dx)", 5, cd)
        for key, size in zip(("B", "T", "Dx"), x_pred.shape[2:], strict=True):
            _agree(found, key, size, "x_pred")
        dims = ("chain", "draw", "sequence", "time", "obs_dim")
        groups["posterior_predictive"] = _dataset({"x": (dims, x_pred)}, base_attrs)

    if log_likelihood is not None:
        log_likelihood = to_numpy(log_likelihood, "log_likelihood")
        _check_draws(log_likelihood, "log_likelihood", "(C, D, B, T)", 4, cd)
        if not np.isfinite(log_likelihood).all():
            raise ValueError("log_likelihood contains NaN or inf values")
        _agree(found, "B", log_likelihood.shape[2], "log_likelihood")
        _agree(found, "T", log_likelihood.shape[3], "log_likelihood")
        dims = ("chain", "draw", "sequence", "time")
        groups["log_likelihood"] = _dataset({"x": (dims, log_likelihood)}, base_attrs)

    if x_obs is not None:
        x_obs = to_numpy(x_obs, "x_obs")
        if not np.issubdtype(x_obs.dtype, np.floating):
            x_obs = x_obs.astype(np.float64)
        if x_obs.ndim != 3:
            raise ValueError(f"x_obs must have shape (B, T, Dx), got {x_obs.shape}")
        if np.isinf(x_obs).any():
            raise ValueError("x_obs contains inf values; use NaN or mask for missing entries")
        for key, size in zip(("B", "T", "Dx"), x_obs.shape, strict=True):
            _agree(found, key, size, "x_obs")
        if mask is not None:
            observed = np.asarray(to_numpy(mask, "mask"))
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
    return atomic_write(path, lambda tmp: idata.to_netcdf(str(tmp)))


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
    log_lik = idata_group(idata, "log_likelihood", [var_name])[var_name]
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
    data = idata_group(idata, "posterior", var_names)
    selected = xr.Dataset({name: select_coords(data[name], coords, name) for name in var_names})
    return az.summary(selected, **kwargs)
