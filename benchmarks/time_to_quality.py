"""Item 3: training wall time until a held-out quality target is reached, by loss path.

``forecast``: the main job's forecaster on noisy Lorenz; target: mean validation CRPS over
horizons 1..20 at or below ``--target`` (default 0.23). ``spikes``: the main job's spike decoder;
target: validation R^2 >= ``--target`` (default 0.97) on every coordinate. The clock counts
training epochs only (``History.epoch_seconds``); the checks run between epochs, off the clock,
on validation data. The test-split score of the final model is reported too.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import emit, single_thread


def loss_for(path: str):
    from alternators_ppl.inference import trace_loss

    if path == "trace":
        return lambda model, x, mask, z: trace_loss(model, x, mask, z)
    return lambda model, x, mask, z: model.loss(x, mask, z, parallel=path == "parallel")


def forecast_run(path, target, budget_s, every, device):
    from alternators_ppl.evaluation.scoring import forecast_windows
    from alternators_ppl.experiments.lorenz import LorenzJobConfig, build_alternator
    from alternators_ppl.inference import fit
    from alternators_ppl.metrics import crps_empirical

    cfg = LorenzJobConfig()
    task = cfg.forecasting_task()
    model = build_alternator(cfg, 3, cfg.latent_dim, device)

    def score(x):
        past, future = forecast_windows(torch.as_tensor(x, device=device), 60, 20, 20)
        return crps_empirical(model.forecast(past, 20, 50), future, over=(0, 1, 2)).item()

    state = {"reached": None}

    def check(epoch, history):
        if epoch % every == 0 and score(task.x_val) <= target:
            state["reached"] = (epoch, sum(history.epoch_seconds))
            return True
        return sum(history.epoch_seconds) > budget_s

    fit(
        model,
        task.x_train,
        epochs=cfg.epochs,
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        seed=0,
        progress=False,
        callback=check,
        loss_fn=loss_for(path),
    )
    return state["reached"], {"test_crps": score(task.x_test)}


def spikes_run(path, target, budget_s, every, device):
    from alternators_ppl.experiments.lorenz import LorenzJobConfig, build_alternator
    from alternators_ppl.inference import fit
    from alternators_ppl.metrics import r2

    cfg = LorenzJobConfig()
    task = cfg.spikes_task()
    num_val = len(task.x_train) // 7
    x_val = task.x_train[-num_val:].reshape(1, -1, task.x_train.shape[-1])
    z_val = task.z_train[-num_val:].reshape(-1, 3)
    model = build_alternator(cfg, cfg.num_neurons, 3, device)

    def score(x, z):
        mean = model.infer_latents(x, num_samples=50)[:, 0, 1:].mean(0)
        return r2(mean, torch.as_tensor(z, device=device), over=(0,)).min().item()

    state = {"reached": None}

    def check(epoch, history):
        if epoch % every == 0 and score(x_val, z_val) >= target:
            state["reached"] = (epoch, sum(history.epoch_seconds))
            return True
        return sum(history.epoch_seconds) > budget_s

    fit(
        model,
        task.x_train[:-num_val],
        task.z_train[:-num_val],
        epochs=cfg.decoder_epochs,
        lr=cfg.lr,
        batch_size=cfg.decoder_batch_size,
        seed=0,
        progress=False,
        callback=check,
        loss_fn=loss_for(path),
    )
    return state["reached"], {"test_min_r2": score(task.x_test, task.z_test[0])}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task", choices=["forecast", "spikes"], required=True)
    parser.add_argument("--path", choices=["trace", "sequential", "parallel"], required=True)
    parser.add_argument("--target", type=float)
    parser.add_argument("--budget-s", type=float, default=300.0)
    parser.add_argument("--every", type=int, default=5, help="check the target every N epochs")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    single_thread()
    device = torch.device(args.device)
    target = args.target if args.target is not None else (0.23 if args.task == "forecast" else 0.97)
    run = forecast_run if args.task == "forecast" else spikes_run
    reached, final = run(args.path, target, args.budget_s, args.every, device)
    emit(
        {
            "item": "time_to_quality",
            "task": args.task,
            "path": args.path,
            "target": target,
            "device": str(device),
            "reached": reached is not None,
            "epochs": None if reached is None else reached[0],
            "train_s": None if reached is None else reached[1],
            **final,
        }
    )


if __name__ == "__main__":
    main()
