"""alpha-Alternator vs Alternator on Lorenz with time-varying observation noise (issue 7).

Clean standardised Lorenz states (the main job's trajectories) are observed with noise of std
``--low`` except in two spans of every trajectory (steps 40-79 and 120-159) where it is
``--high``. Both models are trained on the train split; reported on the test split: forecast
CRPS (context 60, horizon 20, every 20th origin) against the noisy observations and against
the clean states, the alpha-Alternator's mean alpha_t inside and outside the noisy spans, and
the learned sign of w.

    python -m benchmarks.alpha_noise [--epochs 100] [--seed 0] [--ftn-input conditioned|generative]
        [--window 8] [--out PATH] [--quick]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from alternators_ppl.evaluation.scoring import forecast_windows
from alternators_ppl.experiments.lorenz import LorenzJobConfig, build_alternator
from alternators_ppl.inference import fit
from alternators_ppl.metrics import crps_empirical, interval_coverage
from alternators_ppl.seeding import seed_everything
from benchmarks.common import emit, single_thread

SPANS = ((40, 80), (120, 160))


def noisy_copy(states: np.ndarray, low: float, high: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """states (B, T, D) plus noise of std low, high inside SPANS; returns (x, noisy-step mask)."""
    noisy = np.zeros(states.shape[:2], dtype=bool)
    for begin, end in SPANS:
        noisy[:, begin:end] = True
    std = np.where(noisy, high, low)[..., None]
    return (states + std * rng.standard_normal(states.shape)).astype(np.float32), noisy


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--low", type=float, default=0.1)
    parser.add_argument("--high", type=float, default=1.0)
    parser.add_argument("--out")
    parser.add_argument("--ftn-input", choices=["conditioned", "generative"], default="conditioned")
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    single_thread()
    cfg = LorenzJobConfig.quick() if args.quick else LorenzJobConfig(seed=args.seed)
    epochs = 2 if args.quick else args.epochs
    clean = LorenzJobConfig(**{**cfg.__dict__, "noise_std": 0.0}).forecasting_task()
    rng = np.random.default_rng(args.seed + 100)
    x_train, _ = noisy_copy(clean.states_train, args.low, args.high, rng)
    x_val, _ = noisy_copy(clean.states_val, args.low, args.high, rng)
    x_test, noisy_test = noisy_copy(clean.states_test, args.low, args.high, rng)
    past, future = forecast_windows(torch.as_tensor(x_test), 60, 20, 20)
    _, future_clean = forecast_windows(torch.as_tensor(clean.states_test), 60, 20, 20)
    record = {
        "item": "alpha_noise",
        "seed": args.seed,
        "epochs": epochs,
        "ftn_input": args.ftn_input,
        "window": args.window,
        "low": args.low,
        "high": args.high,
        "models": {},
    }
    for name in ("alternator", "alpha-alternator"):
        seed_everything(args.seed)
        model = build_alternator(
            LorenzJobConfig(**{**cfg.__dict__, "model": name}), 3, cfg.latent_dim, "cpu"
        )
        model.ftn_input = args.ftn_input
        if name == "alpha-alternator":
            model.alpha_window = args.window
        tic = time.perf_counter()
        fit(
            model,
            x_train,
            x_val=x_val,
            epochs=epochs,
            lr=cfg.lr,
            batch_size=cfg.batch_size,
            seed=args.seed,
            progress=False,
        )
        train_s = time.perf_counter() - tic
        draws = model.forecast(past, 20, cfg.num_samples)
        result = {
            "train_s": train_s,
            "crps_noisy_truth": crps_empirical(draws, future, over=(0, 1, 2)).item(),
            "crps_clean_truth": crps_empirical(draws, future_clean, over=(0, 1, 2)).item(),
            "coverage_90": interval_coverage(draws, future, 0.9, over=(0, 1, 2)).item(),
        }
        if name == "alpha-alternator":
            with torch.no_grad():
                alpha = model._alpha_for(torch.as_tensor(x_test))[..., 0].numpy()
            result.update(
                w=model.w.item(),
                b=model.b.item(),
                learned_sign=model.learned_sign,
                alpha_noisy_spans=float(alpha[noisy_test].mean()),
                alpha_quiet_steps=float(alpha[~noisy_test].mean()),
            )
        record["models"][name] = result
    crps = {k: v["crps_noisy_truth"] for k, v in record["models"].items()}
    record["crps_ratio_alpha_over_base"] = crps["alpha-alternator"] / crps["alternator"]
    emit(record, args.out)


if __name__ == "__main__":
    main()
