"""The main job's held-out results meet the targets the project promises (issue 3, 'must show')."""

import pytest

from alternators_ppl.experiments.lorenz import LorenzJobConfig, format_summary, run_lorenz_job


@pytest.mark.slow
def test_default_job_meets_held_out_targets(tmp_path):
    run, metrics = run_lorenz_job(LorenzJobConfig(), tmp_path, "default")
    fc = metrics["forecast"]
    assert len(fc["crps"]) == 20
    for h in range(20):  # every horizon, both references, both scores
        assert fc["crps"][h] < fc["persistence_crps"][h], h
        assert fc["crps"][h] < fc["resampled_climatology_crps"][h], h
        assert fc["rmse"][h] < fc["persistence_rmse"][h], h
        assert fc["rmse"][h] < fc["resampled_climatology_rmse"][h], h
        assert 0.80 <= fc["coverage_90"][h] <= 0.97, h
    imp = metrics["imputation"]
    assert imp["rmse"] < imp["linear_interpolation_rmse"]
    lat = metrics["latents"]
    assert lat["train_steps"] >= 1000 and 0.25 <= lat["spikes_per_bin"] <= 0.35
    assert min(lat["r2"]) >= 0.97
    assert (run / "figures" / "attractor.png").is_file()
    assert "latents from spikes" in format_summary(metrics)
