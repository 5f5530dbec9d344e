"""Why the Alternator loses Niño's short leads: one-step forecast RMSE against linear readouts
of its own latent memory (issue 14).

The Alternator's latent coordinate d obeys z_t = sqrt(alpha) g_d(x_t) + r_d z_{t-1} + sigma_z,d
eps with r_d = sqrt(1 - alpha - sigma_z,d^2): an exponential moving average (EMA) of g(x) at
rate r_d. This script fits, on the training windows, least-squares readouts of x_{t+1} from
EMAs of x_{1:t} at the Alternator's rates (``"given"``: one rate; ``"spread"``: the rates of
:func:`~alternators_ppl.experiments.registry.spread_sigma_z`), once on noise-free EMAs and once
on EMAs that carry the latent noise, as the networks see them in training (then scored on
noise-free EMAs, as the SMC forecast averages the noise out). Beside them: persistence, AR(p)
least squares, the Kalman filter and the trained Alternator (one network per timescale mode,
the mean of its SMC forecast). Scored: RMSE of the one-step forecast mean on the validation
windows and on the test problems (standardised units); nothing is fitted on either.

    python -m benchmarks.one_step [--series nino] [--epochs 200] [--seed 0] [--out PATH] [--quick]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from alternators_ppl.experiments.file_task import FileCompareConfig, load_split
from alternators_ppl.experiments.registry import AlternatorModel, KalmanModel, spread_sigma_z
from alternators_ppl.seeding import seed_everything
from benchmarks.common import emit, single_thread

__all__ = ["ema_features", "one_step_pairs", "least_squares_readout", "latent_rates"]


def ema_features(x: np.ndarray, rates, scale: float = 1.0, noise=None, rng=None) -> np.ndarray:
    """EMAs of x (N, T, D) at each rate r_k (K,), read after the last step: (N, K D).

    z_t = r_k z_{t-1} + scale x_t (+ noise_k eps_t when ``noise`` (K,) is given, drawn from
    ``rng``), z_0 = 0."""
    n, steps, dim = x.shape
    out = []
    for k, rate in enumerate(rates):
        z = np.zeros((n, dim))
        for t in range(steps):
            z = rate * z + scale * x[:, t]
            if noise is not None:
                z = z + noise[k] * rng.standard_normal(z.shape)
        out.append(z)
    return np.concatenate(out, axis=1)


def one_step_pairs(windows: np.ndarray, context: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (last ``context`` steps, next step) pair inside windows (N, T, D): contexts
    (N (T - context), context, D) and targets (N (T - context), D)."""
    starts = range(windows.shape[1] - context)
    past = np.concatenate([windows[:, s : s + context] for s in starts])
    return past, np.concatenate([windows[:, s + context] for s in starts])


def least_squares_readout(features: np.ndarray, targets: np.ndarray):
    """Least squares with an intercept, features (N, F) -> targets (N, D); returns predict."""
    design = np.c_[features, np.ones(len(features))]
    weights = np.linalg.lstsq(design, targets, rcond=None)[0]
    return lambda f: np.c_[f, np.ones(len(f))] @ weights


def latent_rates(mode: str, latent_dim: int, alpha: float, sigma_z: float):
    """(rates r_d, sigma_z,d) of the Alternator's latent coordinates under ``mode``."""
    scales = spread_sigma_z(latent_dim, alpha) if mode == "spread" else [sigma_z] * latent_dim
    if mode == "given":  # one rate: its coordinates are one feature block
        scales = scales[:1]
    return [math.sqrt(1 - alpha - s**2) for s in scales], scales


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", default="nino")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    single_thread()
    seed_everything(args.seed)
    cfg = FileCompareConfig(args.series)
    split = load_split(cfg)
    context = cfg.context
    past_train, next_train = one_step_pairs(split.x_train, context)
    test_past, test_future, _ = split.test_problems()
    spans = {
        "validation": (split.x_val[:, :context], split.x_val[:, context]),
        "test": (test_past, test_future[:, 0]),
    }
    keep = {
        name: np.isfinite(y).all(1) & np.isfinite(p).all((1, 2)) for name, (p, y) in spans.items()
    }
    spans = {name: (p[keep[name]], y[keep[name]]) for name, (p, y) in spans.items()}
    rmse = {name: {} for name in spans}

    def score(label: str, predict) -> None:
        for name, (past, future) in spans.items():
            rmse[name][label] = float(np.sqrt(np.mean((predict(past) - future) ** 2)))

    score("persistence", lambda past: past[:, -1])
    for lags in (1, 3, 12):
        readout = least_squares_readout(
            past_train[:, -lags:].reshape(len(past_train), -1), next_train
        )
        score(f"ar{lags}", lambda past, r=readout, p=lags: r(past[:, -p:].reshape(len(past), -1)))

    probe = AlternatorModel(split.x.shape[-1], calibrate=False)
    alpha, sigma_z, latent_dim = (
        probe.options["alpha"],
        probe.options["sigma_z"],
        probe.model.latent_dim,
    )
    rng = np.random.default_rng(args.seed)
    for mode in ("given", "spread"):
        rates, noise = latent_rates(mode, latent_dim, alpha, sigma_z)
        scale = math.sqrt(alpha)
        clean = least_squares_readout(ema_features(past_train, rates, scale), next_train)
        noisy = least_squares_readout(
            ema_features(past_train, rates, scale, noise, rng), next_train
        )
        score(f"ema-{mode}", lambda past, r=clean, k=rates, a=scale: r(ema_features(past, k, a)))
        score(
            f"ema-{mode}-noisy-fit",
            lambda past, r=noisy, k=rates, a=scale: r(ema_features(past, k, a)),
        )

    x_train, x_val = torch.as_tensor(split.x_train), torch.as_tensor(split.x_val)
    models = {"kalman": KalmanModel(split.x.shape[-1], em_iters=2 if args.quick else 100)}
    for mode in ("given", "spread"):
        models[f"alternator-{mode}"] = AlternatorModel(
            split.x.shape[-1], epochs=2 if args.quick else args.epochs, latent_timescales=mode
        )
    fit_s = {}
    for label, model in models.items():
        tic = time.perf_counter()
        model.fit(x_train, x_val, seed=args.seed)
        fit_s[label] = time.perf_counter() - tic

        def predict(past, m=model):
            with torch.no_grad():
                draws = m.forecast(torch.as_tensor(past), 1, 50 if args.quick else 500)
            return draws[:, :, 0].mean(0).numpy()

        score(label, predict)
    record = {
        "benchmark": "one_step",
        "series": args.series,
        "context": context,
        "alpha": alpha,
        "sigma_z_given": sigma_z,
        "latent_dim": latent_dim,
        "spread_rates": [
            round(r, 4) for r in latent_rates("spread", latent_dim, alpha, sigma_z)[0]
        ],
        "problems": {name: len(y) for name, (_, y) in spans.items()},
        "rmse_h1": rmse,
        "fit_s": fit_s,
        "seed": args.seed,
        "epochs": 2 if args.quick else args.epochs,
    }
    emit(record, args.out)
    return record


if __name__ == "__main__":
    main()
