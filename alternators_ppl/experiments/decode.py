"""The ``decode`` command: decoders of behaviour from neural activity, on held-out time spans.

``alternators-ppl decode {lorenz-paper,ratinabox,glaser}`` trains every chosen decoder
(alternator, wiener, kalman, gru, mamba) for each seed on the training span and scores it on
the test span: signed R^2, Pearson CC and RMSE per behaviour dimension, 90% interval coverage
where the decoder has draws, and training seconds. The run folder holds ``config.json``,
``decoding.json``, ``decoding.md`` (a table) and ``decoded.png`` (decoded vs true, with 90%
bands, first seed).
"""

from __future__ import annotations

import shutil
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from alternators_ppl import distributed
from alternators_ppl.data.decoding import DecodingTask
from alternators_ppl.inference.decoders import AlternatorDecoder, GRUDecoder, MambaDecoder
from alternators_ppl.metrics import interval_coverage, pearson_cc, r2, rmse
from alternators_ppl.models.decoders import KalmanDecoder, WienerDecoder
from alternators_ppl.runs import atomic_write, publish_run_folder, stage_run_folder, write_json
from alternators_ppl.seeding import seed_everything

__all__ = [
    "DECODE_TASKS",
    "DECODER_NAMES",
    "DecodeConfig",
    "load_decoding_task",
    "build_decoder",
    "score_decoder",
    "run_decoding",
    "format_decoding",
]

DECODE_TASKS = ("lorenz-paper", "ratinabox", "glaser")
DECODER_NAMES = ("alternator", "wiener", "kalman", "gru", "mamba")


