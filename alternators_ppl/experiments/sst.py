"""``alternators-ppl sst``: sea-surface temperature forecasting on the OSTIA monthly field.

Tiles of ``tile x tile`` cells of the equatorial band (5S-5N) with enough ocean are the
sequences; land cells are missing (NaN) and so masked out of the likelihood and of every score.
The 54 months are split in time (70/15/15: train Apr 2006 - May 2009, validation to Jan 2010,
test to Sep 2010), standardised per cell position (pooled over tiles) on train only. Forecast
problems start in the test span (context ``context`` months, leads 1..``horizon``). Models: an
Alternator with a convolutional OTN/FTN (:mod:`alternators_ppl.grid_networks`), persistence,
a monthly climatology (per cell and calendar month, from train) and a Kalman filter on PCA
components of the field. Scores per lead
in kelvin: CRPS, RMSE of the mean, spread-skill ratio, 90% coverage. Maps of truth, forecast
mean, spread and error; time and peak memory.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from alternators_ppl import distributed
from alternators_ppl.data.readers import Series
from alternators_ppl.data.splits import split_series
from alternators_ppl.evaluation.masked_scoring import score_masked_forecast
from alternators_ppl.evaluation.spread_recalibration import fit_validation_spread, scale_spread
from alternators_ppl.experiments.registry import (
    LATENT_TIMESCALES,
    KalmanModel,
    check_latent_timescales,
    keep_better_timescales,
    spread_sigma_z,
)
from alternators_ppl.grid_networks import GridDecoder, GridEncoder
from alternators_ppl.inference.training import fit
from alternators_ppl.models.alternator import Alternator
from alternators_ppl.runs import publish_run_folder, resolve_device, stage_run_folder, write_json
from alternators_ppl.seeding import seed_everything

__all__ = [
    "SSTConfig",
    "ostia_tile_series",
    "monthly_climatology_draws",
    "pca_kalman_draws",
    "spread_skill",
    "run_sst",
    "format_sst",
    "add_sst_parser",
    "sst_command",
]

MODELS = ("alternator-conv", "kalman-pca", "climatology-monthly", "persistence")


@dataclass(frozen=True)
class SSTConfig:
    """Settings of ``sst`` (defaults: a few minutes on one CPU thread)."""

    tile: int = 18
    min_ocean: float = 0.95
    max_tiles: int | None = None
    context: int = 6
    horizon: int = 3
    latent_dim: int = 16
    channels: tuple[int, ...] = (16, 32)
    epochs: int = 300
    budget_s: float = 120.0
    batch_size: int = 32
    lr: float = 3e-3
    num_samples: int = 100
    pca_components: int = 8
    seeds: int = 1
    first_seed: int = 0  # seeds first_seed .. first_seed + seeds - 1
    device: str = "cpu"
    calibrate: bool = True  # select the noise scales on validation (fit's calibrate="auto")
    latent_timescales: str = "auto"  # auto (chosen on validation), given or spread
    recalibrate_spread: bool = True  # the forecast spread per lead, fitted on validation

    def __post_init__(self):
        check_latent_timescales(self.latent_timescales)
        if isinstance(self.first_seed, bool) or not isinstance(self.first_seed, int):
            raise ValueError(f"first_seed must be an int, got {self.first_seed!r}")

    @classmethod
    def quick(cls, **overrides) -> SSTConfig:
        """Seconds-long smoke settings (3 tiles, 2 epochs, 20 draws, no noise calibration);
        the numbers mean nothing."""
        small = dict(
            max_tiles=3, epochs=2, budget_s=10.0, num_samples=20, pca_components=4,
            calibrate=False, latent_timescales="given",
        )  # fmt: skip
        return replace(cls(), **{**small, **overrides})


def ostia_tile_series(tile: int = 18, min_ocean: float = 0.95, max_tiles=None) -> Series:
    """OSTIA tiles as a :class:`Series` (B tiles, 54 months, tile * tile cells), kelvin, NaN
    on land; columns are ``r<row>c<col>`` of the tile."""
    from alternators_ppl.data.real import ocean_tiles, ostia_series

    try:
        full = ostia_series()
    except ImportError as error:  # the [data] extra is missing: a one-line CLI error
        raise ValueError(str(error)) from None
    field = full.grid.unflatten(full.values[0])  # (T, 18, 432)
    if tile > field.shape[1]:
        raise ValueError(f"tile must be <= {field.shape[1]} (the band's latitudes), got {tile}")
    starts = ocean_tiles(tile, min_ocean)[:max_tiles]
    if not starts:
        raise ValueError(f"no {tile}-wide tile has {min_ocean:.0%} ocean")
    values = np.stack([field[:, :tile, s : s + tile].reshape(len(field), -1) for s in starts])
    columns = tuple(f"r{i}c{j}" for i in range(tile) for j in range(tile))
    return Series(
        values,
        full.time,
        columns,
        full.freq,
        None,
        None,
        f"OSTIA monthly SST, tiles at longitude index {starts}",
    )


def monthly_climatology_draws(x, months, train_stop, target_months, num_samples, generator):
    """Draws (S, N, H, D) of a per-(sequence, cell, calendar month) Gaussian climatology.

    x (B, T, D) standardised (NaN missing); months (T,) calendar months 1..12; train_stop: the
    first step not used; target_months (N, H); problem n belongs to sequence ``n % B``.
    Mean: the train mean of that calendar month (the cell's train mean where a month is absent);
    spread: the cell's train std of the departures from those means.
    """
    train, m = x[:, :train_stop].astype(np.float64), months[:train_stop]

    def nanmean(a, axis):  # 0 where nothing is observed (land), without warnings
        seen = ~np.isnan(a)
        return np.where(seen, a, 0.0).sum(axis) / np.maximum(seen.sum(axis), 1)

    overall = nanmean(train, 1)  # (B, D)
    means = np.stack(
        [nanmean(train[:, m == k], 1) if (m == k).any() else overall for k in range(1, 13)],
        axis=1,
    )  # (B, 12, D)
    std = np.sqrt(nanmean((train - means[:, m - 1]) ** 2, 1))  # (B, D)
    std = np.where(std > 0, std, 1.0)
    seq = np.arange(target_months.shape[0]) % x.shape[0]
    loc = means[seq[:, None], target_months - 1]  # (N, H, D)
    scale = std[seq][:, None]
    noise = torch.randn((num_samples, *loc.shape), generator=generator, dtype=torch.float64)
    return torch.as_tensor(loc) + torch.as_tensor(scale) * noise


def pca_kalman_draws(
    x_train, x_val, past, horizon, num_samples, components, seed, budget_s, em_iters=50, device=None
):
    """Kalman filter on the leading PCA components of the field: draws (S, N, H, D).

    PCA of the train windows' frames (missing entries as 0 in standardised units); a linear-
    Gaussian SSM with ``components`` states is fitted by EM on the component series; its
    forecasts are mapped back and get independent residual noise per cell (train residual std).
    """
    frames = np.nan_to_num(x_train.reshape(-1, x_train.shape[-1]).astype(np.float64))
    _, _, vt = np.linalg.svd(frames, full_matrices=False)
    basis = vt[:components].T  # (D, k)
    resid = np.sqrt(np.mean((frames - frames @ basis @ basis.T) ** 2, axis=0))

    def project(x):
        return (np.nan_to_num(x) @ basis).astype(np.float32)

    model = KalmanModel(components, latent_dim=components, em_iters=em_iters, device=device)
    model.fit(project(x_train), project(x_val), seed=seed, budget_s=budget_s)
    with torch.no_grad():
        pcs = model.forecast(torch.as_tensor(project(past), device=device), horizon, num_samples)
    draws = pcs.double().cpu() @ torch.as_tensor(basis.T)
    noise = torch.randn(
        draws.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    return draws + torch.as_tensor(resid) * noise


def persistence_draws(past, horizon: int, num_samples: int) -> torch.Tensor:
    """The last observed value of each entry of past (N, C, D), repeated: (S, N, H, D).
    Entries never observed in the context (land) get 0; they are never scored."""
    seen = ~np.isnan(past)
    last = np.where(seen.any(1), past.shape[1] - 1 - np.argmax(seen[:, ::-1], axis=1), 0)
    value = np.take_along_axis(np.nan_to_num(past), last[:, None], axis=1)  # (N, 1, D)
    value = torch.as_tensor(value, dtype=torch.float64)
    return value.expand(num_samples, -1, horizon, -1).clone()


def spread_skill(samples, future) -> list:
    """Per-lead ratio of ensemble spread sqrt(mean var) to the RMSE of the ensemble mean,
    over observed entries of ``future`` (N, H, D); samples (S, N, H, D). 1 is calibrated."""
    observed = torch.isfinite(future)
    weight = observed.double()
    var = samples.double().var(0)
    err = (samples.double().mean(0) - torch.nan_to_num(future.double())) ** 2
    spread = ((var * weight).sum((0, 2)) / weight.sum((0, 2))).sqrt()
    skill = ((err * weight).sum((0, 2)) / weight.sum((0, 2))).sqrt()
    return (spread / skill).tolist()


def _conv_alternator(cfg: SSTConfig, device, timescales: str = "given") -> Alternator:
    """The convolutional Alternator at the paper's sigma_z (``"given"``) or at the ``"spread"``
    latent timescales (:func:`~alternators_ppl.experiments.registry.spread_sigma_z`)."""
    shape = (cfg.tile, cfg.tile)
    alpha = 0.3
    model = Alternator(
        cfg.tile * cfg.tile,
        cfg.latent_dim,
        sigma_z=spread_sigma_z(cfg.latent_dim, alpha) if timescales == "spread" else 0.1,
        alpha=alpha,
        otn=GridDecoder(cfg.latent_dim, shape, cfg.channels),
        ftn=GridEncoder(shape, cfg.latent_dim, cfg.channels),
    )
    return model.to(device)


def _fit_conv_alternator(cfg: SSTConfig, split, seed: int, device) -> tuple[Alternator, dict]:
    """Eq. 12 and the noise calibration of the convolutional Alternator at each candidate of
    ``cfg.latent_timescales``; returns the kept model and the record of the choice."""

    def train(timescales: str):
        seed_everything(seed)
        model = _conv_alternator(cfg, device, timescales)
        fit(
            model,
            split.x_train,
            x_val=split.x_val,
            epochs=cfg.epochs,
            lr=cfg.lr,
            batch_size=cfg.batch_size,
            seed=seed,
            progress=False,
            budget_s=cfg.budget_s,
            calibrate="auto" if cfg.calibrate else False,
        )
        return model, model

    return keep_better_timescales(cfg.latent_timescales, train, split.x_val, seed)


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def _maps(truth, draws: dict, tile: int, path: Path, title: str) -> None:
    """Rows: models; columns: truth, forecast mean, spread (std), error (mean - truth), K."""
    fig = Figure(figsize=(11.0, 2.6 * len(draws)), dpi=120, layout="constrained")
    axes = fig.subplots(len(draws), 4, squeeze=False)
    t = truth.reshape(tile, tile)
    lo, hi = np.nanmin(t), np.nanmax(t)
    for row, (name, d) in enumerate(draws.items()):
        land = np.isnan(t)
        mean = np.where(land, np.nan, d.mean(0).reshape(tile, tile))
        spread = np.where(land, np.nan, d.std(0).reshape(tile, tile))
        err = mean - t
        big = np.nanmax(np.abs(err)) or 1.0
        panels = [
            (t, "truth", "viridis", lo, hi),
            (mean, "mean", "viridis", lo, hi),
            (spread, "spread (std)", "magma", 0, None),
            (err, "error", "RdBu_r", -big, big),
        ]
        for col, (img, label, cmap, vmin, vmax) in enumerate(panels):
            ax = axes[row, col]
            im = ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax, origin="lower")
            fig.colorbar(im, ax=ax, shrink=0.8, label="K")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{name}: {label}" if col else f"{label} ({title})", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def run_sst(
    cfg: SSTConfig, runs_dir="runs", name: str | None = None, overwrite: bool = False
) -> tuple[Path, dict]:
    """Run the SST comparison; write sst.json, sst.md and figures/maps.png; return
    (folder, results)."""
    device = resolve_device(cfg.device)
    start = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    series = ostia_tile_series(cfg.tile, cfg.min_ocean, cfg.max_tiles)
    split = split_series(series, cfg.context, cfg.horizon)
    past, future, origins = split.test_problems()
    months = np.asarray(series.time.astype("datetime64[M]").astype(int) % 12 + 1)
    target_months = np.stack([months[o : o + cfg.horizon] for o in origins])
    name = name or time.strftime("sst-%Y%m%d-%H%M%S")
    # under torchrun every rank trains (data-parallel fit); rank 0 alone publishes the folder
    final, run = distributed.stage_on_main(lambda: stage_run_folder(runs_dir, name, overwrite))
    scale, shift = split.scaler.scale, split.scaler.mean
    future_t = torch.as_tensor(future, dtype=torch.float64)
    try:
        raw, timing, shown = {m: [] for m in MODELS}, {m: [] for m in MODELS}, {}
        for seed in range(cfg.first_seed, cfg.first_seed + cfg.seeds):
            gen = torch.Generator().manual_seed(seed)
            for model_name in MODELS:
                seed_everything(seed)
                tic = time.perf_counter()
                chosen = {}
                if model_name == "alternator-conv":
                    model, chosen["latent_timescales"] = _fit_conv_alternator(
                        cfg, split, seed, device
                    )
                    with torch.no_grad():
                        draws = model.forecast(
                            torch.as_tensor(past, device=device), cfg.horizon, cfg.num_samples
                        )
                    if cfg.recalibrate_spread:
                        factors, chosen["forecast_spread"] = fit_validation_spread(
                            model, split.x_val, cfg.num_samples, seed
                        )
                        draws = scale_spread(draws, factors)
                elif model_name == "kalman-pca":
                    draws = pca_kalman_draws(
                        split.x_train,
                        split.x_val,
                        past,
                        cfg.horizon,
                        cfg.num_samples,
                        cfg.pca_components,
                        seed,
                        cfg.budget_s,
                        device=device,
                    )
                elif model_name == "climatology-monthly":
                    draws = monthly_climatology_draws(
                        split.x, months, split.val_start, target_months, cfg.num_samples, gen
                    )
                else:
                    draws = persistence_draws(past, cfg.horizon, cfg.num_samples)
                draws = draws.detach().double().cpu()
                seconds = time.perf_counter() - tic
                data = score_masked_forecast(draws, future_t, scale, shift)
                kelvin = draws * torch.as_tensor(scale) + torch.as_tensor(shift)
                truth_k = future_t * torch.as_tensor(scale) + torch.as_tensor(shift)
                raw[model_name].append(
                    {
                        "crps": data["crps"],
                        "rmse": data["rmse"],
                        "coverage_90": data["coverage_90"],
                        "spread_skill": spread_skill(kelvin, truth_k),
                        "seconds": seconds,
                        **chosen,
                    }
                )
                timing[model_name].append(seconds)
                if seed == cfg.first_seed:
                    shown[model_name] = kelvin[:, 0, 0].numpy()
        truth0 = (future_t[0, 0] * torch.as_tensor(scale) + torch.as_tensor(shift)).numpy()
        when = str(series.time[origins[0]])[:7]
        _maps(
            truth0,
            {m: shown[m] for m in ("alternator-conv", "kalman-pca", "climatology-monthly")},
            cfg.tile,
            run / "figures" / "maps.png",
            f"{when}, lead 1, tile 0",
        )
        summary = {}
        for m in MODELS:
            summary[m] = {}
            for key in ("crps", "rmse", "coverage_90", "spread_skill"):
                cols = list(zip(*[r[key] for r in raw[m]], strict=True))
                summary[m][key] = [statistics.fmean(c) for c in cols]
                summary[m][f"{key}_sd"] = [statistics.stdev(c) if len(c) > 1 else 0.0 for c in cols]
        results = {
            "config": asdict(cfg),
            "source": series.source,
            "tiles": int(series.values.shape[0]),
            "cells_per_tile": int(series.values.shape[2]),
            "ocean_share": float(np.mean(~np.isnan(series.values[:, 0]))),
            "test_first_origin": when,
            "test_problems": len(past),
            "leads": list(range(1, cfg.horizon + 1)),
            "summary": summary,
            "per_seed": raw,
            "wall_s": time.perf_counter() - start,
            "peak_rss_mb": _peak_rss_mb(),
            "peak_cuda_mb": (
                torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
            ),
            "device": str(device),
        }
        write_json(run / "sst.json", results)
        (run / "sst.md").write_text(format_sst(results) + "\n")
    except BaseException:
        shutil.rmtree(run, ignore_errors=True)
        raise
    return distributed.publish_on_main(run, final, publish_run_folder), results


def format_sst(results: dict) -> str:
    """Markdown: one row per model and lead (kelvin), mean over seeds, plus time and memory."""
    lines = [
        f"OSTIA SST, {results['tiles']} tiles of {results['cells_per_tile']} cells, "
        f"{results['test_problems']} test problems from {results['test_first_origin']}, "
        f"{results['config']['seeds']} seed(s); kelvin; mean ± sd over seeds.",
        "",
        "| model | lead | CRPS | RMSE | spread/skill | cover90 |",
        "|---|---|---|---|---|---|",
    ]
    for m, s in results["summary"].items():
        for i, lead in enumerate(results["leads"]):

            def cell(key, digits=3, s=s, i=i):
                return f"{s[key][i]:.{digits}f} ± {s[key + '_sd'][i]:.{digits}f}"

            lines.append(
                f"| {m} | {lead} | {cell('crps')} | {cell('rmse')} | "
                f"{cell('spread_skill', 2)} | {cell('coverage_90', 2)} |"
            )
    cuda = results["peak_cuda_mb"]
    lines += [
        "",
        f"Wall time {results['wall_s']:.1f} s on {results['device']}, peak RSS "
        f"{results['peak_rss_mb']:.0f} MB" + (f", peak CUDA {cuda:.0f} MB" if cuda else ""),
    ]
    return "\n".join(lines)


def add_sst_parser(commands, positive_int, positive_float, add_run_arguments) -> None:
    """Register ``sst`` on the CLI's sub-command set."""
    parser = commands.add_parser("sst", help="SST forecasting on OSTIA tiles; scores and maps")
    add_run_arguments(parser, "sst-<timestamp>")
    parser.add_argument("--epochs", type=positive_int, help="Alternator epoch cap")
    parser.add_argument("--budget-s", type=positive_float, help="training seconds per model")
    parser.add_argument("--samples", type=positive_int, help="forecast draws (default 100)")
    parser.add_argument("--seeds", type=positive_int, help="number of seeds (default 1)")
    parser.add_argument("--first-seed", type=int, help="first seed (default 0)")
    parser.add_argument("--tiles", type=positive_int, help="use at most this many tiles")
    parser.add_argument(
        "--latent-timescales",
        choices=LATENT_TIMESCALES,
        help="the Alternator's latent memories (default auto: chosen on validation)",
    )


def sst_command(args: argparse.Namespace) -> tuple[str, Path]:
    """``alternators-ppl sst ...``"""
    overrides = {"device": args.device}
    for key, field in (
        ("epochs", "epochs"),
        ("budget_s", "budget_s"),
        ("samples", "num_samples"),
        ("seeds", "seeds"),
        ("first_seed", "first_seed"),
        ("tiles", "max_tiles"),
        ("latent_timescales", "latent_timescales"),
    ):
        if getattr(args, key, None) is not None:
            overrides[field] = getattr(args, key)
    cfg = SSTConfig.quick(**overrides) if args.quick else SSTConfig(**overrides)
    run, results = run_sst(cfg, args.runs_dir, args.name, args.overwrite)
    return format_sst(results), run
