"""The main job: Alternators on Lorenz-63, trained, evaluated on held-out data, written to a run.

Two parts, each trained on its own split and scored on data it never saw:

1. forecaster: an Alternator on noisy Lorenz observations (independent train/val/test
   trajectories): per-horizon forecasts against persistence and climatology, imputation of
   randomly missing steps against linear interpolation, free-running samples on the attractor;
2. decoder: a sequence-to-sequence Alternator mapping Poisson spikes of Gaussian-tuned neurons
   to the Lorenz state, trained on the first part of one long trajectory and scored on the
   later, disjoint time span (R^2, correlation and interval coverage of the latent path).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from alternators_ppl import distributed
from alternators_ppl.data.tasks import lorenz_forecasting_task, lorenz_spikes_task
from alternators_ppl.evaluation import figures as plots
from alternators_ppl.evaluation.forecast_calibration import calibration_report
from alternators_ppl.evaluation.scoring import (
    forecast_windows,
    hide_random_steps,
    score_forecasts,
    score_imputation,
    score_latents,
)
from alternators_ppl.experiments.registry import VARIANTS
from alternators_ppl.inference import fit
from alternators_ppl.models import Alternator
from alternators_ppl.runs import (
    library_versions,
    publish_run_folder,
    resolve_device,
    stage_run_folder,
    write_json,
)
from alternators_ppl.seeding import seed_everything

__all__ = ["LorenzJobConfig", "build_alternator", "run_lorenz_job", "format_summary"]


@dataclass(frozen=True)
class LorenzJobConfig:
    """Settings of the Lorenz job (defaults: the demo, about two minutes on 2 CPU cores)."""

    seed: int = 0
    device: str = "cpu"
    model: str = "alternator"
    # forecaster: noisy observations of independent trajectories
    num_train: int = 64
    num_val: int = 16
    num_test: int = 32
    num_steps: int = 200
    dt: float = 0.02
    noise_std: float = 0.3
    latent_dim: int = 8
    hidden: int = 64
    sigma_x: float = 0.3
    sigma_z: float = 0.1
    alpha: float = 0.3
    epochs: int = 200
    batch_size: int = 16
    lr: float = 1e-2
    context: int = 60
    horizon: int = 20
    num_samples: int = 200
    missing_fraction: float = 0.3
    # decoder: spikes -> Lorenz state, disjoint time spans of one trajectory
    num_neurons: int = 100
    mean_rate: float = 0.3
    spike_steps: int = 20000
    spike_dt: float = 0.01
    tuning_width: float = 1.0
    decoder_epochs: int = 100
    decoder_batch_size: int = 32

    def forecasting_task(self):
        """The forecaster's data: :func:`lorenz_forecasting_task` with these settings."""
        return lorenz_forecasting_task(
            num_train=self.num_train,
            num_val=self.num_val,
            num_test=self.num_test,
            num_steps=self.num_steps,
            dt=self.dt,
            noise_std=self.noise_std,
            seed=self.seed,
        )

    def spikes_task(self):
        """The decoder's data: :func:`lorenz_spikes_task` with these settings."""
        return lorenz_spikes_task(
            num_neurons=self.num_neurons,
            mean_rate=self.mean_rate,
            num_steps=self.spike_steps,
            dt=self.spike_dt,
            width=self.tuning_width,
            seed=self.seed,
        )

    @classmethod
    def quick(cls, **overrides) -> LorenzJobConfig:
        """A seconds-long smoke configuration (tiny data, few epochs): checks plumbing only."""
        small = dict(
            num_train=8,
            num_val=4,
            num_test=4,
            num_steps=100,
            epochs=3,
            num_samples=20,
            spike_steps=1500,
            decoder_epochs=3,
            decoder_batch_size=4,
        )
        return replace(cls(), **{**small, **overrides})


def build_alternator(cfg: LorenzJobConfig, obs_dim: int, latent_dim: int, device) -> Alternator:
    """The job's model (``cfg.model`` variant, its sigma/alpha and MLP widths) on ``device``."""
    if cfg.model not in VARIANTS:
        raise ValueError(f"model must be one of {sorted(VARIANTS)}, got {cfg.model!r}")
    return VARIANTS[cfg.model](
        obs_dim,
        latent_dim,
        sigma_x=cfg.sigma_x,
        sigma_z=cfg.sigma_z,
        alpha=cfg.alpha,
        hidden=(cfg.hidden, cfg.hidden),
    ).to(device)


