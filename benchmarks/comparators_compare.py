"""The comparators against the Alternator and Kalman in ``compare``'s harness, one seed.

    python -m benchmarks.comparators_compare --task lorenz --out benchmarks/results/X.json

``compare``'s own scoring (per-horizon CRPS, RMSE, 90% coverage, imputation, training and
sampling time) with a smaller test set than its default (8 held-out trajectories, 100 draws)
so that the diffusion model's reverse chains fit in minutes on one CPU thread. Every model
trains at most ``--epochs`` epochs and at most ``--budget-s`` seconds (a wall-clock cap).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time

from benchmarks.common import emit, single_thread

MODELS = ("alternator", "kalman", "mamba", "neural-ode", "diffusion")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="lorenz", choices=("lorenz", "linear"))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--budget-s", type=float, default=60.0)
    parser.add_argument("--num-test", type=int, default=8)
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="compare's smoke settings")
    parser.add_argument("--out", help="JSON file (default: print only)")
    args = parser.parse_args(argv)
    single_thread()
    from alternators_ppl.experiments.compare import (
        CompareConfig,
        format_comparison,
        run_comparison,
    )

    settings = dict(
        task=args.task,
        models=tuple(args.models.split(",")),
        seeds=args.seeds,
        device=args.device,
        epochs=args.epochs,
        budget_s=args.budget_s,
        num_test=args.num_test,
        num_samples=args.num_samples,
    )
    cfg = CompareConfig.quick(**settings) if args.quick else CompareConfig(**settings)
    runs = tempfile.mkdtemp()
    tic = time.perf_counter()
    try:
        _, results = run_comparison(cfg, runs, "comparators")
    finally:
        shutil.rmtree(runs, ignore_errors=True)
    results["wall_s"] = time.perf_counter() - tic
    results["table"] = format_comparison(results)
    if args.out:
        from alternators_ppl.runs import write_json

        write_json(args.out, results)
    emit(results)


if __name__ == "__main__":
    main()
