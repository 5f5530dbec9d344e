"""``compare`` on a user's own series (a file) or a built-in real series (``nino``).

The series is read (:mod:`alternators_ppl.data.readers`), split in time (70/15/15 by default),
standardised on the train span only, and cut into training windows of context + horizon. Every
model is trained on the train windows (validation windows for model selection) under the same
budget and seed, then scored on the forecast problems whose future lies in the test span:
per-horizon CRPS, RMSE and 90% coverage in standardised and in data units (missing truth is
never scored), and imputation of randomly hidden test steps. Results go to a run folder
(comparison.json, comparison.md, figures/forecasts.png) that is never overwritten by accident.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from alternators_ppl.data import real
from alternators_ppl.data.covariates import with_covariates
from alternators_ppl.data.readers import NETCDF_SUFFIXES, read_series
from alternators_ppl.data.splits import SplitSeries, split_series
from alternators_ppl.evaluation import figures as plots
from alternators_ppl.evaluation.forecast_calibration import (
    calibration_report,
)
from alternators_ppl.evaluation.masked_scoring import (
    covariate_forecast,
    score_masked_forecast,
    score_masked_imputation,
)
from alternators_ppl.evaluation.scoring import hide_random_steps
from alternators_ppl.experiments import covariates as cov
from alternators_ppl.experiments.compare import (
    COMPARE_OPTIONS,
    aggregate_seeds,
    calibration_lines,
    finite_draws,
    score_models,
)
from alternators_ppl.experiments.registry import (
    ALTERNATOR_MEMBERS,
    ALTERNATOR_VARIANTS,
    MODEL_NAMES,
    check_alternator_options,
    training_options,
)
from alternators_ppl.models.differenced import Differenced
from alternators_ppl.models.naive import Climatology
from alternators_ppl.runs import (
    library_versions,
    publish_run_folder,
    resolve_device,
    stage_run_folder,
    write_json,
)

__all__ = [
    "BUILTIN_SERIES",
    "FILE_MODELS",
    "FileCompareConfig",
    "load_series",
    "load_split",
    "run_file_comparison",
    "format_file_comparison",
    "add_series_arguments",
    "series_options",
    "compare_file_command",
    "check_difference",
    "resolve_difference",
    "reject_series_options",
]


def _one_line_errors(load):
    """``load`` whose ImportError (the ``[data]`` extra missing) is a one-line ValueError."""

    def loaded():
        try:
            return load()
        except ImportError as error:
            raise ValueError(str(error)) from None

    return loaded


#: what a file comparison runs unless told otherwise: every model but the Alternator variants
FILE_MODELS = tuple(m for m in MODEL_NAMES if m not in ALTERNATOR_VARIANTS)

#: real series that ship with the ``[data]`` extra, by CLI name
BUILTIN_SERIES = {
    "nino": _one_line_errors(lambda: real.nino_series("anomaly")),
    "sunspots": _one_line_errors(real.sunspots_series),
    "co2": _one_line_errors(real.co2_series),
}


@dataclass(frozen=True)
class FileCompareConfig:
    """Settings of a comparison on one series (a file path or a name in ``BUILTIN_SERIES``).

    ``split_at`` is ``(val_start, test_start)`` (step indices or dates) or None for the
    70/15/15 ``fractions``; ``stride`` spaces training windows, ``eval_stride`` test origins.
    ``covariates`` names known inputs (file columns or calendar features such as ``month``;
    :mod:`alternators_ppl.data.covariates`): they join x, are given over the horizon, and
    only the targets are scored. ``difference`` (True, False or ``"auto"``, the default:
    :func:`resolve_difference`) trains every model on the increments of the series and scores
    its forecasts and imputations in levels
    (:class:`~alternators_ppl.models.differenced.Differenced`), for series with a trend.
    """

    path: str
    columns: tuple[str, ...] | None = None
    time_column: str | None = None
    resample: str | None = None
    fill_value: float | None = None
    region: tuple | None = None
    split_at: tuple | None = None
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    context: int = 24
    horizon: int = 12
    stride: int = 1
    eval_stride: int = 1
    models: tuple[str, ...] = FILE_MODELS
    seeds: int = 3
    first_seed: int = 0  # seeds first_seed .. first_seed + seeds - 1
    device: str = "cpu"
    budget_s: float = 60.0
    epochs: int = 200
    members: int = ALTERNATOR_MEMBERS  # networks in the alternator's ensemble
    latent_timescales: str = "auto"  # the alternator's: auto, given or spread
    num_samples: int = 200
    missing_fraction: float = 0.3
    covariates: tuple[str, ...] | None = None
    difference: bool | str = "auto"

    def __post_init__(self):
        check_difference(self)
        check_alternator_options(self.members, self.latent_timescales)
        unknown = [m for m in self.models if m not in MODEL_NAMES]
        if unknown or not self.models:
            raise ValueError(f"models must be a non-empty subset of {MODEL_NAMES}, got {unknown}")
        if self.seeds < 1 or self.budget_s <= 0 or self.num_samples < 2:
            raise ValueError(
                f"seeds must be >= 1, budget_s > 0 and num_samples >= 2, got {self.seeds}, "
                f"{self.budget_s}, {self.num_samples}"
            )

    @classmethod
    def quick(cls, path: str, **overrides) -> FileCompareConfig:
        """Seconds-long smoke settings (1 seed, 2 epochs, one network, 20 draws); the numbers
        mean nothing."""
        small = dict(
            seeds=1, epochs=2, members=1, latent_timescales="given", budget_s=5.0, num_samples=20
        )
        return replace(cls(path), **{**small, **overrides})


def load_series(
    path: str, columns=None, time_column=None, resample=None, fill_value=None, region=None
):
    """A built-in series by name (``columns`` picks among its columns) or a file; ``region``
    is ``((dim, start, stop), ...)`` positions of a NetCDF variable's space dims."""
    if path in BUILTIN_SERIES and not Path(path).exists():
        series = BUILTIN_SERIES[path]()
        if columns:
            unknown = [c for c in columns if c not in series.columns]
            if unknown:
                raise ValueError(
                    f"unknown column {unknown[0]!r}; {path} has {', '.join(series.columns)}"
                )
            picked = [series.columns.index(c) for c in columns]
            series = replace(series, values=series.values[..., picked], columns=tuple(columns))
        return series
    if region is not None and Path(path).suffix.lower() not in NETCDF_SUFFIXES:
        raise ValueError(f"region applies to NetCDF files only, not to {Path(path).name!r}")
    cut = None if region is None else {d: slice(a, b) for d, a, b in region}
    return read_series(path, columns, time_column, resample, fill_value, cut)


