"""Run the benchmark suite: every configuration in a fresh process; JSON and a Markdown report.

    python -m benchmarks.run [--device cpu|cuda] [--items 1,2,3,4,5] [--quick] [--out PATH]

Items: 1 loss + backward by path and T; 2 sampling throughput; 3 time to quality; 4 scaling in
T and B; 5 peak memory at T = 10,000. Ratios are taken between configurations of one run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from alternators_ppl.runs import write_json

PATHS = ("trace", "sequential", "parallel", "jax")


def run_one(module: str, *args) -> dict:
    """Run ``python -m benchmarks.<module> args`` in a fresh process; its last stdout line."""
    command = [sys.executable, "-m", f"benchmarks.{module}", *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).parents[1])
    if done.returncode != 0:
        return {
            "error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed",
            "command": " ".join(command[1:]),
        }
    return json.loads(done.stdout.strip().splitlines()[-1])


def plan(items: set[int], device: str, quick: bool, budget_s: float) -> list[tuple[str, list]]:
    """The (module, arguments) list of every configuration to run."""
    jobs = []

    def loss_step(path: str, steps: int, repeats: int, batch: int | None = None) -> None:
        extra = [] if batch is None else ["--batch", batch]
        arguments = ["--path", path, "--steps", steps, *extra, "--repeats", repeats]
        jobs.append(("loss_step", [*arguments, "--device", device]))

    steps_1 = (50, 200) if quick else (100, 1000, 10000)
    if 1 in items or 5 in items:
        for steps in steps_1:
            for path in PATHS:
                slow = path in ("trace", "sequential") and steps >= 10000
                loss_step(path, steps, 1 if quick or slow else 5)
    if 2 in items:
        size = (50, 50) if quick else (1000, 1000)
        jobs.append(("sampling", ["--samples", size[0], "--steps", size[1], "--device", device]))
    if 3 in items:
        budget = 5 if quick else budget_s
        for task, paths in (
            ("forecast", ("parallel", "sequential", "trace")),
            ("spikes", ("parallel", "trace")),
        ):
            for path in paths:
                jobs.append(
                    (
                        "time_to_quality",
                        ["--task", task, "--path", path, "--budget-s", budget, "--device", device],
                    )
                )
    if 4 in items:
        for steps in (30, 100) if quick else (100, 300, 1000, 3000, 10000):
            for path in ("sequential", "parallel"):
                loss_step(path, steps, 1 if quick else 3)
        for batch in (8, 32) if quick else (8, 32, 128, 512):
            for path in ("sequential", "parallel"):
                loss_step(path, 100 if quick else 1000, 1 if quick else 3, batch)
    return jobs


def report(results: list[dict]) -> str:
    """Markdown tables of the results (medians; ratios within this run)."""
    lines = []
    loss = [r for r in results if r.get("item") == "loss_step" and r.get("batch") == 32]
    by = {(r["path"], r["steps"]): r for r in loss}
    steps_seen = sorted({s for _, s in by})
    if by:
        lines += [
            "| T | "
            + " | ".join(f"{p} (ms)" for p in PATHS)
            + " | seq/par | trace/par | parallel peak memory (MiB) |",
            "|---|" + "---|" * (len(PATHS) + 3),
        ]
        for steps in steps_seen:
            cells = [by.get((p, steps)) for p in PATHS]
            ms = [f"{c['median_s'] * 1e3:.1f}" if c else "-" for c in cells]
            par = by.get(("parallel", steps))
            ratio = [
                f"{by[(p, steps)]['median_s'] / par['median_s']:.1f}x"
                if par and (p, steps) in by
                else "-"
                for p in ("sequential", "trace")
            ]
            mem = f"{(par['peak_rss_bytes'] - par['rss_before_bytes']) / 2**20:.0f}" if par else "-"
            lines.append(f"| {steps} | " + " | ".join(ms) + f" | {ratio[0]} | {ratio[1]} | {mem} |")
    for r in results:
        if r.get("item") == "sampling":
            lines.append(
                f"\nsampling {r['samples']} x {r['steps']}: {r['median_s']:.2f} s "
                f"({r['trajectory_steps_per_s']:.3g} trajectory-steps/s)"
            )
    ttq = [r for r in results if r.get("item") == "time_to_quality"]
    if ttq:
        lines += [
            "",
            "| task | path | target | reached | epochs | train s | final test |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in ttq:
            final = r.get("test_crps", r.get("test_min_r2"))
            train = f"{r['train_s']:.1f}" if r["train_s"] is not None else "-"
            lines.append(
                f"| {r['task']} | {r['path']} | {r['target']} | {r['reached']} | "
                f"{r['epochs']} | {train} | {final:.3f} |"
            )
    scaling = [r for r in results if r.get("item") == "loss_step" and r.get("batch") != 32]
    if scaling:
        lines += ["", "| B | T | path | ms |", "|---|---|---|---|"]
        lines += [
            f"| {r['batch']} | {r['steps']} | {r['path']} | {r['median_s'] * 1e3:.1f} |"
            for r in scaling
        ]
    errors = [r for r in results if "error" in r]
    lines += [f"\nerror in `{r['command']}`: {r['error']}" for r in errors]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--items", default="1,2,3,4,5")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the plumbing")
    parser.add_argument("--out", help="JSON path (default benchmarks/results/<device>.json)")
    parser.add_argument("--budget-s", type=float, default=300.0, help="item 3 budget per path")
    args = parser.parse_args(argv)
    items = {int(i) for i in args.items.split(",")}
    out = Path(args.out or Path(__file__).parent / "results" / f"{args.device}.json")
    header = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "quick": args.quick,
    }
    results = []
    for module, job_args in plan(items, args.device, args.quick, args.budget_s):
        result = run_one(module, *job_args)
        print(json.dumps(result), flush=True)
        results.append(result)
        write_json(out, {**header, "results": results})  # a killed run keeps what it measured
    print(report(results))
    print(f"results: {out}")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
