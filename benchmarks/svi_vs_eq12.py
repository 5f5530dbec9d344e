"""Held-out Lorenz forecasts: Eq. 12 training vs SVI posterior forecasts with the same networks.

    python -m benchmarks.svi_vs_eq12 [--epochs 200] [--svi-epochs 40] [--joint] [--globals]
                                     [--noise-std 0.3] [--quick] [--out PATH]

1. An Alternator is trained by Eq. 12 (``fit``) with the main job's settings
   (``LorenzJobConfig`` defaults: 64 train / 16 val / 32 test trajectories of 200 steps, Dz = 8,
   MLPs 64x64, sigma_x = 0.3, sigma_z = 0.1, alpha = 0.3, lr 1e-2, batch 16).
2. ``eq12``: ``model.forecast`` (the conditioned recursion on the context, then free-running).
3. ``svi_fixed``: a :class:`SmoothingGuide` trained by SVI (``Trace_ELBO``) with the networks
   fixed, on context-length windows cut from the training trajectories; forecasts by
   :func:`posterior_forecast` (z_Tc from the guide, then the model's recursion).
4. ``svi_joint`` (with ``--joint``): guide and networks trained together by SVI, starting from
   the Eq. 12 weights.
5. ``svi_globals`` (with ``--globals``): sigma_x, sigma_z, alpha learned as global sites
   (:class:`HyperpriorAlternator`, ``AutoNormal`` + smoothing guide, networks fixed at the
   Eq. 12 weights, started at the configured values); forecasts draw the globals with the
   path. The record gives the learned values.

``--noise-std`` sets the observation noise of the data (the model keeps sigma_x = 0.3, the
main job's value, which matches the default noise 0.3): with a noise level the configured
sigma_x does not match, Eq. 12 cannot correct it and learning the globals can.

All are scored on the test split (context 60, horizon 20, stride 20, 200 draws) by
``score_forecasts``: CRPS and 50/90% coverage per horizon; the summary adds the mean CRPS
difference to Eq. 12, paired over forecast windows (with its standard error), and the mean
absolute coverage error over horizons, and ``state_spread``: the std over draws of
sqrt(1 - sigma_x^2) f(z_Tc), the part of the 1-step forecast spread that comes from the latent
state (the rest is sigma_x). Prints one JSON record (last line).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import time

import torch

from benchmarks.common import emit, single_thread


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200, help="Eq. 12 epochs")
    parser.add_argument("--svi-epochs", type=int, default=40)
    parser.add_argument("--svi-lr", type=float, default=5e-3)
    parser.add_argument("--svi-batch", type=int, default=32)
    parser.add_argument("--window-stride", type=int, default=20)
    parser.add_argument("--rnn-hidden", type=int, default=64)
    parser.add_argument("--joint", action="store_true", help="also train networks by SVI")
    parser.add_argument("--globals", action="store_true", help="also learn sigma_x, sigma_z, alpha")
    parser.add_argument("--noise-std", type=float, default=None, help="data noise (default 0.3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    parser.add_argument("--out", default=None, help="also write the JSON record here")
    args = parser.parse_args(argv)
    single_thread()

    from alternators_ppl.evaluation.scoring import forecast_windows, score_forecasts
    from alternators_ppl.experiments.lorenz import LorenzJobConfig
    from alternators_ppl.inference import fit
    from alternators_ppl.inference.guides import SmoothingGuide
    from alternators_ppl.inference.hyperprior_guide import HyperpriorGuide
    from alternators_ppl.inference.svi import fit_svi, posterior_forecast, posterior_latents
    from alternators_ppl.metrics import crps_empirical
    from alternators_ppl.models import Alternator, HyperpriorAlternator
    from alternators_ppl.seeding import seed_everything

    cfg = LorenzJobConfig.quick() if args.quick else LorenzJobConfig()
    if args.noise_std is not None:
        cfg = dataclasses.replace(cfg, noise_std=args.noise_std)
    epochs = 2 if args.quick else args.epochs
    svi_epochs = 1 if args.quick else args.svi_epochs
    task = cfg.forecasting_task()
    seed_everything(args.seed)  # the networks' initial weights too
    model = Alternator(
        3,
        cfg.latent_dim,
        sigma_x=cfg.sigma_x,
        sigma_z=cfg.sigma_z,
        alpha=cfg.alpha,
        hidden=(cfg.hidden, cfg.hidden),
    )
    tic = time.perf_counter()
    fit(
        model,
        task.x_train,
        x_val=task.x_val,
        epochs=epochs,
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        seed=args.seed,
        progress=False,
        calibrate=False,  # the paper's Eq. 12 with fixed scales: what SVI is compared against
    )
    timing = {"eq12_train_s": time.perf_counter() - tic}

    x_train, x_val, x_test = (torch.as_tensor(a) for a in (task.x_train, task.x_val, task.x_test))
    past, future = forecast_windows(x_test, cfg.context, cfg.horizon, stride=cfg.horizon)
    # the guide is trained on windows as long as the forecast contexts (each a fresh sequence)
    train_windows = forecast_windows(x_train, cfg.context, 1, args.window_stride)[0]
    val_windows = forecast_windows(x_val, cfg.context, 1, cfg.context)[0]

    results, per_problem, state_spread, learned = {}, {}, {}, {}

    def score(name: str, draws: torch.Tensor, net: Alternator, z_last: torch.Tensor) -> None:
        results[name] = score_forecasts(draws, future, past, x_train)
        per_problem[name] = crps_empirical(draws, future, over=(1, 2))  # (N,) per window
        with torch.no_grad():  # spread of the 1-step mean over draws of z_Tc (vs sigma_x)
            state_spread[name] = net.x_loc(z_last).std(0).mean().item()

    torch.manual_seed(args.seed + 1)
    z_last = model.infer_latents(past, None, cfg.num_samples)[:, :, -1]
    torch.manual_seed(args.seed + 1)
    score("eq12", model.forecast(past, cfg.horizon, cfg.num_samples), model, z_last)

    def svi_run(name: str, net: Alternator, train_networks: bool, learn_globals=False) -> None:
        guide = SmoothingGuide(net, rnn_hidden=args.rnn_hidden)
        program = net
        if learn_globals:
            program = HyperpriorAlternator(net)
            guide = HyperpriorGuide(program, guide, globals_guide="normal")
        tic = time.perf_counter()
        history = fit_svi(
            program,
            guide,
            train_windows,
            epochs=svi_epochs,
            lr=args.svi_lr,
            lr_min=args.svi_lr / 10,
            batch_size=args.svi_batch,
            seed=args.seed,
            x_val=val_windows,
            train_networks=train_networks,
        )
        timing[f"{name}_train_s"] = time.perf_counter() - tic
        timing[f"{name}_val_neg_elbo_per_step"] = history.val_loss
        torch.manual_seed(args.seed + 1)
        z_last = posterior_latents(guide, past, None, cfg.num_samples)[:, :, -1]
        torch.manual_seed(args.seed + 1)
        draws = posterior_forecast(program, guide, past, cfg.horizon, cfg.num_samples)
        if learn_globals:
            learned[name] = guide.point_estimates()
            with torch.no_grad(), net.hyperparameters(**learned[name]):
                score(name, draws, net, z_last)
        else:
            score(name, draws, net, z_last)

    svi_run("svi_fixed", model, train_networks=False)
    if args.joint:
        svi_run("svi_joint", copy.deepcopy(model), train_networks=True)
    if args.globals:
        svi_run("svi_globals", copy.deepcopy(model), train_networks=False, learn_globals=True)

    def mean(values) -> float:
        return sum(values) / len(values)

    summary = {}
    for name, r in results.items():
        diff = per_problem[name] - per_problem["eq12"]  # paired over forecast windows
        summary[name] = {
            "crps_mean": mean(r["crps"]),
            "crps_minus_eq12": diff.mean().item(),
            "crps_minus_eq12_se": (diff.std() / len(diff) ** 0.5).item() if name != "eq12" else 0.0,
            "coverage_90_mean": mean(r["coverage_90"]),
            "coverage_90_abs_error": mean([abs(c - 0.9) for c in r["coverage_90"]]),
            "coverage_50_mean": mean(r["coverage_50"]),
            "coverage_50_abs_error": mean([abs(c - 0.5) for c in r["coverage_50"]]),
            "state_spread": state_spread[name],
        }
    record = {
        "item": "svi_vs_eq12",
        "quick": args.quick,
        "seed": args.seed,
        "eq12_epochs": epochs,
        "svi_epochs": svi_epochs,
        "train_windows": len(train_windows),
        "noise_std": cfg.noise_std,
        "learned_globals": learned,
        "summary": summary,
        "per_horizon": {
            name: {k: r[k] for k in ("crps", "coverage_90", "coverage_50", "width_90")}
            for name, r in results.items()
        },
        "timing": timing,
    }
    emit(record, args.out)
    return record


if __name__ == "__main__":
    main()
