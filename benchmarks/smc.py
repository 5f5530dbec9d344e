"""SMC posterior latents: exactness on a linear Alternator, Lorenz imputation/forecasts, throughput.

    python -m benchmarks.smc --item linear     [--repeats 20] [--out PATH]
    python -m benchmarks.smc --item lorenz     [--budget-s 90] [--particles 256] [--out PATH]
    python -m benchmarks.smc --item spikes     [--budget-s 90] [--particles 256] [--out PATH]
                                               [--calibration latent_dss] [--state PATH]
    python -m benchmarks.smc --item throughput [--device cpu|cuda] [--out PATH]

``linear``: a linear Alternator (``tests.oracles.linear_alternator``, Dx = Dz = 2), 20 sequences
of T = 50 drawn from it; log p-hat(x) of :func:`particle_filter` against the exact Kalman value
(``tests.oracles.kalman_log_likelihood``) at 3 particle counts, ``--repeats`` independent runs
each (mean and sd of the error over repeats, averaged over sequences), and the 90% coverage of
the true latent path by smoothing draws (300 and 1000 particles, 200 draws) beside that of the
exact posterior (``tests.oracles.DenseLinearAlternator``) on the same data.

``lorenz``: the main job's forecasting task (``LorenzJobConfig`` defaults: 64 train / 16 val /
32 test trajectories of 200 steps, Dz = 8, MLPs 64x64, sigma_x = 0.3, sigma_z = 0.1,
alpha = 0.3), an Alternator trained by Eq. 12 for ``--budget-s`` seconds. On the held-out test
trajectories: imputation of 30% hidden steps (``hide_random_steps``, RMSE of the draws' mean,
CRPS, 90% coverage; 200 draws) with ``method="smc"`` and ``"ancestral"``, and a Kalman smoother
(``LinearGaussianSSM``, Dz = 6, 100 EM iterations on the training split); forecasts (context
60, horizon 20, stride 20, 200 draws) scored by CRPS with both methods; the SMC log-likelihood
of the test trajectories.

``spikes``: the main job's decoder (100 Poisson neurons driven by one Lorenz trajectory, the
state observed in training; ``fit(..., z_train=...)``'s alpha selection, 100 epochs or
``--budget-s`` per alpha candidate, ``calibrate=False``; cached in ``--state`` so that several
``--calibration`` settings score the same weights), then ``calibrate_supervised`` with
``--calibration`` (``none`` = the scales Eq. 12 trained with) on the main job's validation
windows; 90% coverage, RMSE and R^2 per coordinate of the latent draws (200) on the held-out
test span, ``method="smc"`` vs ``"ancestral"`` (``score_latents``); the filter's ESS
(fraction of N per step) and the 90% coverage of its weighted filtering quantiles.

``throughput``: particles x steps per second of the particle filter (N x B particles, T steps)
against ancestral sampling of the same number of trajectories (``Alternator.sample``), and of
backward simulation (S draws x N particles x T steps). Alternator(10, 3, hidden=(64,)).

One thread; prints one JSON record (last line) and writes it to ``--out``
(default ``benchmarks/results/smc-<item>-<device>.json``).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from benchmarks.common import emit, single_thread, synchronize, time_call


def _linear(args) -> dict:
    from alternators_ppl.models.smc import particle_filter, smoothing_paths
    from tests.oracles import DenseLinearAlternator, kalman_log_likelihood, linear_alternator

    torch.manual_seed(args.seed)
    model = linear_alternator(2, 2)
    batch, steps = 20, 50
    draw = model.sample(batch, steps)
    x, z_true = draw["x"], draw["z"]
    exact = kalman_log_likelihood(model, x)
    rows = []
    for particles in (10, 100, 1000):
        tic = time.perf_counter()
        reps = x.repeat(args.repeats, 1, 1)
        result = particle_filter(model, reps, num_particles=particles, seed=args.seed + particles)
        err = (result.log_marginal.reshape(args.repeats, batch) - exact).detach()
        # log of the mean of p-hat / p over repeats: exp(log p-hat) is unbiased, so this -> 0
        log_mean_ratio = torch.logsumexp(err, 0) - math.log(args.repeats)
        rows.append(
            {
                "particles": particles,
                "mean_error": err.mean().item(),
                "sd_error": err.std(0).mean().item(),
                "rmse": err.square().mean().sqrt().item(),
                "log_mean_ratio": log_mean_ratio.mean().item(),
                "seconds": time.perf_counter() - tic,
            }
        )
    # 90% coverage of the true path: SMC smoothing draws, and the exact posterior on the same data
    coverage = {}
    for particles in (300, 1000):
        paths = smoothing_paths(model, x, num_samples=200, num_particles=particles, seed=args.seed)
        lo, hi = paths.z.quantile(0.05, 0), paths.z.quantile(0.95, 0)
        coverage[f"smc_{particles}"] = ((z_true >= lo) & (z_true <= hi)).double().mean().item()
    half = 1.6448536269514722  # the 95% normal quantile
    inside = []
    for b in range(batch):
        oracle = DenseLinearAlternator(model, x[b], torch.ones_like(x[b], dtype=torch.bool))
        mean, var = oracle.condition(oracle.z_path())
        inside.append((z_true[b].reshape(-1) - mean).abs() <= half * var.sqrt())
    coverage["exact"] = torch.cat(inside).double().mean().item()
    return {
        "item": "linear",
        "sequences": batch,
        "steps": steps,
        "repeats": args.repeats,
        "exact_log_p_mean": exact.mean().item(),
        "log_p_hat": rows,
        "smoothing_coverage_90": coverage,
    }


def _lorenz(args) -> dict:
    from alternators_ppl import metrics
    from alternators_ppl.evaluation.scoring import (
        forecast_windows,
        hide_random_steps,
        score_forecast_draws,
        score_imputation,
    )
    from alternators_ppl.experiments.lorenz import LorenzJobConfig
    from alternators_ppl.experiments.registry import KalmanModel
    from alternators_ppl.inference import fit
    from alternators_ppl.models import Alternator

    cfg = LorenzJobConfig(seed=args.seed)
    task = cfg.forecasting_task()
    torch.manual_seed(args.seed)
    model = Alternator(
        3,
        cfg.latent_dim,
        sigma_x=cfg.sigma_x,
        sigma_z=cfg.sigma_z,
        alpha=cfg.alpha,
        hidden=(cfg.hidden, cfg.hidden),
    )
    tic = time.perf_counter()
    history = fit(
        model,
        task.x_train,
        x_val=task.x_val,
        epochs=cfg.epochs,
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        seed=args.seed,
        progress=False,
        callback=lambda epoch, h: time.perf_counter() - tic >= args.budget_s,
    )
    train_s = time.perf_counter() - tic
    x_test = torch.as_tensor(task.x_test)
    x_train = torch.as_tensor(task.x_train)
    record = {
        "item": "lorenz",
        "seed": args.seed,
        "epochs_trained": len(history.train_loss),
        "train_seconds": train_s,
        "particles": args.particles,
        "samples": cfg.num_samples,
    }

    gappy, mask = hide_random_steps(x_test, cfg.missing_fraction, cfg.seed + 1)
    imputation = {}
    for method in ("smc", "ancestral"):
        torch.manual_seed(args.seed)
        tic = time.perf_counter()
        draws = model.impute(
            gappy, None, cfg.num_samples, method=method, num_particles=args.particles
        )
        scores = score_imputation(draws, x_test, mask)
        imputation[method] = {**scores, "seconds": time.perf_counter() - tic}
    kalman = KalmanModel(3, latent_dim=6, em_iters=100)
    kalman.fit(x_train, seed=args.seed)
    with torch.no_grad():
        draws = kalman.impute(gappy, None, cfg.num_samples)
    imputation["kalman"] = score_imputation(draws, x_test, mask)
    record["imputation"] = imputation

    past, future = forecast_windows(x_test, cfg.context, cfg.horizon, stride=cfg.horizon)
    forecasts = {}
    for method in ("smc", "ancestral"):
        torch.manual_seed(args.seed)
        tic = time.perf_counter()
        draws = model.forecast(
            past, cfg.horizon, cfg.num_samples, method=method, num_particles=args.particles
        )
        scores = score_forecast_draws(draws, future)
        per_window = metrics.crps_empirical(draws, future, over=(1, 2))  # (windows,)
        forecasts[method] = {
            "crps_mean": scores["crps"].mean().item(),
            "crps_by_horizon": scores["crps"].tolist(),
            "coverage_90_mean": scores["coverage_90"].mean().item(),
            "per_window": per_window,
            "seconds": time.perf_counter() - tic,
        }
    diff = forecasts["smc"].pop("per_window") - forecasts["ancestral"].pop("per_window")
    forecasts["crps_diff_smc_minus_ancestral"] = {
        "mean": diff.mean().item(),
        "se": (diff.std() / math.sqrt(diff.numel())).item(),
    }
    record["forecast"] = forecasts
    ll = model.log_likelihood(x_test, num_particles=1000, seed=args.seed)
    record["test_log_likelihood_per_step"] = (ll.mean() / x_test.shape[1]).item()
    kll = kalman.log_likelihood(x_test)
    record["kalman_test_log_likelihood_per_step"] = (kll.mean() / x_test.shape[1]).item()
    return record


def _spikes_model(args, cfg, task):
    """The main job's decoder, trained by ``fit(..., z_train=...)`` (alpha selection) without
    noise calibration; cached in ``--state`` (weights, alpha) when given."""
    from alternators_ppl.experiments.lorenz import build_alternator
    from alternators_ppl.inference import fit

    model = build_alternator(cfg, cfg.num_neurons, 3, "cpu")
    if args.state and Path(args.state).exists():
        saved = torch.load(args.state, weights_only=False)
        model.load_state_dict(saved["state"])
        model.set_noise(alpha=saved["alpha"])
        return model.eval(), saved["train_seconds"]
    num_val = max(1, len(task.x_train) // 7)  # as the main job: the last windows validate
    torch.manual_seed(args.seed)
    tic = time.perf_counter()
    clock = {"start": tic}

    def budget(epoch, history):  # --budget-s per alpha candidate
        if epoch == 0:
            clock["start"] = time.perf_counter()
        return time.perf_counter() - clock["start"] >= args.budget_s

    fit(
        model,
        task.x_train[:-num_val],
        task.z_train[:-num_val],
        x_val=task.x_train[-num_val:],
        z_val=task.z_train[-num_val:],
        epochs=cfg.decoder_epochs,
        lr=cfg.lr,
        batch_size=cfg.decoder_batch_size,
        seed=args.seed,
        progress=False,
        callback=budget,
        calibrate=False,
    )
    seconds = time.perf_counter() - tic
    if args.state:
        state = {"state": model.state_dict(), "alpha": model.alpha_values[0]}
        torch.save({**state, "train_seconds": seconds}, args.state)
    return model, seconds


def _spikes(args) -> dict:
    from alternators_ppl.evaluation.scoring import score_latents
    from alternators_ppl.experiments.lorenz import LorenzJobConfig
    from alternators_ppl.inference import calibrate_supervised
    from alternators_ppl.models.smc import particle_filter

    cfg = LorenzJobConfig(seed=args.seed)
    task = cfg.spikes_task()
    model, train_seconds = _spikes_model(args, cfg, task)
    record = {"item": "spikes", "seed": args.seed, "train_seconds": train_seconds,
              "alpha_selected": model.alpha_values[0], "calibration": args.calibration}  # fmt: skip
    if args.calibration != "none":
        num_val = max(1, len(task.x_train) // 7)
        tic = time.perf_counter()
        report = calibrate_supervised(
            model, task.x_train[-num_val:], task.z_train[-num_val:],
            criterion=args.calibration, seed=args.seed,
        )  # fmt: skip
        report["seconds"] = time.perf_counter() - tic
        report["sigma_x_median"] = float(torch.tensor(report["sigma_x"]).median())
        record["calibration_report"] = {k: v for k, v in report.items() if k != "mle"}
    x_test = torch.as_tensor(task.x_test)
    z_true = torch.as_tensor(task.z_test[0])
    for method in ("smc", "ancestral"):
        torch.manual_seed(args.seed)
        tic = time.perf_counter()
        z = model.infer_latents(
            x_test, num_samples=cfg.num_samples, method=method, num_particles=args.particles
        )[:, 0, 1:]
        record[method] = {**score_latents(z, z_true), "seconds": time.perf_counter() - tic}
    # how degenerate the filter is: ESS of the incremental weights per step, as a fraction of N
    particles = args.particles
    result = particle_filter(model, x_test, num_particles=particles, seed=args.seed)
    ess = result.ess[0] / particles
    weights = result.log_weights[:, 0, 1:].exp()  # filtering coverage of z_t, weighted draws
    order = result.particles[:, 0, 1:].argsort(0)
    sorted_z = result.particles[:, 0, 1:].gather(0, order)
    cdf = weights.unsqueeze(-1).expand_as(sorted_z).gather(0, order).cumsum(0)
    lo = sorted_z.gather(0, (cdf < 0.05).sum(0, keepdim=True).clamp_max(particles - 1))[0]
    hi = sorted_z.gather(0, (cdf < 0.95).sum(0, keepdim=True).clamp_max(particles - 1))[0]
    inside = ((z_true >= lo) & (z_true <= hi)).double().mean(0)
    record[f"filter_{particles}"] = {
        "ess_fraction_median": ess.median().item(),
        "ess_fraction_p10": ess.quantile(0.1).item(),
        "resampled_fraction": result.resampled.double().mean().item(),
        "filtering_coverage_90": inside.tolist(),
        "log_likelihood_per_step": (result.log_marginal / x_test.shape[1]).item(),
    }
    return record


def _throughput(args) -> dict:
    from alternators_ppl.models import Alternator
    from alternators_ppl.models.smc import backward_simulation, particle_filter

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = Alternator(10, 3, hidden=(64,)).to(device)
    steps, particles, batch = args.steps, args.particles, args.batch
    x = model.sample(batch, steps)["x"]
    synchronize(device)
    pf = time_call(
        lambda: particle_filter(model, x, num_particles=particles, history=False),
        args.repeats,
        1,
        device,
    )
    anc = time_call(lambda: model.sample(particles * batch, steps), args.repeats, 1, device)
    short = x[:, : args.smooth_steps]
    result = particle_filter(model, short, num_particles=particles)
    ffbsi = time_call(
        lambda: backward_simulation(model, result, args.draws, "ffbsi"), args.repeats, 1, device
    )
    return {
        "item": "throughput",
        "device": str(device),
        "particles": particles,
        "sequences": batch,
        "steps": steps,
        "particle_filter": {
            **pf,
            "particle_steps_per_s": particles * batch * steps / pf["median_s"],
        },
        "ancestral_sample": {
            **anc,
            "trajectory_steps_per_s": particles * batch * steps / anc["median_s"],
        },
        "ffbsi": {
            **ffbsi,
            "draws": args.draws,
            "steps": args.smooth_steps,
            "draw_particle_steps_per_s": args.draws
            * particles
            * batch
            * args.smooth_steps
            / ffbsi["median_s"],
        },
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--item", choices=("linear", "lorenz", "spikes", "throughput"), required=True
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--budget-s", type=float, default=90.0)
    parser.add_argument("--particles", type=int, default=None, help="256; throughput: 1000")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--smooth-steps", type=int, default=100)
    parser.add_argument("--draws", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None)
    parser.add_argument(
        "--calibration",
        choices=("none", "joint_mle", "latent_crps", "latent_dss"),
        default="latent_dss",
        help="spikes: calibrate_supervised criterion",
    )
    parser.add_argument("--state", default=None, help="spikes: cache of the trained decoder")
    args = parser.parse_args(argv)
    single_thread()
    if args.item in ("lorenz", "spikes"):
        args.particles = args.particles or 256
    if args.item == "linear":
        record = _linear(args)
    elif args.item == "lorenz":
        record = _lorenz(args)
    elif args.item == "spikes":
        record = _spikes(args)
    else:
        args.particles = args.particles or 1000
        args.repeats = min(args.repeats, 3)
        record = _throughput(args)
    out = args.out or Path(__file__).parent / "results" / f"smc-{args.item}-{args.device}.json"
    emit(record, out)


if __name__ == "__main__":
    main()
