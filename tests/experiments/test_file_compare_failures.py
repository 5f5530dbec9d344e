"""compare on a file shares compare's per-model loop: a failing model is reported, not fatal,
and the run records its provenance (command, versions, epochs and steps of training)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from alternators_ppl.cli import main

pd = pytest.importorskip("pandas", reason="file commands need the [data] extra (pandas)")


def _write_csv(path, steps=120):
    rng = np.random.default_rng(0)
    t = np.arange(steps)
    frame = pd.DataFrame(
        {
            "a": np.sin(2 * np.pi * t / 20) + rng.normal(0, 0.1, steps),
            "b": np.cos(2 * np.pi * t / 20) + rng.normal(0, 0.1, steps),
        }
    )
    frame.to_csv(path, index=False)
    return path


def test_failing_model_in_a_file_comparison_is_reported_and_the_others_score(
    tmp_path, capsys, failing_models
):
    path = _write_csv(tmp_path / "series.csv")
    argv = ["compare", str(path), "--models", "persistence,climatology,kalman", "--quick"]
    argv += ["--seeds", "2", "--context", "8", "--horizon", "3", "--stride", "4"]
    argv += ["--runs-dir", str(tmp_path), "--name", "f"]
    assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    saved = json.loads((tmp_path / "f" / "comparison.json").read_text())
    summary = saved["summary"]
    assert summary["persistence"]["seeds_ok"] == 0
    assert summary["persistence"]["failed"][0].startswith(
        "ModelFailed: forecast draws are not finite"
    )
    assert (
        summary["climatology"]["failed"]
        == ["NonFiniteLossError: loss is nan at epoch 1, batch 1"] * 2
    )
    assert summary["kalman"]["seeds_ok"] == 2 and summary["kalman"]["failed"] == []
    assert len(summary["kalman"]["crps"]["mean"]) == 3
    assert all(np.isfinite(summary["kalman"]["crps"]["mean"]))
    assert "| persistence | failed on every seed: ModelFailed" in out
    assert "| climatology | failed on every seed: NonFiniteLossError" in out
    assert "| kalman | " in out
    assert (tmp_path / "f" / "figures" / "forecasts.png").exists()
    # provenance, as compare on a simulated task records it
    assert saved["command"] == "alternators-ppl " + " ".join(argv)
    assert "torch" in saved["versions"]
    kalman = saved["per_seed"]["kalman"][0]
    assert kalman["epochs_run"] >= 1 and kalman["train_s"] > 0


def test_file_comparison_trains_comparators_with_the_epoch_cap(tmp_path, capsys):
    path = _write_csv(tmp_path / "series.csv")
    argv = ["compare", str(path), "--models", "mamba", "--quick", "--epochs", "2"]
    argv += ["--context", "8", "--horizon", "3", "--stride", "4"]
    argv += ["--runs-dir", str(tmp_path), "--name", "m"]
    assert main(argv) == 0, capsys.readouterr().err
    saved = json.loads((tmp_path / "m" / "comparison.json").read_text())
    assert saved["per_seed"]["mamba"][0]["epochs_run"] == 2


def test_file_comparison_first_seed_runs_that_seed(tmp_path):
    from alternators_ppl.experiments.file_task import FileCompareConfig, run_file_comparison

    path = str(_write_csv(tmp_path / "series.csv"))
    settings = dict(models=("climatology",), context=8, horizon=3, stride=4, eval_stride=4)
    _, both = run_file_comparison(FileCompareConfig.quick(path, seeds=2, **settings), tmp_path, "a")
    cfg = FileCompareConfig.quick(path, seeds=1, first_seed=1, **settings)
    _, second = run_file_comparison(cfg, tmp_path, "b")
    crps = [r["crps"] for r in both["per_seed"]["climatology"]]
    assert second["per_seed"]["climatology"][0]["crps"] == crps[1] != crps[0]


def test_compare_command_takes_first_seed(tmp_path, capsys):
    """`compare --first-seed` reaches the config of a file task and of a simulated task."""
    path = _write_csv(tmp_path / "series.csv")
    common = ["--models", "climatology", "--quick", "--seeds", "1", "--first-seed", "2"]
    argv = ["compare", str(path), *common, "--context", "8", "--horizon", "3"]
    assert main([*argv, "--runs-dir", str(tmp_path), "--name", "f"]) == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "f" / "comparison.json").read_text())["config"]["first_seed"] == 2
    argv = ["compare", "linear", *common, "--runs-dir", str(tmp_path), "--name", "s"]
    assert main(argv) == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "s" / "comparison.json").read_text())["config"]["first_seed"] == 2
    with pytest.raises(SystemExit, match="2"):
        main(["compare", "linear", "--first-seed", "-1"])
    assert "--first-seed" in capsys.readouterr().err
