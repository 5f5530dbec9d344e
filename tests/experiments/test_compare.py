"""The comparison harness: same data and seeds for every model, files, fairness on linear data."""

import json

import pytest

from alternators_ppl.cli import main
from alternators_ppl.experiments.compare import CompareConfig, format_comparison, run_comparison


def test_quick_comparison_writes_table_json_and_figure(tmp_path):
    cfg = CompareConfig.quick(models=("alternator", "kalman", "persistence", "climatology"))
    run, results = run_comparison(cfg, tmp_path, "cmp")
    saved = json.loads((run / "comparison.json").read_text())
    assert set(saved["summary"]) == set(cfg.models)
    for model, summary in saved["summary"].items():
        assert len(summary["crps"]["mean"]) == cfg.horizon, model
        assert (summary["log_predictive_density"] is None) == (
            model == "persistence"  # the Alternator reports its SMC estimate
        )
    assert (run / "figures" / "forecasts.png").stat().st_size > 1000
    table = (run / "comparison.md").read_text()
    assert table.strip() == format_comparison(results)
    assert all(f"| {m} |" in table for m in cfg.models)


def test_persistence_model_scores_equal_the_independent_reference(tmp_path):
    import torch

    from alternators_ppl.data.tasks import lorenz_forecasting_task
    from alternators_ppl.evaluation.scoring import forecast_windows, score_forecasts

    cfg = CompareConfig.quick(models=("persistence",))
    _, results = run_comparison(cfg, tmp_path, "p")
    task = lorenz_forecasting_task(
        num_train=cfg.num_train,
        num_val=cfg.num_val,
        num_test=cfg.num_test,
        num_steps=cfg.num_steps,
        seed=0,
    )
    x_test = torch.as_tensor(task.x_test)
    past, future = forecast_windows(x_test, cfg.context, cfg.horizon, cfg.horizon)
    reference = score_forecasts(future.unsqueeze(0), future, past, torch.as_tensor(task.x_train))
    got = results["per_seed"]["persistence"][0]
    assert got["crps"] == pytest.approx(reference["persistence_crps"], rel=1e-6)
    assert got["rmse"] == pytest.approx(reference["persistence_rmse"], rel=1e-6)


def test_compare_cli_quick_and_bad_arguments(tmp_path, capsys):
    code = main(
        [
            "compare",
            "linear",
            "--quick",
            "--models",
            "kalman,climatology",
            "--runs-dir",
            str(tmp_path),
            "--name",
            "c",
        ]
    )
    assert code == 0 and (tmp_path / "c" / "comparison.md").is_file()
    assert "| kalman |" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "linear", "--models", "gpt"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown model" in err
    assert (
        main(
            [
                "compare",
                "linear",
                "--quick",
                "--models",
                "kalman",
                "--runs-dir",
                str(tmp_path),
                "--name",
                "c",
            ]
        )
        == 2
    )  # exists, no --overwrite


@pytest.mark.slow
def test_kalman_beats_or_ties_alternator_on_linear_gaussian_data(tmp_path):
    cfg = CompareConfig(
        task="linear",
        models=("alternator", "kalman"),
        seeds=1,
        epochs=100,
        budget_s=30.0,
        members=1,  # one network (choosing its timescales): the time of two fits, not ten
        num_train=32,
        num_test=16,
        num_samples=100,
    )
    _, results = run_comparison(cfg, tmp_path, "linear")
    crps = {m: s["crps"]["mean"] for m, s in results["summary"].items()}
    assert sum(crps["kalman"]) <= 1.02 * sum(crps["alternator"])


@pytest.mark.gpu
def test_every_model_runs_on_cuda(tmp_path):
    cfg = CompareConfig.quick(device="cuda")
    run, results = run_comparison(cfg, tmp_path, "cuda")
    assert set(results["summary"]) == set(cfg.models)
    assert all(s["crps"]["mean"][0] > 0 for s in results["summary"].values())


def test_a_failing_model_is_reported_and_the_others_go_on(tmp_path, failing_models):
    """A model whose draws diverge (NaN), and one whose training raises, are recorded as failed
    with their reason in comparison.json and the table; the rest of the comparison runs."""
    cfg = CompareConfig.quick(models=("persistence", "climatology", "kalman"), seeds=2)
    run, results = run_comparison(cfg, tmp_path, "cmp")
    saved = json.loads((run / "comparison.json").read_text())["summary"]
    assert saved["persistence"]["seeds_ok"] == 0
    diverged = "ModelFailed: forecast draws are not finite"
    assert saved["persistence"]["failed"][0].startswith(diverged)
    exploded = "NonFiniteLossError: loss is nan at epoch 1, batch 1"
    assert saved["climatology"]["failed"] == [exploded] * 2
    assert saved["kalman"]["seeds_ok"] == 2 and saved["kalman"]["failed"] == []
    assert len(saved["kalman"]["crps"]["mean"]) == cfg.horizon
    table = (run / "comparison.md").read_text()
    assert "| persistence | failed on every seed: ModelFailed" in table
    assert "| kalman |" in table


def test_comparison_records_training_and_provenance(tmp_path):
    cfg = CompareConfig.quick(models=("alternator", "kalman"))
    argv = ["compare", "lorenz", "--quick", "--models", "alternator,kalman", "--epochs", "3"]
    argv += ["--runs-dir", str(tmp_path), "--name", "c"]
    assert main(argv) == 0
    saved = json.loads((tmp_path / "c" / "comparison.json").read_text())
    assert saved["command"] == "alternators-ppl " + " ".join(argv)
    assert {"python", "torch", "pyro", "numpy"} <= set(saved["versions"])
    run = saved["per_seed"]["alternator"][0]
    assert run["epochs_run"] == 3 and run["steps"] == 3 * 1  # 8 sequences, batch 16: 1 step
    assert run["train_s"] > 0
    assert saved["per_seed"]["kalman"][0]["epochs_run"] >= 1
    assert cfg.budget_s >= 60  # the wall-clock limit is a safety cap, not the budget
