"""One-command comparison of sequence models on the same data, splits, metrics and seeds.

For each seed: one data set (train / validation / test trajectories); every model is built
fresh, trained under the same wall-time budget, and scored on the held-out trajectories:
per-horizon forecast CRPS, RMSE and 90% coverage, imputation of randomly missing steps, the
exact log predictive density of the forecast window where the model has an exact likelihood,
training time and sampling throughput. Results are aggregated as mean and sd over seeds.
"""

from __future__ import annotations

import shutil
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from alternators_ppl import distributed
from alternators_ppl.data.tasks import linear_gaussian_task, lorenz_forecasting_task
from alternators_ppl.evaluation import figures as plots
from alternators_ppl.evaluation.forecast_calibration import (
    calibration_report,
    coverage_warning,
    format_calibration,
)
from alternators_ppl.evaluation.scoring import (
    forecast_windows,
    hide_random_steps,
    score_forecast_draws,
    score_imputation,
)
from alternators_ppl.experiments.registry import (
    ALTERNATOR_MEMBERS,
    DEFAULT_MODELS,
    MODEL_NAMES,
    build_model,
    check_alternator_options,
    training_options,
)
from alternators_ppl.runs import (
    library_versions,
    publish_run_folder,
    resolve_device,
    stage_run_folder,
    write_json,
)
from alternators_ppl.seeding import seed_everything

__all__ = [
    "COMPARE_OPTIONS",
    "CompareConfig",
    "TASKS",
    "ModelFailed",
    "finite_draws",
    "aggregate_seeds",
    "score_models",
    "run_comparison",
    "format_comparison",
    "calibration_lines",
]

TASKS = {"lorenz": lorenz_forecasting_task, "linear": linear_gaussian_task}

#: the ``compare`` options that override a comparison config field of the same name (both
#: configs: simulated tasks and files)
COMPARE_OPTIONS = (
    "models", "seeds", "first_seed", "budget_s", "epochs", "members", "latent_timescales",
)  # fmt: skip


@dataclass(frozen=True)
class CompareConfig:
    """Settings of a comparison (defaults: a few minutes per seed on 2 CPU cores)."""

    task: str = "lorenz"
    models: tuple[str, ...] = DEFAULT_MODELS
    seeds: int = 3
    first_seed: int = 0  # seeds first_seed .. first_seed + seeds - 1
    device: str = "cpu"
    budget_s: float = 900.0  # a wall-clock safety cap; the training budget is ``epochs``
    epochs: int = 200
    members: int = ALTERNATOR_MEMBERS  # networks in the alternator's ensemble
    latent_timescales: str = "auto"  # the alternator's: auto, given or spread
    num_train: int = 64
    num_val: int = 16
    num_test: int = 32
    num_steps: int = 200
    context: int = 60
    horizon: int = 20
    num_samples: int = 200
    missing_fraction: float = 0.3
    throughput_draws: int = 100  # free-running draws of 1,000 steps timed per model

    def __post_init__(self):
        check_alternator_options(self.members, self.latent_timescales)
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {sorted(TASKS)}, got {self.task!r}")
        unknown = [m for m in self.models if m not in MODEL_NAMES]
        if unknown or not self.models:
            raise ValueError(f"models must be a non-empty subset of {MODEL_NAMES}, got {unknown}")
        if self.seeds < 1 or self.budget_s <= 0:
            raise ValueError(
                f"seeds must be >= 1 and budget_s > 0, got {self.seeds}, {self.budget_s}"
            )

    @classmethod
    def quick(cls, **overrides) -> CompareConfig:
        """Seconds-long smoke settings (tiny data, 2 epochs); the numbers mean nothing."""
        small = dict(
            seeds=1,
            epochs=2,
            members=1,
            latent_timescales="given",
            budget_s=60.0,
            num_train=8,
            num_val=4,
            num_test=4,
            num_steps=100,
            num_samples=20,
        )
        return replace(cls(), **{**small, **overrides})


