"""The benchmark suite runs end to end with its smoke flags and writes JSON."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

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


def test_one_step_ema_features_match_the_weighted_sum():
    """The latent's EMA read after the last step is sum_k r^k scale x_{T-1-k} (closed form)."""
    from benchmarks.one_step import ema_features

    x = np.random.default_rng(0).standard_normal((3, 7, 2))
    rates = (0.9, 0.25)
    got = ema_features(x, rates, scale=0.5)
    for k, rate in enumerate(rates):
        weights = 0.5 * rate ** np.arange(7)[::-1]
        np.testing.assert_allclose(got[:, 2 * k : 2 * k + 2], (weights[:, None] * x).sum(1))


def test_one_step_pairs_and_readout_recover_a_linear_map():
    """Pairs are (the context, the very next step); the readout recovers x_{t+1} = A x_t + b."""
    from benchmarks.one_step import least_squares_readout, one_step_pairs

    a, b = np.array([[0.8, 0.1], [-0.2, 0.5]]), np.array([0.3, -1.0])
    x = np.zeros((4, 12, 2))
    x[:, 0] = np.random.default_rng(1).standard_normal((4, 2))
    for t in range(1, 12):
        x[:, t] = x[:, t - 1] @ a.T + b
    past, target = one_step_pairs(x, context=5)
    assert past.shape == (4 * 7, 5, 2) and target.shape == (4 * 7, 2)
    np.testing.assert_array_equal(past[4], x[0, 1:6])  # second start, first window
    np.testing.assert_array_equal(target[4], x[0, 6])
    predict = least_squares_readout(past[:, -1], target)
    np.testing.assert_allclose(predict(past[:, -1]), target, atol=1e-8)


def test_one_step_smoke_run(tmp_path):
    """Quick settings on Niño: every forecaster scored on both spans; the spread rates' readout
    beats the single rate's (the rates alone, before any training)."""
    pytest.importorskip("pywt")
    out = tmp_path / "one_step.json"
    from benchmarks.run import run_one

    record = run_one("one_step", "--quick", "--out", out)
    assert "error" not in record, record
    assert json.loads(out.read_text()) == record
    for span in ("validation", "test"):
        rmse = record["rmse_h1"][span]
        assert {"persistence", "ar3", "ema-spread-noisy-fit", "kalman", "alternator-spread"} <= set(
            rmse
        )
        assert rmse["ema-spread"] < rmse["ema-given"]
