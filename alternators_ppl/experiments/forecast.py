"""``alternators-ppl forecast PATH``: train one model on a series and forecast past its end.

The first 85% of the steps train the model (windows of context + horizon, scaled on this span
only), the last 15% validate it. The forecast starts from the last ``context`` observed steps
and runs ``horizon`` steps beyond the end of the data. The run folder holds the draws'
quantiles and mean in data units with time stamps continuing the data's (``forecast.csv``, or
``forecast.nc`` for gridded NetCDF input), a fan chart (``figures/forecast.png``) and
``forecast.json`` (config, spans, scaler, training history). Nothing is overwritten unless
asked.

With ``covariates`` (known inputs: file columns, calendar features; see
:mod:`alternators_ppl.data.covariates`) the forecast is the model's masked imputation of the
last context steps and the horizon with the targets of the horizon missing. Calendar features
of the horizon come from its time stamps; a file column must be given for the horizon: the
file then ends with ``horizon`` (or more) rows whose targets are empty and whose covariates
are filled in, and the forecast starts after the last row with a target value.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from alternators_ppl.data.covariates import CALENDAR_FEATURES, with_covariates
from alternators_ppl.data.readers import Series
from alternators_ppl.data.scaling import Standardizer
from alternators_ppl.data.splits import make_windows
from alternators_ppl.evaluation.masked_scoring import covariate_forecast
from alternators_ppl.experiments import covariates as cov
from alternators_ppl.experiments.file_task import (
    BUILTIN_SERIES,
    check_difference,
    load_series,
    resolve_difference,
    series_options,
)
from alternators_ppl.experiments.registry import (
    ALTERNATOR_MEMBERS,
    MODEL_NAMES,
    add_alternator_arguments,
    build_model,
    check_alternator_options,
    training_options,
)
from alternators_ppl.models.differenced import Differenced
from alternators_ppl.runs import (
    atomic_write,
    publish_run_folder,
    resolve_device,
    stage_run_folder,
    write_json,
)
from alternators_ppl.seeding import seed_everything

__all__ = [
    "ForecastConfig",
    "run_forecast",
    "format_forecast",
    "forecast_command",
    "add_forecast_parser",
]


@dataclass(frozen=True)
class ForecastConfig:
    """Settings of ``forecast``: the series (file or built-in name), the model and its budget."""

    path: str
    columns: tuple[str, ...] | None = None
    time_column: str | None = None
    resample: str | None = None
    fill_value: float | None = None
    region: tuple | None = None
    model: str = "alternator"
    context: int = 24
    horizon: int = 12
    stride: int = 1
    val_fraction: float = 0.15
    seed: int = 0
    device: str = "cpu"
    budget_s: float = 60.0
    epochs: int = 200
    members: int = ALTERNATOR_MEMBERS  # networks in the alternator's ensemble
    latent_timescales: str = "auto"  # the alternator's: auto, given or spread
    num_samples: int = 500
    quantiles: tuple[float, ...] = (0.05, 0.25, 0.5, 0.75, 0.95)
    covariates: tuple[str, ...] | None = None
    difference: bool | str = "auto"

    def __post_init__(self):
        check_difference(self)
        if self.model not in MODEL_NAMES:
            raise ValueError(f"model must be one of {', '.join(MODEL_NAMES)}, got {self.model!r}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if not all(0.0 < q < 1.0 for q in self.quantiles) or not self.quantiles:
            raise ValueError(f"quantiles must lie in (0, 1), got {self.quantiles}")
        check_alternator_options(self.members, self.latent_timescales)
        if self.num_samples < 2 or self.budget_s <= 0:
            raise ValueError(
                f"num_samples must be >= 2 and budget_s > 0, got {self.num_samples}, "
                f"{self.budget_s}"
            )

    @classmethod
    def quick(cls, path: str, **overrides) -> ForecastConfig:
        """Seconds-long smoke settings (2 epochs, one network, 50 draws); the forecast means
        nothing."""
        small = dict(epochs=2, members=1, latent_timescales="given", budget_s=5.0, num_samples=50)
        return replace(cls(path), **{**small, **overrides})


def _train_val(series: Series, cfg: ForecastConfig):
    """Scaler fitted on the train span; train windows; validation windows (targets after it)."""
    steps, need = series.values.shape[1], cfg.context + cfg.horizon
    val_start = int(round((1.0 - cfg.val_fraction) * steps))
    if val_start < need or steps - val_start < cfg.horizon:
        raise ValueError(
            f"series of {steps} steps is too short for context {cfg.context} + horizon "
            f"{cfg.horizon} with a {cfg.val_fraction:.0%} validation span (train needs >= "
            f"{need} steps, validation >= {cfg.horizon})"
        )
    scaler = Standardizer().fit(series.values[:, :val_start])
    x = scaler.transform(series.values).astype(np.float32)
    x_train = make_windows(x, need, cfg.stride, 0, val_start)
    x_val = make_windows(x, need, 1, val_start - cfg.context, steps)
    return scaler, x, x_train, x_val, val_start


def _with_horizon_covariates(series: Series, cfg: ForecastConfig) -> tuple[Series, int, int]:
    """(series with covariates read one step ahead and the horizon's rows, n_targets, end):
    rows ``[:end]`` are the data, rows ``[end : end + horizon]`` the horizon (targets NaN)."""
    exogenous = [c for c in cfg.covariates if c in series.columns]
    targets = (
        list(cfg.columns) if cfg.columns else [c for c in series.columns if c not in exogenous]
    )
    index = [series.columns.index(c) for c in targets if c in series.columns]
    observed = np.flatnonzero(np.isfinite(series.values[..., index]).any(axis=(0, 2)))
    if observed.size == 0:
        raise ValueError("the target columns hold no value")
    end, steps = int(observed[-1]) + 1, series.values.shape[1]
    if exogenous and steps - end < cfg.horizon:
        raise ValueError(
            f"covariate {exogenous[0]!r} must be given for the {cfg.horizon} forecast steps: "
            f"end the file with {cfg.horizon} rows whose targets are empty (it has "
            f"{steps - end} after the last target value)"
        )
    if steps - end < cfg.horizon:  # calendar features only: extend the time axis
        extra = cfg.horizon - (steps - end)
        tail = np.full(series.values.shape[:1] + (extra,) + series.values.shape[2:], np.nan)
        series = replace(
            series,
            values=np.concatenate([series.values, tail], axis=1),
            time=np.concatenate([series.time, series.future_times(extra)]),
        )
    series = replace(
        series,
        values=series.values[:, : end + cfg.horizon],
        time=series.time[: end + cfg.horizon],
    )
    unknown = [c for c in cfg.covariates if c not in series.columns and c not in CALENDAR_FEATURES]
    if unknown:
        raise ValueError(f"covariate {unknown[0]!r} is neither a column nor a calendar feature")
    series, n_targets = with_covariates(series, cfg.covariates, targets)
    return series, n_targets, end


def _quantile_table(series: Series, times, quantiles, probs, mean):
    """Rows (time[, sequence]) and columns ``<col>_q05 ... <col>_mean``, data units."""
    import pandas as pd

    batch = mean.shape[0]
    frame = {"time": np.tile(times, batch)}
    if batch > 1:
        frame["sequence"] = np.repeat(np.arange(batch), len(times))
    for d, col in enumerate(series.columns):
        for q, p in enumerate(probs):
            frame[f"{col}_q{round(100 * p):02d}"] = quantiles[q, :, :, d].reshape(-1)
        frame[f"{col}_mean"] = mean[:, :, d].reshape(-1)
    return pd.DataFrame(frame)


def _quantile_dataset(series: Series, times, quantiles, probs, mean):
    """An xarray Dataset with ``<var>_quantile`` (quantile, time, *space) and ``<var>_mean``."""
    import xarray as xr

    grid = series.grid
    space = {d: grid.coords[d] for d in grid.dims}
    dims = ("time", *grid.dims)
    return xr.Dataset(
        {
            f"{grid.variable}_quantile": (("quantile", *dims), grid.unflatten(quantiles[:, 0])),
            f"{grid.variable}_mean": (dims, grid.unflatten(mean[0])),
        },
        coords={"quantile": np.asarray(probs), "time": times, **space},
        attrs={"source": series.source, **{f"data_{k}": v for k, v in grid.attrs.items()}},
    )


def _fan_chart(series: Series, times, draws, path: Path, max_columns: int = 4) -> None:
    """History (last 4 horizons) and the forecast's median, 50% and 90% bands, data units.

    Gridded data: the mean over the grid cells of the history and of each draw."""
    history = series.values[0]
    future = draws[:, 0]  # (S, H, D)
    names = list(series.columns)
    if series.grid is not None:
        history = np.nanmean(history, axis=-1, keepdims=True)
        future = future.mean(-1, keepdims=True)
        names = [f"mean of {series.grid.variable} over {len(series.columns)} cells"]
    dims = list(range(min(len(names), max_columns)))
    shown = min(len(history), 4 * future.shape[1])
    fig = Figure(figsize=(8.0, 2.5 * len(dims)), dpi=120, layout="constrained")
    axes = fig.subplots(len(dims), 1, squeeze=False)[:, 0]
    q05, q25, q50, q75, q95 = np.quantile(future, [0.05, 0.25, 0.5, 0.75, 0.95], axis=0)
    for ax, d in zip(axes, dims, strict=True):
        ax.plot(series.time[-shown:], history[-shown:, d], color="black", lw=1.0)
        ax.fill_between(times, q05[:, d], q95[:, d], color="tab:blue", alpha=0.2, lw=0)
        ax.fill_between(times, q25[:, d], q75[:, d], color="tab:blue", alpha=0.35, lw=0)
        ax.plot(times, q50[:, d], color="tab:blue", lw=1.2)
        ax.set_ylabel(names[d])
    axes[0].set_title("forecast beyond the data: median, 50% and 90% bands")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def _stamp(value) -> str:
    if np.issubdtype(np.asarray(value).dtype, np.datetime64):
        import pandas as pd

        return str(pd.Timestamp(value))
    return f"{float(value):g}"


def run_forecast(
    cfg: ForecastConfig, runs_dir="runs", name: str | None = None, overwrite: bool = False
) -> tuple[Path, dict]:
    """Train ``cfg.model`` on the series and forecast ``cfg.horizon`` steps past its end; write
    the run folder; return (folder, summary)."""
    device = resolve_device(cfg.device)
    series = load_series(
        cfg.path,
        cov.read_columns(cfg.columns, cfg.covariates),
        cfg.time_column,
        cfg.resample,
        cfg.fill_value,
        cfg.region,
    )
    n_targets, horizon_x = None, None
    if cfg.covariates:
        full, n_targets, end = _with_horizon_covariates(series, cfg)
        series = replace(full, values=full.values[:, :end], time=full.time[:end])
    scaler, x, x_train, x_val, val_start = _train_val(series, cfg)
    if cfg.covariates:
        horizon_x = scaler.transform(full.values[:, end:]).astype(np.float32)
        scaler = cov.target_scaler(scaler, n_targets)
        times_ahead = full.time[end:]
        series = replace(
            series, values=series.values[..., :n_targets], columns=series.columns[:n_targets]
        )
    label = cfg.path if cfg.path in BUILTIN_SERIES else Path(cfg.path).stem
    name = name or time.strftime(f"forecast-{label}-%Y%m%d-%H%M%S")
    final, run = stage_run_folder(runs_dir, name, overwrite)
    try:
        seed_everything(cfg.seed)
        options = training_options(
            cfg.model, cfg.epochs, cfg.members, cfg.latent_timescales, n_targets
        )
        model = build_model(cfg.model, x.shape[-1], device=device, **options)
        difference = resolve_difference(cfg, x_train, x_val)
        if difference["difference"]:
            model = Differenced(model)
        tic = time.perf_counter()
        history = model.fit(x_train, x_val, seed=cfg.seed, budget_s=cfg.budget_s)
        train_s = time.perf_counter() - tic
        context = torch.as_tensor(x[:, -cfg.context :], device=device)
        with torch.no_grad():
            if horizon_x is None:
                draws = model.forecast(context, cfg.horizon, cfg.num_samples)
            else:  # the targets of the horizon are NaN: only the covariates are given
                ahead = torch.as_tensor(horizon_x, device=device)
                draws = covariate_forecast(model, context, ahead, n_targets, cfg.num_samples)
        draws = scaler.inverse_transform(draws.detach().cpu().numpy().astype(np.float64))
        probs = tuple(sorted(cfg.quantiles))
        quantiles = np.quantile(draws, probs, axis=0)  # (Q, B, H, D)
        mean = draws.mean(0)
        times = series.future_times(cfg.horizon) if horizon_x is None else times_ahead
        if series.grid is not None:
            data = _quantile_dataset(series, times, quantiles, probs, mean)
            out = atomic_write(run / "forecast.nc", lambda p: data.to_netcdf(p, engine="h5netcdf"))
        else:
            table = _quantile_table(series, times, quantiles, probs, mean)
            out = atomic_write(run / "forecast.csv", lambda p: table.to_csv(p, index=False))
        _fan_chart(series, times, draws, run / "figures" / "forecast.png")
        summary = {
            "config": asdict(cfg),
            "source": series.source,
            "columns": list(series.columns),
            "covariates": list(full.columns[n_targets:]) if cfg.covariates else [],
            "difference": difference,
            "steps": int(series.values.shape[1]),
            "train_steps": val_start,
            "last_time": _stamp(series.time[-1]),
            "forecast_times": [_stamp(t) for t in times],
            "scaler": scaler.to_dict(),
            "train_s": train_s,
            "history": history,
            "output": out.name,
        }
        write_json(run / "forecast.json", summary)
    except BaseException:
        shutil.rmtree(run, ignore_errors=True)
        raise
    return publish_run_folder(run, final), summary


def format_forecast(summary: dict) -> str:
    """A few lines: what was forecast, from when, into which file."""
    cfg = summary["config"]
    cols = summary["columns"]
    return (
        f"{cfg['model']} trained {summary['train_s']:.1f} s on {summary['train_steps']} of "
        f"{summary['steps']} steps of {len(cols)} column(s) ({', '.join(cols[:4])}"
        f"{', ...' if len(cols) > 4 else ''}); forecast {cfg['horizon']} steps after "
        f"{summary['last_time']}: {summary['forecast_times'][0]} .. "
        f"{summary['forecast_times'][-1]} -> {summary['output']}, figures/forecast.png"
    )


def add_forecast_parser(commands, positive_int, positive_float, add_run_arguments) -> None:
    """Register ``forecast`` on the CLI's sub-command set."""
    parser = commands.add_parser(
        "forecast", help="train one model on a series and forecast beyond its end"
    )
    parser.add_argument(
        "path", help=f"a CSV/Parquet/NetCDF/.npy file or {', '.join(BUILTIN_SERIES)}"
    )
    add_run_arguments(parser, "forecast-<name>-<timestamp>")
    parser.add_argument(
        "--model", choices=MODEL_NAMES, default="alternator", help="model (default alternator)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and draws")
    parser.add_argument("--budget-s", type=positive_float, help="training seconds")
    parser.add_argument("--epochs", type=positive_int, help="epoch cap")
    add_alternator_arguments(parser, positive_int)
    parser.add_argument("--samples", type=positive_int, help="forecast draws (default 500)")
    from alternators_ppl.experiments.file_task import add_series_arguments

    add_series_arguments(parser, positive_int, split_at=False)


def forecast_command(args) -> tuple[str, Path]:
    """``alternators-ppl forecast PATH ...``"""
    if args.path not in BUILTIN_SERIES and not Path(args.path).exists():
        raise ValueError(
            f"{args.path!r} is neither a built-in series "
            f"({', '.join(BUILTIN_SERIES)}) nor an existing file"
        )
    overrides = series_options(args)
    overrides.update(model=args.model, seed=args.seed, device=args.device)
    fields = (("budget_s", "budget_s"), ("epochs", "epochs"), ("members", "members"),
              ("latent_timescales", "latent_timescales"), ("samples", "num_samples"))  # fmt: skip
    for key, field in fields:
        if getattr(args, key, None) is not None:
            overrides[field] = getattr(args, key)
    cfg = (
        ForecastConfig.quick(args.path, **overrides)
        if args.quick
        else ForecastConfig(args.path, **overrides)
    )
    run, summary = run_forecast(cfg, args.runs_dir, args.name, args.overwrite)
    return format_forecast(summary), run