def _log_predictive_density(model, past, future) -> float:
    """Mean exact log p(future | past) per entry, from log p(past, future) - log p(past)."""
    joint = model.log_likelihood(torch.cat([past, future], dim=1))
    return ((joint - model.log_likelihood(past)).mean() / future[0].numel()).item()


class ModelFailed(RuntimeError):
    """A model of the comparison could not be scored (the reason is the message)."""


def finite_draws(draws: torch.Tensor, what: str) -> torch.Tensor:
    """Draws (any shape) that may be scored: a non-finite draw fails the model (raises
    :class:`ModelFailed`), never becomes a number."""
    if not torch.isfinite(draws).all():
        bad = (~torch.isfinite(draws)).float().mean().item()
        raise ModelFailed(f"{what} draws are not finite ({bad:.1%} of entries)")
    return draws


def _evaluate(model, task, cfg: CompareConfig, seed: int, device) -> tuple[dict, torch.Tensor]:
    x_test = torch.as_tensor(task.x_test, device=device)
    tic = time.perf_counter()
    history = model.fit(task.x_train, task.x_val, seed=seed, budget_s=cfg.budget_s) or {}
    train_s = time.perf_counter() - tic
    past, future = forecast_windows(x_test, cfg.context, cfg.horizon, stride=cfg.horizon)
    draws = finite_draws(model.forecast(past, cfg.horizon, cfg.num_samples), "forecast")
    forecast = {k: v.tolist() for k, v in score_forecast_draws(draws, future).items()}
    calibration = calibration_report(draws, future)
    x_val = torch.as_tensor(task.x_val, device=device)
    val_past, val_future = forecast_windows(x_val, cfg.context, cfg.horizon, stride=cfg.horizon)
    val_draws = finite_draws(model.forecast(val_past, cfg.horizon, cfg.num_samples), "validation")
    validation = calibration_report(val_draws, val_future)
    gappy, mask = hide_random_steps(x_test, cfg.missing_fraction, seed + 1)
    filled = finite_draws(model.impute(gappy, None, cfg.num_samples), "imputation")
    imputation = score_imputation(filled, x_test, mask)
    tic = time.perf_counter()
    finite_draws(model.sample(cfg.throughput_draws, 1000), "free-running")
    sample_s = time.perf_counter() - tic
    result = {
        "crps": forecast["crps"],
        "rmse": forecast["rmse"],
        "coverage_90": forecast["coverage_90"],
        "coverage_50": calibration["coverage_50"],
        "spread_skill": calibration["spread_skill"],
        "pit_histogram": calibration["pit_histogram"],
        "pit_max_deviation": calibration["pit_max_deviation"],
        "validation_coverage_90": validation["coverage_90_mean"],
        "imputation_rmse": imputation["rmse"],
        "imputation_crps": imputation["crps"],
        "log_predictive_density": (
            _log_predictive_density(model, past, future)
            if model.has_exact_likelihood or model.has_likelihood_estimate
            else None
        ),
        "train_s": train_s,
        "epochs_run": history.get("epochs_run"),
        "steps": history.get("steps"),
        "chosen": history.get("chosen"),
        "sampling_steps_per_s": cfg.throughput_draws * 1000 / sample_s,
    }
    return result, draws[:, 0]


def score_models(models, data, seed: int, device, evaluate, options) -> dict:
    """One seed of a comparison: {model name: (result, extra)}.

    Each model is built fresh by :func:`build_model` (``options(name)`` for its constructor,
    ``data.x_train`` (B, T, D) for its size) after ``seed_everything(seed)``, then trained and
    scored by ``evaluate(model, data, seed, device) -> (result dict, extra)``. A model that
    fails (an ArithmeticError, ValueError or RuntimeError inside it, e.g. :class:`ModelFailed`
    for non-finite draws) gives ``({"failed": "Type: reason"}, None)``; the others still run.
    Both ``compare`` on simulated tasks and ``compare`` on a file use this loop."""
    out = {}
    for model_name in models:
        seed_everything(seed)
        try:
            model = build_model(
                model_name, data.x_train.shape[-1], device=device, **options(model_name)
            )
            out[model_name] = evaluate(model, data, seed, device)
        except (ArithmeticError, ValueError, RuntimeError) as error:
            reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            out[model_name] = ({"failed": reason[:300]}, None)
    return out