def load_split(cfg) -> SplitSeries:
    """Read ``cfg.path`` and split it as ``cfg`` says (see :func:`split_series`)."""
    columns = cov.read_columns(cfg.columns, getattr(cfg, "covariates", None))
    series = load_series(
        cfg.path, columns, cfg.time_column, cfg.resample, cfg.fill_value, cfg.region
    )
    if getattr(cfg, "covariates", None):
        series = with_covariates(series, cfg.covariates, cfg.columns)[0]
    return split_series(series, cfg.context, cfg.horizon, cfg.fractions, cfg.split_at, cfg.stride)


def _forecast(model, past, future, cfg, n_targets: int):
    """Forecast draws of the targets (S, N, H, n_targets) and the targets' truth: plain
    forecasts, or with covariates the masked imputation given them (only their future)."""
    with torch.no_grad():
        if n_targets == past.shape[-1]:
            return model.forecast(past, cfg.horizon, cfg.num_samples), future
        draws = covariate_forecast(model, past, future, n_targets, cfg.num_samples)
    return draws, future[..., :n_targets]


def check_difference(cfg) -> None:
    """``difference`` is True, False or "auto", and True is not combined with covariates
    (their increments are not known inputs)."""
    if not (cfg.difference is True or cfg.difference is False or cfg.difference == "auto"):
        raise ValueError(f"difference must be True, False or 'auto', got {cfg.difference!r}")
    if cfg.difference is True and cfg.covariates:
        raise ValueError("difference cannot be combined with covariates")


