"""Covariates (known inputs) in the file commands: plumbing, leak check, and a synthetic series
whose target is a known function of an unforecastable covariate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from alternators_ppl.data.covariates import calendar_features, with_covariates
from alternators_ppl.data.readers import read_series
from alternators_ppl.evaluation import masked_scoring
from alternators_ppl.experiments.file_task import FileCompareConfig, run_file_comparison
from alternators_ppl.experiments.forecast import ForecastConfig, run_forecast


def _write(path, steps=360, seed=0):
    """Daily series: c iid N(0, 1) (no model can forecast it), y_t = 1.5 c_t + 0.2 noise."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=steps)
    y = 1.5 * c + 0.2 * rng.normal(size=steps)
    frame = pd.DataFrame(
        {"date": pd.date_range("2001-01-01", periods=steps, freq="D"), "y": y, "c": c}
    )
    frame.to_csv(path, index=False)
    return frame


def test_calendar_features_are_sin_cos_of_the_month():
    time = pd.date_range("2000-01-01", periods=13, freq="MS").to_numpy()
    got = calendar_features(time, "month")
    angle = 2 * np.pi * (np.arange(13) % 12) / 12
    np.testing.assert_allclose(got, np.stack([np.sin(angle), np.cos(angle)], -1), atol=1e-12)
    with pytest.raises(ValueError, match="date/time axis"):
        calendar_features(np.arange(5.0), "month")
    with pytest.raises(ValueError, match="calendar feature"):
        calendar_features(time, "season")


def test_covariates_are_read_one_step_ahead(tmp_path):
    frame = _write(tmp_path / "s.csv", steps=40)
    series = read_series(tmp_path / "s.csv")
    out, n_targets = with_covariates(series, ("c", "weekday"))
    assert n_targets == 1 and out.columns == ("y", "c", "weekday_sin", "weekday_cos")
    np.testing.assert_allclose(out.values[0, :, 0], frame["y"])
    np.testing.assert_allclose(out.values[0, :-1, 1], frame["c"][1:])  # row t holds c_{t+1}
    assert np.isnan(out.values[0, -1, 1])  # the step after the data is unknown
    next_day = pd.Timestamp("2001-01-01") + pd.Timedelta(days=40)  # known for a calendar
    assert out.values[0, -1, 2] == pytest.approx(np.sin(2 * np.pi * next_day.day_of_week / 7))
    with pytest.raises(ValueError, match="neither a column"):
        with_covariates(series, ("temperature",))
    with pytest.raises(ValueError, match="both a target and a covariate"):
        with_covariates(series, ("c",), targets=("y", "c"))


def test_covariate_forecast_never_passes_the_hidden_targets():
    """Spy: the model sees NaN at every future target entry, the covariates intact."""
    seen = []

    class Spy:
        def forecast_given(self, x_context, known_future, num_samples):
            seen.append(torch.cat([x_context, known_future], dim=1))
            return known_future.expand(num_samples, *known_future.shape).nan_to_num(0.0)

    past, future = torch.randn(5, 6, 3), torch.randn(5, 4, 3)
    draws = masked_scoring.covariate_forecast(Spy(), past, future, 1, 7)
    assert draws.shape == (7, 5, 4, 1)
    window = seen[0]
    assert torch.isnan(window[:, 6:, :1]).all()
    assert not torch.isin(future[..., :1], window.nan_to_num(1e9)).any()
    torch.testing.assert_close(window[:, 6:, 1:], future[..., 1:])
    torch.testing.assert_close(window[:, :6], past)
    with pytest.raises(ValueError, match="n_targets"):
        masked_scoring.covariate_forecast(Spy(), past, future, 3, 2)