def aggregate_seeds(per_seed: list[dict]) -> dict:
    """Mean and sd over the seeds that ran of every metric (element-wise for per-horizon
    lists, None entries skipped; all None gives None); ``failed`` lists the reasons of the
    seeds that failed, ``seeds_ok`` counts the others. Records (dicts) are left out."""
    failed = [r["failed"] for r in per_seed if "failed" in r]
    per_seed = [r for r in per_seed if "failed" not in r]
    out = {"failed": failed, "seeds_ok": len(per_seed)}
    if not per_seed:
        return out
    for key, first in per_seed[0].items():
        values = [r[key] for r in per_seed]
        if isinstance(first, dict):  # a record (e.g. what a model chose), not a metric
            continue
        if all(v is None for v in values):
            out[key] = None
            continue
        listed = isinstance(first, list)
        columns = list(zip(*values, strict=True)) if listed else [values]
        mean, sd = [], []
        for column in columns:
            column = [v for v in column if v is not None]
            mean.append(statistics.fmean(column) if column else None)
            sd.append(statistics.stdev(column) if len(column) > 1 else (0.0 if column else None))
        out[key] = {"mean": mean if listed else mean[0], "sd": sd if listed else sd[0]}
    return out


def run_comparison(
    cfg: CompareConfig,
    runs_dir="runs",
    name: str | None = None,
    overwrite: bool = False,
    command: str | None = None,
) -> tuple[Path, dict]:
    """Run every model on every seed; write comparison.json, comparison.md and
    figures/forecasts.png into ``runs_dir/name``; return (folder, results).

    comparison.json records the config, the ``command`` that ran it, the library versions, and
    per model and seed the metrics with the epochs, optimiser steps and seconds of training.
    A model that fails on a seed is recorded with its reason; the others go on. Under a process
    group (``torchrun``) every rank trains data-parallel; rank 0 alone writes the run folder,
    and the other ranks return results None."""
    device = resolve_device(cfg.device)
    name = distributed.broadcast_object(name or time.strftime(f"compare-{cfg.task}-%Y%m%d-%H%M%S"))
    main = distributed.is_main_process()  # data-parallel: every rank trains, rank 0 writes
    try:
        final, run = stage_run_folder(runs_dir, name, overwrite) if main else (None, None)
    except BaseException as error:
        distributed.broadcast_object(error)  # the other ranks stop with the same error
        raise
    staged = distributed.broadcast_object(None)  # rank 0's staging error, if any
    if isinstance(staged, BaseException):
        raise staged
    try:
        raw = {m: [] for m in cfg.models}
        for seed in range(cfg.first_seed, cfg.first_seed + cfg.seeds):
            task = TASKS[cfg.task](
                num_train=cfg.num_train,
                num_val=cfg.num_val,
                num_test=cfg.num_test,
                num_steps=cfg.num_steps,
                seed=seed,
            )
            shown = {}
            outcome = score_models(
                cfg.models, task, seed, device,
                lambda m, t, s, d: _evaluate(m, t, cfg, s, d),
                lambda name: training_options(name, cfg.epochs, cfg.members, cfg.latent_timescales),
            )  # fmt: skip
            for model_name, (result, draws) in outcome.items():
                raw[model_name].append(result)
                if draws is not None:
                    shown[model_name] = draws
            if seed == cfg.first_seed and shown and main:  # no figure when every model failed
                past, future = forecast_windows(
                    torch.as_tensor(task.x_test), cfg.context, cfg.horizon, stride=cfg.horizon
                )
                plots.plot_forecast_comparison(
                    past[0],
                    future[0],
                    shown,
                    run / "figures" / "forecasts.png",
                    dt=task.dt,
                    units=plots.STANDARDISED,
                )
        results = {
            "config": asdict(cfg),
            "command": command,
            "versions": library_versions(),
            "horizon": list(range(1, cfg.horizon + 1)),
            "summary": {m: aggregate_seeds(raw[m]) for m in cfg.models},
            "per_seed": raw,
        }
        if not main:
            return Path(runs_dir) / name, None
        write_json(run / "comparison.json", results)
        (run / "comparison.md").write_text(format_comparison(results) + "\n")
    except BaseException:
        if run is not None:
            shutil.rmtree(run, ignore_errors=True)
        raise
    return publish_run_folder(run, final), results