def _forecaster(cfg: LorenzJobConfig, device, run: Path):
    task = cfg.forecasting_task()
    model = build_alternator(cfg, 3, cfg.latent_dim, device)
    tic = time.perf_counter()
    history = fit(
        model,
        task.x_train,
        x_val=task.x_val,
        epochs=cfg.epochs,
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        checkpoint_dir=run / "checkpoints" / "forecaster",
    )
    train_seconds = time.perf_counter() - tic
    if not distributed.is_main_process():  # data-parallel: rank 0 evaluates and writes
        return None

    x_test = torch.as_tensor(task.x_test, device=device)
    x_train = torch.as_tensor(task.x_train, device=device)
    past, future = forecast_windows(x_test, cfg.context, cfg.horizon, stride=cfg.horizon)
    tic = time.perf_counter()
    draws = model.forecast(past, cfg.horizon, cfg.num_samples)
    forecast_seconds = time.perf_counter() - tic
    forecast = score_forecasts(draws, future, past, x_train)
    x_val = torch.as_tensor(task.x_val, device=device)
    val_past, val_future = forecast_windows(x_val, cfg.context, cfg.horizon, stride=cfg.horizon)
    val_draws = model.forecast(val_past, cfg.horizon, cfg.num_samples)
    calibration = {
        "test": calibration_report(draws, future),
        "validation": calibration_report(val_draws, val_future),
        "noise": history.calibration,
    }

    gappy, mask = hide_random_steps(x_test, cfg.missing_fraction, cfg.seed + 1)
    imputed = model.impute(gappy, None, cfg.num_samples)
    imputation = score_imputation(imputed, x_test, mask)

    tic = time.perf_counter()
    free = model.sample(8, 1000)
    sample_seconds = time.perf_counter() - tic
    with torch.no_grad():  # the noise-free part of each draw: sqrt(1 - sigma_x^2) f(z_{t-1})
        free_mean = model.x_loc(free["z"][:, :-1])
    figures = run / "figures"
    to_units = task.scaler.inverse_transform
    plots.plot_attractor(
        to_units(free_mean.cpu().numpy()),
        to_units(task.states_test[:8]),
        figures / "attractor.png",
        title="free-running Alternator (OTN mean of each draw) vs held-out Lorenz trajectories",
        units="raw Lorenz units",
    )
    plots.plot_forecast_fan(
        past[0],
        draws[:, 0],
        future[0],
        figures / "forecast_fan.png",
        dt=cfg.dt,
        units=plots.STANDARDISED,
    )
    plots.plot_imputation(
        gappy[0],
        mask[0].unsqueeze(-1).expand(-1, 3),
        imputed[:, 0],
        x_test[0],
        figures / "imputation.png",
        dt=cfg.dt,
        units=plots.STANDARDISED,
    )
    plots.plot_loss(history.to_dict(), figures / "loss_forecaster.png", title="forecaster")
    timing = {
        "train_s": train_seconds,
        "forecast_s": forecast_seconds,
        "sample_8x1000_s": sample_seconds,
    }
    return forecast, imputation, history, timing, calibration


