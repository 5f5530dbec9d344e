"""benchmarks.baselines' one table across data sets: mean (sd) over seeds, failures shown."""

from __future__ import annotations

import json


def test_table_cells_are_seed_means_of_horizon_means(tmp_path):
    from benchmarks.baselines import baseline_table

    def write(name, per_seed):
        folder = tmp_path / name
        folder.mkdir()
        results = {"config": {"task": name}, "per_seed": per_seed}
        (folder / "comparison.json").write_text(json.dumps(results))
        return folder

    seed = lambda c, r, cov, t: {"crps": c, "rmse": r, "coverage_90": cov, "train_s": t}  # noqa: E731
    a = write(
        "lorenz",
        {
            "kalman": [seed([1.0, 3.0], [2.0, 2.0], [0.9, 0.8], 10.0), seed([2.0, 4.0], [4.0, 4.0],
                                                                         [0.7, 0.8], 20.0)],
            "mamba": [{"failed": "ModelFailed: forecast draws are not finite"}] * 2,
        },
    )  # fmt: skip
    b = write("nino", {"kalman": [seed([0.5, None], [1.0, 1.0], [0.9, 0.9], 1.0)]})
    lines = baseline_table([a, b]).splitlines()
    assert lines[0].startswith("| model | lorenz CRPS | lorenz cover90 | lorenz RMSE |")
    kalman = [c.strip() for c in lines[2].split("|")[1:-1]]
    # lorenz CRPS: seed means 2.0 and 3.0 -> 2.5 (sd 0.707); nino skips the missing horizon
    assert kalman == ["kalman", "2.500 (0.707)", "0.80 (0.07)", "3.000 (1.414)", "15.0 (7.1)",
                      "0.500 (0.000)", "0.90 (0.00)", "1.000 (0.000)", "1.0 (0.0)"]  # fmt: skip
    mamba = [c.strip() for c in lines[3].split("|")[1:-1]]
    assert mamba[:5] == ["mamba", "failed", "failed", "failed", "failed"]
    assert mamba[5:] == ["-"] * 4


def test_run_folders_of_one_task_pool_their_seeds(tmp_path):
    from benchmarks.baselines import baseline_table

    for i, crps in enumerate((1.0, 3.0)):
        folder = tmp_path / f"s{i}"
        folder.mkdir()
        seed = {"crps": [crps], "rmse": [1.0], "coverage_90": [0.9], "train_s": 1.0}
        results = {"config": {"task": "linear"}, "per_seed": {"kalman": [seed]}}
        (folder / "comparison.json").write_text(json.dumps(results))
    table = baseline_table([tmp_path / "s0", tmp_path / "s1"])
    assert "| kalman | 2.000 (1.414) |" in table


def test_first_seed_runs_the_same_seed_as_a_longer_run(tmp_path):
    from alternators_ppl.experiments.compare import CompareConfig, run_comparison

    models = ("persistence", "climatology")
    _, both = run_comparison(CompareConfig.quick(models=models, seeds=2), tmp_path, "both")
    _, second = run_comparison(
        CompareConfig.quick(models=models, seeds=1, first_seed=1), tmp_path, "second"
    )
    for model in models:
        assert second["per_seed"][model][0]["crps"] == both["per_seed"][model][1]["crps"]
        assert second["per_seed"][model][0]["crps"] != both["per_seed"][model][0]["crps"]


def test_per_horizon_table_pools_seeds_at_each_lead(tmp_path):
    from benchmarks.baselines import horizon_table

    for i, crps in enumerate((1.0, 3.0)):
        folder = tmp_path / f"s{i}"
        folder.mkdir()
        seed = {"crps": [crps, 10 * crps], "rmse": [1.0, 2.0], "coverage_90": [0.9, 0.8]}
        per_seed = {"kalman": [seed], "mamba": [{"failed": "ModelFailed: x"}]}
        results = {"config": {"task": "x"}, "horizon": [1, 2], "per_seed": per_seed}
        (folder / "comparison.json").write_text(json.dumps(results))
    table = horizon_table([tmp_path / "s0", tmp_path / "s1"])
    assert "| model | CRPS h=1 | cover90 h=1 | RMSE h=1 |" in table
    assert "| kalman | 2.000 (1.414) | 0.90 (0.00) | 1.000 (0.000) |" in table
    assert "| mamba | failed | failed | failed |" in table