@dataclass(frozen=True)
class DecodeConfig:
    """Settings of a decoding run (defaults: the library's defaults for every decoder)."""

    task: str = "lorenz-paper"
    data: str | None = None
    models: tuple[str, ...] = DECODER_NAMES
    seeds: int = 3
    first_seed: int = 0
    max_bins: int | None = None  # ratinabox: keep the first bins only
    device: str = "cpu"
    num_samples: int = 20  # the Alternator's decoded behaviour: the mean of this many draws
    interval_samples: int = 200  # draws behind every decoder's 90% interval and figure bands
    alternator_epochs: int | None = None  # None: fit's default
    gru_epochs: int = 200
    gru_hidden: int = 64
    mamba_epochs: int = 200
    mamba_d_model: int = 32
    quick: bool = False

    def __post_init__(self):
        if self.task not in DECODE_TASKS:
            raise ValueError(f"task must be one of {DECODE_TASKS}, got {self.task!r}")
        unknown = [m for m in self.models if m not in DECODER_NAMES]
        if unknown or not self.models:
            raise ValueError(f"models must be a non-empty subset of {DECODER_NAMES}, got {unknown}")
        if self.task == "glaser" and not self.data:
            raise ValueError("task glaser needs --data PATH (a Glaser et al. 2020 pickle)")
        for name in ("seeds", "num_samples", "interval_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def quick_config(cls, **overrides) -> DecodeConfig:
        """Seconds-long smoke settings (short data, few epochs); the numbers mean nothing."""
        small = dict(seeds=1, num_samples=5, interval_samples=20, alternator_epochs=3,
                     gru_epochs=3, gru_hidden=8, mamba_epochs=3, mamba_d_model=8,
                     quick=True)  # fmt: skip
        return replace(cls(), **{**small, **overrides})


def load_decoding_task(cfg: DecodeConfig, seed: int) -> DecodingTask:
    """The data of one seed (the Glaser file is the same for every seed)."""
    if cfg.task == "lorenz-paper":
        from alternators_ppl.data.paper_spikes import paper_spikes_task

        return paper_spikes_task(seed, num_steps=400 if cfg.quick else 1600)
    if cfg.task == "ratinabox":
        from alternators_ppl.data.ratinabox_cells import ratinabox_task

        return ratinabox_task(seed, max_bins=600 if cfg.quick else cfg.max_bins)
    from alternators_ppl.data.glaser import glaser_task

    return glaser_task(cfg.data)


def build_decoder(name: str, cfg: DecodeConfig, seed: int):
    """A fresh decoder by name, with the run's settings."""
    if name == "wiener":
        return WienerDecoder()
    if name == "kalman":
        return KalmanDecoder()
    if name == "gru":
        return GRUDecoder(hidden=cfg.gru_hidden, epochs=cfg.gru_epochs, seed=seed,
                          device=cfg.device)  # fmt: skip
    if name == "mamba":
        return MambaDecoder(d_model=cfg.mamba_d_model, epochs=cfg.mamba_epochs, seed=seed,
                            device=cfg.device)  # fmt: skip
    fit_args = {} if cfg.alternator_epochs is None else {"epochs": cfg.alternator_epochs}
    model_args = {"hidden": (8,)} if cfg.quick else {}
    return AlternatorDecoder(cfg.num_samples, model_args, fit_args, seed=seed, device=cfg.device)


def score_decoder(
    decoder, task: DecodingTask, interval_samples: int = 200
) -> tuple[dict, np.ndarray, np.ndarray | None]:
    """Per-dimension test metrics of a fitted decoder; also its point (T, Dz) and draws
    (S, T, Dz). The point is the decoder's ``predict`` (the Alternator's: the mean of its
    ``num_samples`` draws); the 90% interval comes from ``interval_samples`` further draws, so
    that a small point budget does not bias coverage (the central 90% of 20 draws holds a
    new exchangeable draw only about 81% of the time)."""
    draws = decoder.sample(task.x_test, num_samples=interval_samples)
    pred = decoder.predict(task.x_test)[0]
    truth = task.z_test[0].astype(np.float64)
    out = {
        "r2": r2(pred, truth).tolist(),
        "cc": pearson_cc(pred, truth).tolist(),
        "rmse": rmse(pred, truth).tolist(),
        "coverage_90": None,
    }
    if draws is not None:
        out["coverage_90"] = interval_coverage(draws[:, 0], truth, 0.9).tolist()
    return out, pred, None if draws is None else draws[:, 0]


def _figure(task: DecodingTask, decoded: dict, path: Path) -> Path:
    dims = task.latent_dim
    fig = Figure(figsize=(9, 2.2 * dims), dpi=110, layout="constrained")
    axes = fig.subplots(dims, 1, sharex=True, squeeze=False)[:, 0]
    steps = np.arange(task.z_test.shape[1])
    for d, ax in enumerate(axes):
        ax.plot(steps, task.z_test[0, :, d], color="black", lw=1.2, label="true")
        for (name, (pred, draws)), colour in zip(decoded.items(), ["C0", "C1", "C2", "C3", "C4"],
                                                 strict=False):  # fmt: skip
            ax.plot(steps, pred[:, d], color=colour, lw=0.9, label=name)
            if draws is not None:
                lo, hi = np.quantile(draws[:, :, d], [0.05, 0.95], axis=0)
                ax.fill_between(steps, lo, hi, color=colour, alpha=0.2, lw=0)
        ax.set_ylabel(task.names[d])
    axes[0].legend(loc="upper right", ncol=len(decoded) + 1, fontsize=7)
    axes[-1].set_xlabel("test bin")
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def _aggregate(rows: list[dict]) -> dict:
    out = {}
    for key in ("r2", "cc", "rmse", "coverage_90", "train_s"):
        values = [r[key] for r in rows]
        if values[0] is None:
            out[key] = None
            continue
        cols = list(zip(*values, strict=True)) if isinstance(values[0], list) else [values]
        mean = [statistics.fmean(c) for c in cols]
        sd = [statistics.stdev(c) if len(c) > 1 else 0.0 for c in cols]
        out[key] = {"mean": mean if isinstance(values[0], list) else mean[0],
                    "sd": sd if isinstance(values[0], list) else sd[0]}  # fmt: skip
    return out


def format_decoding(results: dict) -> str:
    """A Markdown table: mean (sd) over seeds of R^2 per dimension, coverage, training time."""
    names = results["names"]
    head = "| decoder | " + " | ".join(f"R2 {n}" for n in names) + " | 90% coverage | train s |"
    lines = [head, "|" + "---|" * (len(names) + 3)]
    for model, agg in results["summary"].items():
        cells = [f"{m:.3f} ({s:.3f})" for m, s in zip(agg["r2"]["mean"], agg["r2"]["sd"],
                                                     strict=True)]  # fmt: skip
        cov = agg["coverage_90"]
        cov_text = "-" if cov is None else " / ".join(f"{c:.2f}" for c in cov["mean"])
        lines.append(f"| {model} | " + " | ".join(cells)
                     + f" | {cov_text} | {agg['train_s']['mean']:.1f} |")  # fmt: skip
    return "\n".join(lines)


def run_decoding(cfg: DecodeConfig, runs_dir="runs", name: str | None = None,
                 overwrite: bool = False) -> tuple[Path, dict]:  # fmt: skip
    """Train and score every decoder for every seed; write and publish the run folder."""
    name = name or f"decode-{cfg.task}-{time.strftime('%Y%m%d-%H%M%S')}"
    # under torchrun every rank trains (data-parallel fits); rank 0 alone publishes the folder
    final, staging = distributed.stage_on_main(lambda: stage_run_folder(runs_dir, name, overwrite))
    try:
        results = _run(cfg, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return distributed.publish_on_main(staging, final, publish_run_folder), results


def _run(cfg: DecodeConfig, staging: Path) -> dict:
    per_model: dict[str, list] = {m: [] for m in cfg.models}
    figure_data, names = {}, None
    for seed in range(cfg.first_seed, cfg.first_seed + cfg.seeds):
        task = load_decoding_task(cfg, seed)
        names = task.names
        for model in cfg.models:
            seed_everything(seed)
            decoder = build_decoder(model, cfg, seed)
            tic = time.perf_counter()
            decoder.fit(task.x_train, task.z_train, task.x_val, task.z_val)
            train_s = time.perf_counter() - tic
            scores, pred, draws = score_decoder(decoder, task, cfg.interval_samples)
            per_model[model].append({"seed": seed, **scores, "train_s": train_s,
                                     "train_steps": int(task.x_train.shape[1]),
                                     "test_steps": int(task.x_test.shape[1])})  # fmt: skip
            chosen = getattr(getattr(decoder, "history", None), "alpha", None)
            if chosen is not None:
                per_model[model][-1]["alpha"] = chosen
            calibration = getattr(getattr(decoder, "history", None), "calibration", None)
            if calibration is not None:  # the supervised noise calibration's choices
                keys = ("sigma_z", "c_x", "c_z", "alpha", "latent_method", "latent_errors")
                per_model[model][-1]["calibration"] = {k: calibration.get(k) for k in keys}
            gains = getattr(getattr(decoder, "history", None), "shrinkage", None)
            gains = getattr(decoder, "shrinkage", None) if gains is None else gains
            if gains is not None:  # per-dimension validation gains (inference/shrinkage.py)
                per_model[model][-1]["shrinkage"] = np.asarray(gains, float).tolist()
            if seed == cfg.first_seed:
                figure_data[model] = (pred, draws)
        if seed == cfg.first_seed:
            _figure(task, figure_data, staging / "decoded.png")
            info = task.info
    results = {
        "task": cfg.task,
        "names": list(names),
        "data": info,
        "per_seed": per_model,
        "summary": {m: _aggregate(rows) for m, rows in per_model.items()},
    }
    write_json(staging / "config.json", {"job": "decode", **asdict(cfg)})
    write_json(staging / "decoding.json", results)
    table = format_decoding(results)
    atomic_write(staging / "decoding.md", lambda tmp: tmp.write_text(table + "\n"))
    return results