@pytest.mark.parametrize(("model", "epochs"), [("kalman", 200), ("alternator", 40)])
def test_covariate_run_beats_the_run_without_it_on_held_out_data(
    tmp_path, monkeypatch, model, epochs
):
    _write(tmp_path / "s.csv")
    windows = []
    original = masked_scoring.covariate_window

    def spy(past, future, n_targets):
        window = original(past, future, n_targets)
        windows.append((future[..., :n_targets].clone(), window.clone(), past.shape[1]))
        return window

    monkeypatch.setattr(masked_scoring, "covariate_window", spy)
    # one network at the paper's sigma_z: the covariate is the point, not the ensemble
    common = dict(columns=("y",), context=8, horizon=2, seeds=1, epochs=epochs, budget_s=300.0,
                  models=(model,), num_samples=100, members=1,
                  latent_timescales="given")  # fmt: skip
    results = {}
    for name, covariates in (("with", ("c",)), ("without", None)):
        cfg = FileCompareConfig(str(tmp_path / "s.csv"), covariates=covariates, **common)
        _, results[name] = run_file_comparison(cfg, tmp_path / "runs", name)
    with_c = results["with"]["summary"][model]
    without = results["without"]["summary"][model]
    assert results["with"]["columns"] == ["y"] and results["with"]["covariates"] == ["c"]
    assert len(with_c["crps"]["mean"]) == 2  # only the target is scored
    crps_with = float(np.mean(with_c["crps"]["mean"]))
    crps_without = float(np.mean(without["crps"]["mean"]))
    # y_t = 1.5 c_t + 0.2 e_t with c_t iid: without c the CRPS is about 0.48 for both models
    # (standardised); with it 0.07 (kalman, 100 EM iterations) and 0.18 (alternator, 40 epochs)
    assert crps_with < 0.5 * crps_without, (crps_with, crps_without)
    if model == "alternator":  # its spread is recalibrated on forecasts given c
        chosen = results["with"]["per_seed"][model][0]["chosen"]
        assert chosen["forecast_spread"]["n_targets"] == 1
    assert windows  # every forecast went through the masked window; no hidden target in it
    for truth, window, context in windows:
        assert torch.isnan(window[:, context:, :1]).all()
        for row_truth, row in zip(truth, window, strict=True):  # (a later context may hold it)
            assert not torch.isin(row_truth[torch.isfinite(row_truth)], row).any()


def test_forecast_command_with_covariates(tmp_path):
    frame = _write(tmp_path / "s.csv", steps=200)
    frame.loc[196:, "y"] = np.nan  # the last 4 rows give the covariate, not the target
    frame.to_csv(tmp_path / "f.csv", index=False)
    cfg = ForecastConfig(str(tmp_path / "f.csv"), model="kalman", covariates=("c",),
                         context=8, horizon=4, epochs=200, num_samples=200)  # fmt: skip
    run, summary = run_forecast(cfg, tmp_path / "runs", "f")
    table = pd.read_csv(run / "forecast.csv")
    assert list(table["time"]) == [str(d.date()) for d in frame["date"][196:]]
    assert summary["columns"] == ["y"]
    assert summary["covariates"] == ["c"]
    # the forecast follows the given covariate: y = 1.5 c
    err = table["y_mean"].to_numpy() - 1.5 * frame["c"][196:].to_numpy()
    assert np.sqrt(np.mean(err**2)) < 0.6 * np.std(1.5 * frame["c"][196:])
    short = ForecastConfig(str(tmp_path / "f.csv"), model="kalman", covariates=("c",),
                           context=8, horizon=6, epochs=2)  # fmt: skip
    with pytest.raises(ValueError, match="must be given for the 6 forecast steps"):
        run_forecast(short, tmp_path / "runs", "g")


def test_forecast_with_calendar_covariates_extends_the_time_axis(tmp_path):
    frame = _write(tmp_path / "s.csv", steps=120)
    cfg = ForecastConfig(str(tmp_path / "s.csv"), model="persistence", columns=("y",),
                         covariates=("weekday",), context=8, horizon=3, num_samples=20)  # fmt: skip
    run, summary = run_forecast(cfg, tmp_path / "runs", "cal")
    table = pd.read_csv(run / "forecast.csv")
    after = pd.date_range(frame["date"].iloc[-1], periods=4, freq="D")[1:]
    assert list(table["time"]) == [str(d.date()) for d in after]
    assert summary["covariates"] == ["weekday_sin", "weekday_cos"]
    np.testing.assert_allclose(table["y_q50"], frame["y"].iloc[-1])  # persistence, unchanged