#: "auto" takes the increments when their climatology's validation CRPS is below this share of
#: the levels' (a trend leaves the levels' climatology useless: 0.06 on co2; a stationary
#: series whose validation span drifts a little gives shares near 1: 0.91 on nino, where the
#: models of the increments were worse than those of the levels, Kalman filter included)
AUTO_DIFFERENCE_SHARE = 0.5


def resolve_difference(cfg, x_train, x_val, draws: int = 100) -> dict:
    """Whether the models see the increments: ``cfg.difference`` when True or False (False
    with covariates); for ``"auto"`` two climatologies fitted on x_train (B, T, D), one of the
    levels and one of the increments summed from the last level of the context (a random walk
    with drift), forecast the last ``cfg.horizon`` steps of the validation windows x_val
    (B, cfg.context + cfg.horizon, D) from the steps before (``draws`` draws, seed 0), and the
    increments are taken when their CRPS is below :data:`AUTO_DIFFERENCE_SHARE` times the
    levels'. Needs no training. Returns {"mode", "difference", "validation_crps"
    ({"levels", "increments"} or None)}."""
    mode = cfg.difference
    if mode != "auto" or cfg.covariates or x_val is None:
        return {"mode": mode, "difference": mode is True, "validation_crps": None}
    x_train, x_val = torch.as_tensor(x_train), torch.as_tensor(x_val)
    context, future = x_val[:, : cfg.context], x_val[:, cfg.context :]
    crps = {}
    for name, model in (("levels", Climatology()), ("increments", Differenced(Climatology()))):
        model.fit(x_train)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            sample = model.forecast(context, future.shape[1], draws)
        crps[name] = float(np.mean(score_masked_forecast(sample.to(future), future)["crps"]))
    return {
        "mode": mode,
        "difference": crps["increments"] < AUTO_DIFFERENCE_SHARE * crps["levels"],
        "validation_crps": crps,
    }


def _evaluate(model, split: SplitSeries, cfg: FileCompareConfig, seed: int, device):
    if cfg.difference is True:
        model = Differenced(model)
    past, future, _ = split.test_problems(cfg.eval_stride)
    n_t = cov.target_count(split.series.columns, getattr(cfg, "covariates", None))
    past_t = torch.as_tensor(past, device=device)
    future_t = torch.as_tensor(future, device=device)
    tic = time.perf_counter()
    history = model.fit(split.x_train, split.x_val, seed=seed, budget_s=cfg.budget_s) or {}
    train_s = time.perf_counter() - tic
    draws, future_t = _forecast(model, past_t, future_t, cfg, n_t)
    draws = finite_draws(draws, "forecast")
    std = score_masked_forecast(draws, future_t)
    calibration = calibration_report(draws, future_t)
    val_t = torch.as_tensor(split.x_val, device=device)
    val_draws, val_future = _forecast(
        model, val_t[:, : cfg.context], val_t[:, cfg.context :], cfg, n_t
    )
    validation = calibration_report(finite_draws(val_draws, "validation"), val_future)
    data = score_masked_forecast(draws, future_t, split.scaler.scale[:n_t], split.scaler.mean[:n_t])
    test = torch.as_tensor(split.x[:, split.test_start :], device=device)
    gappy, kept = hide_random_steps(test, cfg.missing_fraction, seed + 1)
    with torch.no_grad():
        filled = finite_draws(model.impute(gappy, None, cfg.num_samples), "imputation")
    imputation = score_masked_imputation(filled[..., :n_t], test[..., :n_t], ~kept)
    result = {
        "crps": std["crps"],
        "rmse": std["rmse"],
        "coverage_90": std["coverage_90"],
        "coverage_50": std["coverage_50"],
        "width_90": std["width_90"],
        "spread_skill": calibration["spread_skill"],
        "pit_histogram": calibration["pit_histogram"],
        "pit_max_deviation": calibration["pit_max_deviation"],
        "validation_coverage_90": validation["coverage_90_mean"],
        "crps_data": data["crps"],
        "rmse_data": data["rmse"],
        "imputation_rmse": imputation["rmse"],
        "imputation_crps": imputation["crps"],
        "imputation_coverage_90": imputation["coverage_90"],
        "train_s": train_s,
        "epochs_run": history.get("epochs_run"),
        "steps": history.get("steps"),
        "chosen": history.get("chosen"),
    }
    return result, (draws, std["observed"])


