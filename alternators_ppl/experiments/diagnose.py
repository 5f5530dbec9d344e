"""The ``diagnose`` command: ArviZ diagnostics of the forecaster of a ``lorenz`` run folder.

Loads the run's checkpoint, draws latent paths and predictions for held-out sequences, writes
``diagnostics/`` (NetCDF, figures, a Markdown report) and returns a JSON-ready summary.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

import arviz as az
import numpy as np
import torch
from scipy import stats

from alternators_ppl.evaluation.calibration import coverage_table, pit_values
from alternators_ppl.evaluation.diagnostic_figures import plot_pit, plot_ppc, plot_trace_and_rank
from alternators_ppl.evaluation.inference_data import (
    DiagnosticsExistError,
    check_alternator,
    chunks,
    loo_over_time,
    pointwise_log_likelihood,
    save_netcdf,
    summary_table,
    to_inference_data,
)
from alternators_ppl.experiments.lorenz import LorenzJobConfig, build_alternator
from alternators_ppl.inference import apply_noise, load_checkpoint
from alternators_ppl.models.particle_gibbs import particle_gibbs
from alternators_ppl.models.smc import smc_chains
from alternators_ppl.models.smc_moves import DIAGNOSE_SWEEPS
from alternators_ppl.runs import atomic_write, resolve_device
from alternators_ppl.validation import (
    check_positive_int,
)

__all__ = [
    "diagnose_run",
    "format_diagnostics",
]


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
    noise = _calibrated_noise(run_dir)
    if noise is not None:  # the checkpoint holds the weights before the noise calibration
        apply_noise(model, noise)
    return cfg, model, checkpoint


def _calibrated_noise(run_dir: Path) -> dict | None:
    """The forecaster's noise calibration recorded in ``calibration.json`` (None without)."""
    path = run_dir / "calibration.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get("noise")
    except (json.JSONDecodeError, AttributeError) as err:
        raise ValueError(f"{path} is not a calibration report: {err}") from err


def _fork_rng(device: torch.device):
    cuda = [device.index or 0] if device.type == "cuda" else []
    return torch.random.fork_rng(devices=cuda)


SAMPLERS = {
    "particle-gibbs": "smoothing posterior p(z | x): particle Gibbs with ancestor sampling; "
    "chains = independent MCMC chains",
    "smc": "smoothing posterior p(z | x): FFBSi draws + MCMC sweeps; chains = independent "
    "particle systems",
    "ancestral": "Alternator.infer_latents (exact independent draws; chains = batches)",
}


