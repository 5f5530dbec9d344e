"""Every model of ``compare`` on Lorenz, the linear-Gaussian task and the Nino indices, 3 seeds,
and ONE table across the data sets (docs/baselines.md).

    python -m benchmarks.baselines run lorenz --name base-lorenz
    python -m benchmarks.baselines run linear --name base-linear
    python -m benchmarks.baselines run nino --name base-nino
    python -m benchmarks.baselines table runs/base-lorenz runs/base-linear runs/base-nino

``run`` is ``compare``'s harness (:func:`run_comparison`, or :func:`run_file_comparison` for
``nino``) with every model, writing the usual run folder under ``--runs-dir``; the simulated
tasks use a smaller test set than compare's default (``--num-test`` 8 held-out trajectories,
``--num-samples`` 100 draws, ``--throughput-draws`` 20 free-running draws timed) so that the
diffusion model's reverse chains fit in minutes on one CPU thread. ``table`` reads the run
folders' comparison.json and prints mean (sd) over seeds of the mean CRPS over horizons, the
mean 90% coverage, the mean RMSE and the training seconds, one column group per data set.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from benchmarks.common import single_thread

MODELS = (
    "alternator",
    "kalman",
    "dmm",
    "persistence",
    "climatology",
    "mamba",
    "neural-ode",
    "diffusion",
)
METRICS = (("crps", "CRPS", 3), ("coverage_90", "cover90", 2), ("rmse", "RMSE", 3))


def _run(args) -> None:
    single_thread()
    command = "python -m benchmarks.baselines " + " ".join(sys.argv[1:])
    models = tuple(args.models.split(","))
    common = dict(models=models, seeds=args.seeds, budget_s=args.budget_s, epochs=args.epochs)
    if args.task == "nino":
        from alternators_ppl.experiments.file_task import (
            FileCompareConfig,
            format_file_comparison,
            run_file_comparison,
        )

        cfg = FileCompareConfig(
            "nino",
            num_samples=args.num_samples,
            eval_stride=args.eval_stride,
            first_seed=args.first_seed,
            **common,
        )
        run, results = run_file_comparison(cfg, args.runs_dir, args.name, False, command)
        print(format_file_comparison(results))
    else:
        from alternators_ppl.experiments.compare import (
            CompareConfig,
            format_comparison,
            run_comparison,
        )

        cfg = CompareConfig(
            task=args.task,
            first_seed=args.first_seed,
            num_test=args.num_test,
            num_samples=args.num_samples,
            throughput_draws=args.throughput_draws,
            **common,
        )
        run, results = run_comparison(cfg, args.runs_dir, args.name, False, command)
        print(format_comparison(results))
    print(f"run folder: {run}")


def _cell(per_seed: list[dict], key: str, digits: int) -> str:
    """mean (sd) over the seeds that ran of a metric averaged over horizons."""
    values = []
    for r in per_seed:
        if "failed" in r or r.get(key) is None:
            continue
        v = r[key]
        if isinstance(v, list):
            v = statistics.fmean(x for x in v if x is not None)
        values.append(v)
    if not values:
        return "failed"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} ({sd:.{digits}f})"


def baseline_table(runs: list[Path]) -> str:
    """One Markdown table: rows models, per data set mean CRPS, cover90, RMSE, train s.

    Run folders of the same task (e.g. one per seed) are pooled: their seeds are concatenated.
    """
    pooled: dict[str, dict] = {}
    for folder in runs:
        res = json.loads((Path(folder) / "comparison.json").read_text())
        into = pooled.setdefault(res["config"]["task"], {})
        for model, per_seed in res["per_seed"].items():
            into.setdefault(model, []).extend(per_seed)
    columns = METRICS + (("train_s", "train s", 1),)
    head = ["model"] + [f"{n} {label}" for n in pooled for _, label, _ in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    models = [m for m in MODELS if any(m in per_model for per_model in pooled.values())]
    for model in models:
        row = [model]
        for per_model in pooled.values():
            per_seed = per_model.get(model)
            for key, _, digits in columns:
                row.append("-" if per_seed is None else _cell(per_seed, key, digits))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def horizon_table(runs: list[Path]) -> str:
    """Per data set, per model: CRPS, RMSE and 90% coverage at a few horizons, mean (sd)
    over the pooled seeds (run folders of the same task pooled as in :func:`baseline_table`)."""
    pooled: dict[str, dict] = {}
    horizons: dict[str, int] = {}
    for folder in runs:
        res = json.loads((Path(folder) / "comparison.json").read_text())
        horizons[res["config"]["task"]] = len(res["horizon"])
        into = pooled.setdefault(res["config"]["task"], {})
        for model, per_seed in res["per_seed"].items():
            into.setdefault(model, []).extend(per_seed)
    out = []
    for task, per_model in pooled.items():
        leads = sorted({h for h in (1, 3, 5, 6, 10, 12, 20) if h <= horizons[task]})
        head = ["model"] + [f"{label} h={h}" for _, label, _ in METRICS for h in leads]
        out += [f"{task}:", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for model in [m for m in MODELS if m in per_model]:
            row = [model]
            for key, _, digits in METRICS:
                for h in leads:
                    at = [
                        {key: r[key][h - 1]} if "failed" not in r else r for r in per_model[model]
                    ]
                    row.append(_cell(at, key, digits))
            out.append("| " + " | ".join(row) + " |")
        out.append("")
    return "\n".join(out).rstrip()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    run = sub.add_parser("run", help="one data set, every model, 3 seeds")
    run.add_argument("task", choices=("lorenz", "linear", "nino"))
    run.add_argument("--name", required=True)
    run.add_argument("--runs-dir", default="runs")
    run.add_argument("--models", default=",".join(MODELS))
    run.add_argument("--seeds", type=int, default=3)
    run.add_argument("--first-seed", type=int, default=0, help="first seed")
    run.add_argument("--eval-stride", type=int, default=1, help="nino: step between origins")
    run.add_argument("--budget-s", type=float, default=60.0)
    run.add_argument("--epochs", type=int, default=200)
    run.add_argument("--num-test", type=int, default=8)
    run.add_argument("--num-samples", type=int, default=100)
    run.add_argument("--throughput-draws", type=int, default=20)
    table = sub.add_parser("table", help="one table from run folders")
    table.add_argument("runs", nargs="+", type=Path)
    table.add_argument("--per-horizon", action="store_true", help="CRPS/RMSE/cover90 by lead")
    args = parser.parse_args(argv)
    if args.what == "run":
        _run(args)
    else:
        print(horizon_table(args.runs) if args.per_horizon else baseline_table(args.runs))


if __name__ == "__main__":
    main()