def _time_text(series, index: int) -> str:
    value = series.time[index]
    if np.issubdtype(np.asarray(value).dtype, np.datetime64):
        return str(
            np.datetime_as_string(
                value, unit="D" if series.freq in ("D", "MS", "ME", "M", "YS", "YE", "W") else "s"
            )
        )
    return f"{float(value):g}"


def _spans(split: SplitSeries) -> dict:
    s, steps = split.series, split.x.shape[1]
    bounds = {
        "train": (0, split.val_start),
        "validation": (split.val_start, split.test_start),
        "test": (split.test_start, steps),
    }
    return {
        name: {"steps": b - a, "first": _time_text(s, a), "last": _time_text(s, b - 1)}
        for name, (a, b) in bounds.items()
    }


def run_file_comparison(
    cfg: FileCompareConfig,
    runs_dir="runs",
    name: str | None = None,
    overwrite: bool = False,
    command: str | None = None,
) -> tuple[Path, dict]:
    """Run every model on the series for every seed; write comparison.json, comparison.md and
    figures/forecasts.png (data units) into ``runs_dir/name``; return (folder, results).

    The per-seed loop is compare's (:func:`~alternators_ppl.experiments.compare.score_models`):
    a model that fails on a seed is recorded with its reason and the others go on.
    comparison.json records the config, the ``command``, the library versions, and per model
    and seed the metrics with the epochs, optimiser steps and seconds of training."""
    device = resolve_device(cfg.device)
    split = load_split(cfg)
    difference = resolve_difference(cfg, split.x_train, split.x_val)
    chosen = replace(cfg, difference=difference["difference"])
    label = Path(cfg.path).stem if cfg.path not in BUILTIN_SERIES else cfg.path
    name = name or time.strftime(f"compare-{label}-%Y%m%d-%H%M%S")
    final, run = stage_run_folder(runs_dir, name, overwrite)
    try:
        raw, observed = {m: [] for m in cfg.models}, None
        past, future, origins = split.test_problems(cfg.eval_stride)
        n_t = cov.target_count(split.series.columns, cfg.covariates)
        scaler = cov.target_scaler(split.scaler, n_t)
        past, future = past[..., :n_t], future[..., :n_t]
        shown = {}
        for seed in range(cfg.first_seed, cfg.first_seed + cfg.seeds):
            outcome = score_models(
                cfg.models, split, seed, device,
                lambda m, data, s, d: _evaluate(m, data, chosen, s, d),
                lambda model_name: training_options(
                    model_name, cfg.epochs, cfg.members, cfg.latent_timescales,
                    n_t if cfg.covariates else None,
                ),
            )  # fmt: skip
            for model_name, (result, extra) in outcome.items():
                raw[model_name].append(result)
                if extra is None:
                    continue
                draws, observed = extra
                if seed == cfg.first_seed:
                    shown[model_name] = scaler.inverse_transform(
                        draws[:, -1].detach().cpu().numpy().astype(np.float64)
                    )
        unscale = scaler.inverse_transform
        if shown:  # no figure when every model failed
            plots.plot_forecast_comparison(
                unscale(past[-1].astype(np.float64)),
                unscale(future[-1].astype(np.float64)),
                shown,
                run / "figures" / "forecasts.png",
            )
        results = {
            "config": {**asdict(cfg), "task": label},
            "command": command,
            "versions": library_versions(),
            "source": split.series.source,
            "columns": list(split.series.columns[:n_t]),
            "covariates": list(split.series.columns[n_t:]),
            "scaler": split.scaler.to_dict(),
            "spans": _spans(split),
            "difference": difference,
            "test_problems": len(past),
            "first_origin": _time_text(split.series, int(origins[0])),
            "observed_per_horizon": observed,
            "horizon": list(range(1, cfg.horizon + 1)),
            "summary": {m: aggregate_seeds(raw[m]) for m in cfg.models},
            "per_seed": raw,
        }
        write_json(run / "comparison.json", results)
        (run / "comparison.md").write_text(format_file_comparison(results) + "\n")
    except BaseException:
        shutil.rmtree(run, ignore_errors=True)
        raise
    return publish_run_folder(run, final), results