def _decoder(cfg: LorenzJobConfig, device, run: Path):
    task = cfg.spikes_task()
    num_val = max(1, len(task.x_train) // 7)  # the last train windows pick the best epoch
    model = build_alternator(cfg, cfg.num_neurons, 3, device)
    tic = time.perf_counter()
    history = fit(
        model,
        task.x_train[:-num_val],
        task.z_train[:-num_val],
        x_val=task.x_train[-num_val:],
        z_val=task.z_train[-num_val:],
        epochs=cfg.decoder_epochs,
        lr=cfg.lr,
        batch_size=cfg.decoder_batch_size,
        seed=cfg.seed,
        checkpoint_dir=run / "checkpoints" / "decoder",
    )
    train_seconds = time.perf_counter() - tic
    if not distributed.is_main_process():
        return None
    z_samples = model.infer_latents(task.x_test, num_samples=cfg.num_samples)[:, 0, 1:]
    z_true = torch.as_tensor(task.z_test[0], device=device)
    latents = score_latents(z_samples, z_true)
    latents.update(
        train_steps=int(task.x_train.shape[0] * task.x_train.shape[1]),
        test_steps=int(task.x_test.shape[1]),
        spikes_per_bin=float(task.mean_spikes_per_bin),
    )
    figures = run / "figures"
    plots.plot_latents(
        z_true, z_samples, figures / "latents.png", dt=cfg.spike_dt, units=plots.STANDARDISED
    )
    plots.plot_loss(history.to_dict(), figures / "loss_decoder.png", title="decoder")
    return latents, history, {"train_s": train_seconds}


def run_lorenz_job(
    cfg: LorenzJobConfig, runs_dir="runs", name: str | None = None, overwrite: bool = False
) -> tuple[Path, dict]:
    """Run the job and write ``runs_dir/name`` (config.json, metrics.json, history.json,
    checkpoints/, figures/*.png); return (run folder, metrics).

    Data-parallel under a process group (``torchrun``): every rank trains its share, rank 0
    alone stages, evaluates and publishes the one run folder; other ranks return metrics None.
    """
    device = resolve_device(cfg.device)
    name = distributed.broadcast_object(name or time.strftime("lorenz-%Y%m%d-%H%M%S"))
    if not distributed.is_main_process():
        return _follow_lorenz_job(cfg, device)
    try:
        final, run = stage_run_folder(runs_dir, name, overwrite)
    except BaseException as error:
        distributed.broadcast_object(error)  # the other ranks stop with the same error
        raise
    distributed.broadcast_object(run)
    try:
        seed_everything(cfg.seed)
        tic = time.perf_counter()
        write_json(
            run / "config.json",
            {
                "job": "lorenz",
                **asdict(cfg),
                "versions": library_versions(),
            },
        )
        forecast, imputation, f_history, f_timing, calibration = _forecaster(cfg, device, run)
        write_json(run / "calibration.json", calibration)
        write_json(
            run / "config.json",
            {
                "job": "lorenz",
                **asdict(cfg),
                "versions": library_versions(),
                "chosen": {"forecaster_noise": calibration["noise"]},
            },
        )
        latents, d_history, d_timing = _decoder(cfg, device, run)
        metrics = {
            "forecast": {"horizon": list(range(1, cfg.horizon + 1)), **forecast},
            "calibration_warning": calibration["validation"]["warning"],
            "imputation": imputation,
            "latents": latents,
            "timing": {
                "forecaster": f_timing,
                "decoder": d_timing,
                "total_s": time.perf_counter() - tic,
                "device": str(device),
            },
        }
        write_json(run / "metrics.json", metrics)
        write_json(
            run / "history.json",
            {"forecaster": f_history.to_dict(), "decoder": d_history.to_dict()},
        )
    except BaseException:
        shutil.rmtree(run, ignore_errors=True)
        raise
    return publish_run_folder(run, final), metrics


def _follow_lorenz_job(cfg: LorenzJobConfig, device) -> tuple[Path, None]:
    """Ranks > 0 of a data-parallel run: train the same models on their shares, write nothing."""
    run = distributed.broadcast_object(None)
    if isinstance(run, BaseException):
        raise run
    seed_everything(cfg.seed)
    _forecaster(cfg, device, run)
    _decoder(cfg, device, run)
    return run, None


def format_summary(metrics: dict) -> str:
    """A short plain-text table of the held-out results."""
    fc = metrics["forecast"]
    lines = [
        "held-out forecasts (standardised units)",
        "  h   CRPS  persist  climat   RMSE  persist  cover90",
    ]
    for h in sorted({1, 5, 10, 15, 20} & set(fc["horizon"])):
        i = h - 1
        lines.append(
            f"{h:3d} {fc['crps'][i]:6.3f} {fc['persistence_crps'][i]:8.3f} "
            f"{fc['resampled_climatology_crps'][i]:7.3f} {fc['rmse'][i]:6.3f} "
            f"{fc['persistence_rmse'][i]:8.3f} {fc['coverage_90'][i]:8.3f}"
        )
    imp = metrics["imputation"]
    lines.append(
        f"imputation of {imp['missing_fraction']:.0%} missing steps: RMSE {imp['rmse']:.3f} "
        f"(linear interpolation {imp['linear_interpolation_rmse']:.3f}), "
        f"cover90 {imp['coverage_90']:.3f}"
    )
    lat = metrics["latents"]
    r2 = ", ".join(f"{v:.3f}" for v in lat["r2"])
    cover = ", ".join(f"{v:.3f}" for v in lat["coverage_90"])
    lines.append(f"latents from spikes (held-out span): R^2 [{r2}], cover90 [{cover}]")
    lines.append(
        f"total time {metrics['timing']['total_s']:.1f} s on {metrics['timing']['device']}"
    )
    if metrics.get("calibration_warning"):
        lines.append(metrics["calibration_warning"])
    return "\n".join(lines)
