"""Noise calibration of supervised fits on the paper's Lorenz-spikes task (issues 13 and 15).

One instance (``--seed``): the ``supervised="auto"`` path of ``fit`` with the alpha grid cut to
``--alphas`` (default 0.9, the alpha that ``auto`` picked on instances 0 and 1 in
docs/decoding.md; pass ``0.3,0.6,0.9`` for the full selection), 100 epochs, ``calibrate=False``;
then the same weights scored with the noise Eq. 12 trained with (``none``) and after
:func:`~alternators_ppl.inference.calibrate_supervised` (``joint_mle``, ``latent_crps``) on the
validation span that ``auto`` held out. Held-out R^2 (mean of ``--draws`` draws, default 20),
RMSE and 90% coverage per coordinate of ``infer_latents`` with ``method="ancestral"`` and
``"smc"`` (256 particles).

    python -m benchmarks.supervised_calibration --seed 0 [--alphas 0.9] [--draws 20]
        [--state PATH] [--out PATH]

One thread; prints one JSON record (last line) and writes it to ``--out`` (default
``benchmarks/results/supervised-calibration-<seed>.json``).
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch

from benchmarks.common import emit, single_thread


def _scores(draws, truth) -> dict:
    mean = draws.mean(0)
    r2 = 1 - ((mean - truth) ** 2).sum(0) / ((truth - truth.mean(0)) ** 2).sum(0)
    lo, hi = draws.quantile(0.05, dim=0), draws.quantile(0.95, dim=0)
    cover = ((truth >= lo) & (truth <= hi)).double().mean(0)
    rmse = (mean - truth).square().mean(0).sqrt()
    return {"r2": r2.tolist(), "rmse": rmse.tolist(), "coverage_90": cover.tolist()}


def main(argv=None) -> None:
    from alternators_ppl.data.paper_spikes import paper_spikes_task
    from alternators_ppl.inference import calibrate_supervised, fit
    from alternators_ppl.inference.supervised import fit_auto, split_validation
    from alternators_ppl.models import Alternator

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--alphas", default="0.9")
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--out", default=None)
    parser.add_argument("--calibrations", default="none,joint_mle,latent_crps,latent_dss")
    parser.add_argument("--state", default=None, help="cache of the trained weights and alpha")
    args = parser.parse_args(argv)
    single_thread()
    task = paper_spikes_task(args.seed)
    x, z = torch.as_tensor(task.x_train), torch.as_tensor(task.z_train)
    mask = torch.ones_like(x, dtype=torch.bool)
    torch.manual_seed(args.seed)
    model = Alternator(task.obs_dim, 3)
    tic = time.perf_counter()
    grid = tuple(float(a) for a in args.alphas.split(","))
    if args.state and Path(args.state).exists():
        record = torch.load(args.state, weights_only=False)
        model.set_noise(alpha=record.pop("alpha"))
        model.load_state_dict(record.pop("state"))
    else:
        history = fit_auto(fit, model, x, z, mask, grid=grid, calibrate=False,
                           epochs=args.epochs, seed=args.seed, progress=False)  # fmt: skip
        record = {"seed": args.seed, "alpha_scores": history.alpha_scores,
                  "train_seconds": time.perf_counter() - tic}  # fmt: skip
        if args.state:
            torch.save({**record, "alpha": history.alpha, "state": model.state_dict()}, args.state)
    record["alpha"] = model.alpha_values[0]
    _, (x_val, z_val, mask_val) = split_validation(x, z, mask)
    x_test, z_test = torch.as_tensor(task.x_test), torch.as_tensor(task.z_test[0])
    trained = copy.deepcopy(model.state_dict()), model.alpha_values[0]
    for calibration in args.calibrations.split(","):
        model.set_noise(sigma_x=0.3, sigma_z=0.1, alpha=trained[1])  # before: no sigma_x buffer
        model.load_state_dict(trained[0])
        row = {}
        if calibration != "none":
            tic = time.perf_counter()
            report = calibrate_supervised(model, x_val, z_val, mask_val, criterion=calibration,
                                          seed=args.seed)  # fmt: skip
            row["report"] = {
                "sigma_x_median": float(torch.tensor(report["sigma_x"]).median()),
                "sigma_z": report["sigma_z"], "alpha": report["alpha"],
                "c_x": report["c_x"], "c_z": report["c_z"],
                "seconds": time.perf_counter() - tic,
            }  # fmt: skip
        for method in ("ancestral", "smc"):
            torch.manual_seed(args.seed)
            extra = {"num_particles": 256} if method == "smc" else {}
            draws = model.infer_latents(x_test, num_samples=args.draws, method=method, **extra)
            row[method] = _scores(draws[:, 0, 1:], z_test)
        record[calibration] = row
    out = args.out or Path(__file__).parent / "results" / f"supervised-calibration-{args.seed}.json"
    emit(record, out)


if __name__ == "__main__":
    main()
