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


def test_svi_vs_eq12_smoke_run_learns_globals(tmp_path):
    out = tmp_path / "svi.json"
    from benchmarks.run import run_one

    record = run_one("svi_vs_eq12", "--quick", "--globals", "--noise-std", "0.6", "--out", out)
    assert "error" not in record, record
    assert json.loads(out.read_text()) == record
    assert record["noise_std"] == 0.6
    assert set(record["summary"]) == {"eq12", "svi_fixed", "svi_globals"}
    learned = record["learned_globals"]["svi_globals"]
    assert 0 < learned["sigma_x"] < 1 and learned["alpha"] + learned["sigma_z"] ** 2 < 1


def test_alpha_noise_smoke_run(tmp_path):
    out = tmp_path / "alpha.json"
    from benchmarks.run import run_one

    record = run_one("alpha_noise", "--quick", "--out", out)
    assert "error" not in record, record
    assert record["models"]["alpha-alternator"]["learned_sign"] in (-1, 1)
    assert json.loads(out.read_text()) == record