def _draw(
    model,
    x: torch.Tensor,
    chains: int,
    draws: int,
    sampler: str = "smc",
    particles: int = 500,
    sweeps: int = 0,
):
    """Latent paths, predictive draws, pointwise log-lik and log p(x, z) per draw.

    ``sampler="smc"``: draws of the smoothing posterior from ``chains`` independent particle
    systems of ``particles`` particles (R-hat and ESS then measure how much the systems
    disagree); ``"ancestral"``: independent draws of the conditioned recursion. Every density
    comes from the model's own ``x_dist`` / ``log_joint``, so variants count; a model that is
    not an Alternator (a ``HyperpriorAlternator``) raises ``TypeError``.
    """
    check_alternator(model, "diagnose")
    batch, steps, _ = x.shape
    parts = list(chunks(chains * draws, batch * steps))
    if sampler == "particle-gibbs":
        z = particle_gibbs(
            model, x, num_chains=chains, num_draws=draws, num_particles=particles,
            burn_in=max(10, draws // 5),
        ).z  # fmt: skip
        z = z.reshape(chains * draws, batch, steps + 1, -1)
    elif sampler == "smc":
        z = smc_chains(
            model, x, num_chains=chains, num_draws=draws, num_particles=particles,
            mcmc_sweeps=sweeps,
        ).z  # fmt: skip
        z = z.reshape(chains * draws, batch, steps + 1, -1)
    else:
        z = torch.cat(
            [
                model.infer_latents(x, num_samples=p.stop - p.start, method="ancestral")
                for p in parts
            ]
        )
    log_lik = pointwise_log_likelihood(model, x, z)
    x_pred = torch.cat([model.x_dist(z[p, :, :-1]).sample() for p in parts])
    lp = torch.cat(
        [
            model.log_joint(x.repeat(p.stop - p.start, 1, 1), z[p].flatten(0, 1)).reshape(-1, batch)
            for p in parts
        ]
    ).sum(-1)

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


_SAMPLER_TEXT = {
    "particle-gibbs": (
        "The posterior draws are smoothing draws of p(z_{0:T} | x_{1:T}) by particle Gibbs with "
        "ancestor sampling (conditional SMC with the fully adapted filter; both networks). Each "
        "chain is an independent MCMC chain after burn-in, so R-hat and ESS are the usual MCMC "
        "diagnostics of one sampler. The posterior predictive x_t ~ p(x_t | z_{t-1}) uses z that "
        "saw all of x, so its coverage and PIT are an in-sample posterior predictive check."
    ),
    "smc": (
        "The posterior draws are smoothing draws of p(z_{0:T} | x_{1:T}) (both networks: a "
        "fully adapted particle filter weighting by the OTN's p(x_t | z_{t-1}), then backward "
        "simulation and Metropolis-within-Gibbs sweeps that leave the posterior invariant). "
        "Each chain is an independent particle system, so R-hat compares systems: "
        "values near 1 say the particle approximation is stable, large values say it is not "
        "(more particles). ESS counts the effective draws, which are correlated within a "
        "system. The posterior predictive x_t ~ p(x_t | z_{t-1}) uses z that saw all of x, so "
        "its coverage and PIT are an in-sample posterior predictive check, not a forecast."
    ),
    "ancestral": (
        "The posterior draws are **exact independent draws** of the model's conditioned "
        "recursion (`Alternator.infer_latents` with `method='ancestral'`: z_t given x_1..x_t; "
        "not the smoothing posterior). Chains are independent batches of draws, so R-hat and "
        "ESS check the sampling plumbing (they should be ~1 and ~the number of draws). The "
        "posterior predictive is the one-step-ahead draw x_t ~ p(x_t | z_{t-1}): z_{t-1} never "
        "saw x_t, so its coverage and PIT are held-out one-step calibration checks."
    ),
}


def _smc_settings(r: dict) -> str:
    if r["sampler"] != "smc":
        return ""
    return (
        f" Here: {r['num_particles']} particles per system, {r['mcmc_sweeps']} sweeps (without "
        "sweeps, backward simulation collapses onto few particles near t = 0 when sigma_z is "
        "small, which shows as a large R-hat there)."
    )


def _report(result: dict, summary, run_dir: Path) -> str:
    r = result
    lines = [
        f"# Diagnostics of {run_dir.name}",
        "",
        f"Forecaster of `{run_dir}` ({r['checkpoint']}), test split: {r['num_sequences']} "
        f"sequences x {r['num_steps']} steps; {r['num_chains']} chains x {r['num_draws']} draws "
        f"of the latent path (seed {r['seed']}, {r['device']}).",
        "",
        _SAMPLER_TEXT[r["sampler"]] + _smc_settings(r),
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
    sampler: str = "smc",
    num_particles: int = 500,
    mcmc_sweeps: int = DIAGNOSE_SWEEPS,
) -> dict:
    """ArviZ diagnostics of the forecaster of a ``lorenz`` run folder; return the key numbers.

    Rebuilds the Alternator from ``config.json`` and ``checkpoints/forecaster/best.pt``, with
    the noise the run calibrated (``calibration.json``, through ``apply_noise``), regenerates
    the test split (the config's seed) and keeps its first ``num_sequences`` (None: all). Draws
    ``num_chains`` x ``num_draws`` latent paths. ``sampler="smc"`` (default): the smoothing
    posterior p(z | x) by FFBSi, each chain an independent particle system of ``num_particles``
    particles whose backward-simulation draws get ``mcmc_sweeps`` MCMC sweeps
    (:func:`~alternators_ppl.models.smc_moves.mcmc_moves`), so R-hat and ESS test whether the
    systems agree (too few particles or sweeps fail them). ``sampler="ancestral"``:
    ``infer_latents``' conditioned recursion, exact independent draws in independent batches
    (R-hat/ESS then only check plumbing). ``sampler="particle-gibbs"``: ``num_chains`` particle
    Gibbs chains (``models/particle_gibbs.py``, ``num_particles`` per conditional SMC sweep,
    burn-in max(10, num_draws / 5)), whose R-hat and ESS are those of one MCMC sampler. The
    posterior predictive is x_t ~ p(x_t | z_{t-1}) per path; the pointwise log-likelihood is log
    p(x_t | z_{t-1}); sample_stats "lp" is log p(x, z) summed over sequences. Writes
    ``run_dir/diagnostics.nc`` (InferenceData), ``diagnostics.md`` (z summary at a few time
    points, ESS/R-hat ranges, PSIS-LOO over time points with its caveat, 50/90% coverage and PIT
    counts of the one-step predictive) and ``figures/{pit,trace_rank,ppc}.png``.

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
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
    num_particles = check_positive_int(num_particles, "num_particles")
    if isinstance(mcmc_sweeps, bool) or not isinstance(mcmc_sweeps, int) or mcmc_sweeps < 0:
        raise ValueError(f"mcmc_sweeps must be a non-negative integer, got {mcmc_sweeps!r}")
    device = resolve_device(device)
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
            z, x_pred, log_lik, lp = _draw(
                model, x, num_chains, num_draws, sampler, num_particles, mcmc_sweeps
            )
    idata = to_inference_data(
        z=z,
        x_pred=x_pred,
        x_obs=x,
        log_likelihood=log_lik,
        sample_stats={"lp": lp},
        attrs={
            "run_dir": str(run_dir),
            "checkpoint": str(checkpoint.relative_to(run_dir)),
            "sampler": SAMPLERS[sampler],
            "seed": int(seed),
        },
    )

    time_z = np.unique(np.linspace(0, steps, min(steps + 1, 12)).round().astype(int))
    z_sel = idata.posterior[["z"]].sel(time_z=time_z)
    summary_times = sorted({1, steps // 2, steps})
    latents = list(range(model.latent_dim))
    # a chain stuck at one value (an MCMC chain that never moved) has zero within-chain
    # variance: R-hat is then inf or NaN, an honest failure, not an error
    with np.errstate(divide="ignore", invalid="ignore"):
        ess_bulk = az.ess(z_sel, method="bulk")["z"].values
        ess_tail = az.ess(z_sel, method="tail")["z"].values
        rhat = az.rhat(z_sel)["z"].values
        summary = summary_table(
            idata,
            ["z"],
            coords={"sequence": [0], "time_z": summary_times, "latent": latents[:3]},
            round_to="none",
        )
    # ancestral draws are independent (reff 1); FFBSi draws within a system are not
    loo = loo_over_time(idata, reff=1.0 if sampler == "ancestral" else None)
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
        "sampler": sampler,
        "num_particles": None if sampler == "ancestral" else num_particles,
        "mcmc_sweeps": mcmc_sweeps if sampler == "smc" else None,
        "num_sequences": batch,
        "num_steps": steps,
        "summary_time_z": summary_times,
        "ess_time_z": time_z.tolist(),
        "ess_bulk": _ranges(ess_bulk),
        "ess_tail": _ranges(ess_tail),
        "rhat": _ranges(rhat),
        "rhat_above_1_01": float((~(rhat <= 1.01)).mean()),  # NaN (a stuck chain) counts
        "loo": {k: v for k, v in loo.items() if k not in ("loo_i", "pareto_k")},
        "coverage": coverage,
        "pit_counts": pit_counts.tolist(),
        "pit_ks": float(stats.kstest(pit.reshape(-1), "uniform").statistic),
        "files": {k: str(v) for k, v in files.items()},
    }
    text = _report(result, summary, run_dir)
    atomic_write(files["markdown"], lambda tmp: tmp.write_text(text))
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
        + (
            f"(across {result['num_chains']} independent particle systems)"
            if result["sampler"] == "smc"
            else "(exact independent draws: a plumbing check)"
        ),
        ("  posterior predictive" if result["sampler"] == "smc" else "  one-step")
        + " coverage "
        + ", ".join(f"{level:.0%}: {row['coverage']:.3f}" for level, row in cov.items())
        + f"; PIT KS statistic {result['pit_ks']:.3f}",
        f"  PSIS-LOO over time points (not a forecasting metric): elpd_loo {loo['elpd_loo']:.1f} "
        f"(se {loo['se']:.1f}), lppd {loo['lppd']:.1f}, max Pareto k {loo['pareto_k_max']:.2f}",
        f"  wrote {result['files']['netcdf']}, {result['files']['markdown']} and figures/",
    ]
    return "\n".join(lines)