def format_file_comparison(results: dict) -> str:
    """A Markdown table: mean ± sd over seeds per model; CRPS at a few leads, averages in
    standardised and data units, imputation."""
    cfg = results["config"]

    def cell(entry, index=None, digits=3):
        mean, sd = entry["mean"], entry["sd"]
        if index == "avg":
            mean = statistics.fmean(v for v in mean if v is not None)
            sd = statistics.fmean(v for v in sd if v is not None)
        elif index is not None:
            mean, sd = mean[index], sd[index]
        return "-" if mean is None else f"{mean:.{digits}f} ± {sd:.{digits}f}"

    leads = sorted({h for h in (1, 3, 6, 12, 24) if h <= cfg["horizon"]} | {cfg["horizon"]})
    head = (
        ["model"]
        + [f"CRPS h={h}" for h in leads]
        + [
            "CRPS mean",
            "RMSE mean",
            "cover90 mean",
            "CRPS (data)",
            "RMSE (data)",
            "imput. RMSE",
            "train s",
        ]
    )
    spans = results["spans"]
    lines = [
        f"Series `{cfg['task']}` ({', '.join(results['columns'][:6])}"
        f"{', ...' if len(results['columns']) > 6 else ''}), {cfg['seeds']} seed(s), budget "
        f"{cfg['budget_s']:.0f} s per model; test span {spans['test']['first']} to "
        f"{spans['test']['last']} ({results['test_problems']} forecast problems, context "
        f"{cfg['context']}, horizon {cfg['horizon']}); standardised units unless marked data; "
        "mean ± sd over seeds."
        + (
            f" Covariates (given over the horizon, read one step ahead, not scored): "
            f"{', '.join(results['covariates'])}."
            if results.get("covariates")
            else ""
        )
        + (
            " Models trained on the increments, scored in levels (difference: "
            f"{results['difference']['mode']})."
            if results.get("difference", {}).get("difference")
            else ""
        ),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for model, s in results["summary"].items():
        if not s["seeds_ok"]:
            reason = s["failed"][0].replace("|", "/")
            lines.append(f"| {model} | failed on every seed: {reason} |")
            continue
        row = [model] + [cell(s["crps"], h - 1) for h in leads]
        row += [
            cell(s["crps"], "avg"),
            cell(s["rmse"], "avg"),
            cell(s["coverage_90"], "avg"),
            cell(s["crps_data"], "avg"),
            cell(s["rmse_data"], "avg"),
            cell(s["imputation_rmse"]),
            cell(s["train_s"], digits=1),
        ]
        lines.append("| " + " | ".join(row) + " |")
    lines += calibration_lines(
        results["summary"], "Calibration on the test problems (means over seeds):"
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------- CLI plumbing


def _column_list(text: str) -> tuple[str, ...]:
    names = tuple(c.strip() for c in text.split(",") if c.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"must name at least one column, got {text!r}")
    return names


def _region(text: str) -> tuple:
    out = []
    for part in text.split(","):
        dim, _, span = part.partition("=")
        start, _, stop = span.partition(":")
        if not (dim.strip() and start.strip().isdigit() and stop.strip().isdigit()):
            raise argparse.ArgumentTypeError(f"must be DIM=START:STOP,..., got {text!r}")
        out.append((dim.strip(), int(start), int(stop)))
    return tuple(out)


def _split_at(text: str) -> tuple:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2 or not all(parts):
        raise argparse.ArgumentTypeError(
            f"must be VAL_START,TEST_START (step indices or dates), got {text!r}"
        )
    return tuple(int(p) if p.lstrip("-").isdigit() else p for p in parts)


def add_series_arguments(
    parser: argparse.ArgumentParser, positive_int, split_at: bool = True
) -> None:
    """The options that say how to read and split a series (compare and forecast share them;
    ``split_at`` adds ``--split-at``)."""
    parser.add_argument(
        "--columns",
        type=_column_list,
        help="value columns A,B (NetCDF: the variable); default every numeric one",
    )
    parser.add_argument("--time-column", help="time column (default: time/date/... if present)")
    parser.add_argument("--resample", help="put irregular stamps on a grid, e.g. D, MS or 0.5")
    parser.add_argument("--fill-value", type=float, help="a number that marks missing values")
    parser.add_argument(
        "--region", type=_region, help="NetCDF cells by position, e.g. lat=0:6,lon=100:110"
    )
    parser.add_argument("--context", type=positive_int, help="context steps (default 24)")
    parser.add_argument("--horizon", type=positive_int, help="forecast steps (default 12)")
    parser.add_argument("--stride", type=positive_int, help="step between training windows")
    parser.add_argument(
        "--covariates",
        type=_column_list,
        help="known inputs C,D: file columns and/or calendar features (month, weekday, hour), "
        "given over the horizon and not scored",
    )
    parser.add_argument(
        "--difference",
        choices=("auto", "on", "off"),
        help="train on the increments x_t - x_(t-1) and forecast levels: on, off, or auto "
        "(default: on when the increments' climatology forecasts the validation windows with "
        "less than half the CRPS of the levels', as on a series with a trend)",
    )
    if split_at:
        parser.add_argument(
            "--split-at",
            type=_split_at,
            help="VAL_START,TEST_START as step indices or dates (default 70/15/15 split)",
        )


def series_options(
    args,
    keys=(
        "columns",
        "time_column",
        "resample",
        "fill_value",
        "region",
        "context",
        "horizon",
        "stride",
        "covariates",
        "difference",
    ),
) -> dict:
    """The series options the user gave (None ones left to the config's defaults)."""
    given = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    if "difference" in given:
        given["difference"] = {"on": True, "off": False}.get(given["difference"], "auto")
    return given


def reject_series_options(args) -> None:
    """A built-in simulated task (lorenz, linear) takes none of the series options."""
    given = [f"--{k.replace('_', '-')}" for k in series_options(args)]
    if given:
        raise ValueError(
            f"{', '.join(given)} apply to a file or a real series, not to the "
            f"simulated task {args.task!r}"
        )


def compare_file_command(args) -> tuple[str, Path]:
    """``alternators-ppl compare PATH ...`` for a file or a built-in real series."""
    if args.task not in BUILTIN_SERIES and not Path(args.task).exists():
        raise ValueError(
            f"task {args.task!r} is neither a built-in task (lorenz, linear, "
            f"{', '.join(BUILTIN_SERIES)}) nor an existing file"
        )
    overrides = series_options(args)
    overrides["device"] = args.device
    for key in COMPARE_OPTIONS:
        if getattr(args, key, None) is not None:
            overrides[key] = getattr(args, key)
    if getattr(args, "split_at", None) is not None:
        overrides["split_at"] = args.split_at
    cfg = (
        FileCompareConfig.quick(args.task, **overrides)
        if args.quick
        else FileCompareConfig(args.task, **overrides)
    )
    argv = getattr(args, "argv", None)
    command = None if argv is None else " ".join(["alternators-ppl", *argv])
    run, results = run_file_comparison(cfg, args.runs_dir, args.name, args.overwrite, command)
    return format_file_comparison(results), run
