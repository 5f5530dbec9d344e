"""The benchmark suite runs end to end with its smoke flags and writes JSON."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_runner_quick_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--items", "2", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(out.read_text())["results"]
    assert [r["item"] for r in results] == ["sampling"]
    assert all(r["median_s"] > 0 for r in results)
    assert "trajectory-steps/s" in done.stdout


def test_loss_step_paths_run_in_a_fresh_process():
    from benchmarks.run import run_one

    for path in ("trace", "sequential", "parallel"):
        record = run_one("loss_step", "--path", path, "--steps", 8, "--batch", 2, "--repeats", 1)
        assert record["path"] == path and record["median_s"] > 0, record