def format_comparison(results: dict) -> str:
    """A Markdown table: mean +- sd over seeds for every model."""
    cfg = results["config"]

    def cell(entry, index=None, digits=3):
        if entry is None:
            return "-"
        mean, sd = entry["mean"], entry["sd"]
        if index == "avg":
            mean, sd = statistics.fmean(mean), statistics.fmean(sd)
        elif index is not None:
            mean, sd = mean[index], sd[index]
        return f"{mean:.{digits}f} ± {sd:.{digits}f}"

    horizons = [h for h in (1, 5, 10, 20) if h <= cfg["horizon"]]
    head = (
        ["model"]
        + [f"CRPS h={h}" for h in horizons]
        + [
            "CRPS mean",
            "RMSE mean",
            "cover90 mean",
            "imput. RMSE",
            "log pred. dens.",
            "train s",
            "samples/s",
        ]
    )
    lines = [
        f"Task `{cfg['task']}`, {cfg['seeds']} seed(s), {cfg['epochs']} epochs per model "
        f"(safety cap {cfg['budget_s']:.0f} s), "
        f"{cfg['num_test']} held-out trajectories; mean ± sd over seeds.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for model, s in results["summary"].items():
        if not s["seeds_ok"]:
            reason = s["failed"][0].replace("|", "/")
            lines.append(f"| {model} | failed on every seed: {reason} |")
            continue
        row = [model] + [cell(s["crps"], h - 1) for h in horizons]
        row += [
            cell(s["crps"], "avg"),
            cell(s["rmse"], "avg"),
            cell(s["coverage_90"], "avg"),
            cell(s["imputation_rmse"]),
            cell(s["log_predictive_density"]),
            cell(s["train_s"], digits=1),
            f"{s['sampling_steps_per_s']['mean']:.3g}",
        ]
        lines.append("| " + " | ".join(row) + " |")
    lines += calibration_lines(
        results["summary"], "Calibration on the held-out trajectories (means over seeds):"
    )
    return "\n".join(lines)


def calibration_lines(summary: dict, heading: str) -> list[str]:
    """The calibration part of a comparison table: ``heading``, each scored model's
    calibration report (means over seeds; horizons without a value are skipped), and a line
    per model that failed on some seeds."""
    lines = ["", heading, ""]

    def avg(values):
        values = [v for v in values if v is not None]
        return statistics.fmean(values) if values else float("nan")

    for model, s in summary.items():
        if not s["seeds_ok"] or "coverage_50" not in s or "spread_skill" not in s:
            continue
        report = {
            "coverage_50": s["coverage_50"]["mean"],
            "coverage_90": s["coverage_90"]["mean"],
            "spread_skill": s["spread_skill"]["mean"],
            "pit_histogram": s["pit_histogram"]["mean"],
            "pit_max_deviation": s["pit_max_deviation"]["mean"],
            "coverage_50_mean": avg(s["coverage_50"]["mean"]),
            "coverage_90_mean": avg(s["coverage_90"]["mean"]),
            "spread_skill_mean": avg(s["spread_skill"]["mean"]),
            "warning": coverage_warning(s["validation_coverage_90"]["mean"]),
        }
        lines += [format_calibration(model, report), ""]
    while lines and not lines[-1]:
        lines.pop()
    for model, s in summary.items():
        if s["failed"] and s["seeds_ok"]:
            lines.append(f"\n{model} failed on {len(s['failed'])} seed(s): {s['failed'][0]}")
    return lines
