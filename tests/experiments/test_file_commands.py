"""A user's own series through the CLI: compare and forecast on CSV and NetCDF, bad input."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from alternators_ppl.cli import main

pd = pytest.importorskip("pandas", reason="file commands need the [data] extra (pandas)")

STEPS, CONTEXT, HORIZON = 140, 8, 3
TINY = [
    "--quick",
    "--epochs",
    "1",
    "--budget-s",
    "2",
    "--context",
    str(CONTEXT),
    "--horizon",
    str(HORIZON),
    "--stride",
    "4",
]


def _write_csv(path):
    """Daily series a (degrees) and b, with empty cells, NaN and two dropped dates."""
    rng = np.random.default_rng(3)
    t = np.arange(STEPS)
    frame = pd.DataFrame(
        {
            "date": pd.date_range("2021-03-01", periods=STEPS, freq="D"),
            "a": 20.0 + 5.0 * np.sin(2 * np.pi * t / 30) + rng.normal(0, 0.5, STEPS),
            "b": 0.01 * np.cos(2 * np.pi * t / 30) + rng.normal(0, 0.002, STEPS),
            "note": ["x"] * STEPS,
        }
    )
    frame.loc[[5, 40, 121, 130], "a"] = np.nan
    frame.loc[[7, 125], "b"] = np.nan
    frame = frame.drop(index=[60, 61])  # gaps in the dates: resampled, then missing
    frame.sample(frac=1.0, random_state=0).to_csv(path, index=False, na_rep="")  # unsorted
    return path


def _persistence_oracle(path):
    """Persistence CRPS (= absolute error) per lead in data units, from the raw CSV."""
    frame = pd.read_csv(path, parse_dates=["date"]).set_index("date").sort_index()
    frame = frame[["a", "b"]].resample("D").mean()  # dropped dates become NaN rows
    x = frame.to_numpy()
    steps = len(x)
    test_start = round(0.85 * steps)
    errors = [[] for _ in range(HORIZON)]
    for o in range(test_start, steps - HORIZON + 1):
        for d in range(2):
            past = x[o - CONTEXT : o, d]
            last = past[~np.isnan(past)][-1]
            for h in range(HORIZON):
                if not np.isnan(x[o + h, d]):
                    errors[h].append(abs(x[o + h, d] - last))
    return [float(np.mean(e)) for e in errors]


def test_compare_on_csv_with_dates_and_gaps(tmp_path, capsys):
    path = _write_csv(tmp_path / "mine.csv")
    runs = tmp_path / "runs"
    code = main(
        [
            "compare",
            str(path),
            "--columns",
            "a,b",
            "--resample",
            "D",
            "--models",
            "alternator,kalman,persistence",
            "--runs-dir",
            str(runs),
            "--name",
            "c",
            "--difference",  # the persistence oracle below is in levels
            "off",
            *TINY,
        ]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "| alternator |" in out.out and "| persistence |" in out.out
    run = runs / "c"
    assert (run / "comparison.md").is_file() and (run / "figures" / "forecasts.png").is_file()
    results = json.loads((run / "comparison.json").read_text())
    assert results["columns"] == ["a", "b"]
    assert results["spans"]["train"]["first"] == "2021-03-01"
    for model in ("alternator", "kalman", "persistence"):
        s = results["summary"][model]
        for key in ("crps", "rmse", "coverage_90", "crps_data", "rmse_data"):
            assert len(s[key]["mean"]) == HORIZON
        assert s["imputation_rmse"]["mean"] is not None
    # independent oracle: persistence in data units straight from the CSV
    np.testing.assert_allclose(
        results["summary"]["persistence"]["crps_data"]["mean"], _persistence_oracle(path), rtol=1e-5
    )
    # the same run name again: refused, the finished run is untouched
    before = (run / "comparison.json").read_text()
    assert (
        main(
            [
                "compare",
                str(path),
                "--columns",
                "a,b",
                "--resample",
                "D",
                "--models",
                "persistence",
                "--runs-dir",
                str(runs),
                "--name",
                "c",
                *TINY,
            ]
        )
        == 2
    )
    assert (run / "comparison.json").read_text() == before


def _write_netcdf(path, steps: int = 72):
    xr = pytest.importorskip("xarray")
    rng = np.random.default_rng(4)
    t = np.arange(steps)
    season = 2.0 * np.sin(2 * np.pi * t / 12)[:, None, None]
    field = 300.0 + season + rng.normal(0, 0.3, (steps, 2, 3))
    field[:, 0, 0] = 1e20  # land
    field[10, 1, 2] = 1e20  # a cloud gap
    data = xr.Dataset(
        {"sst": (("time", "lat", "lon"), field.astype(np.float32), {"units": "K"})},
        coords={
            "time": pd.date_range("2000-01-01", periods=steps, freq="MS") + pd.Timedelta(days=15),
            "lat": [0.5, 1.5],
            "lon": [200.5, 201.5, 202.5],
        },
    )
    data.to_netcdf(path, engine="h5netcdf")
    return path


def test_compare_and_forecast_on_netcdf(tmp_path, capsys):
    path = _write_netcdf(tmp_path / "field.nc")
    runs = tmp_path / "runs"
    code = main(
        [
            "compare",
            str(path),
            "--columns",
            "sst",
            "--fill-value",
            "1e20",
            "--models",
            "kalman,persistence,climatology",
            "--runs-dir",
            str(runs),
            "--name",
            "c",
            *TINY,
        ]
    )
    assert code == 0, capsys.readouterr().err
    results = json.loads((runs / "c" / "comparison.json").read_text())
    assert len(results["columns"]) == 5  # six cells minus land
    assert results["summary"]["kalman"]["crps_data"]["mean"][0] > 0
    code = main(
        [
            "forecast",
            str(path),
            "--columns",
            "sst",
            "--fill-value",
            "1e20",
            "--model",
            "kalman",
            "--runs-dir",
            str(runs),
            "--name",
            "f",
            *TINY,
        ]
    )
    assert code == 0, capsys.readouterr().err
    xr = pytest.importorskip("xarray")
    with xr.open_dataset(runs / "f" / "forecast.nc") as out:
        q = out["sst_quantile"].values
        assert q.shape == (5, HORIZON, 2, 3)
        assert np.isnan(q[:, :, 0, 0]).all() and np.isfinite(q[:, :, 1, :]).all()
        assert (np.diff(q[:, :, 1, :], axis=0) >= 0).all()  # quantiles ordered
        assert 290 < np.nanmean(q) < 310  # data units (K), not standardised
        first = pd.Timestamp(out["time"].values[0])
    assert (first.year, first.month) == (2006, 1)  # 72 months after Jan 2000


def test_forecast_csv_continues_time_stamps(tmp_path, capsys):
    path = _write_csv(tmp_path / "mine.csv")
    runs = tmp_path / "runs"
    code = main(
        [
            "forecast",
            str(path),
            "--columns",
            "a,b",
            "--resample",
            "D",
            "--model",
            "alternator",
            "--runs-dir",
            str(runs),
            "--name",
            "f",
            *TINY,
        ]
    )
    assert code == 0, capsys.readouterr().err
    table = pd.read_csv(runs / "f" / "forecast.csv", parse_dates=["time"])
    last = pd.Timestamp("2021-03-01") + pd.Timedelta(days=STEPS - 1)
    assert list(table["time"]) == [last + pd.Timedelta(days=k) for k in range(1, HORIZON + 1)]
    assert {"a_q05", "a_q50", "a_q95", "a_mean", "b_q50"} <= set(table.columns)
    assert (table["a_q95"] >= table["a_q05"]).all()
    assert 5 < table["a_q50"].mean() < 35  # data units
    assert (runs / "f" / "figures" / "forecast.png").is_file()


@pytest.mark.parametrize(
    "text, args, message",
    [
        ("date,a\n2020-01-01,1\n", ["--columns", "zz"], "unknown column 'zz'"),
        ("date,a,b\n2020-01-01,1,x\n2020-01-02,2,y\n", ["--columns", "a,b"], "not numeric"),
        ("date,a,b\n2020-01-01,1,\n2020-01-02,2,\n", ["--columns", "a,b"], "all missing"),
        ("", ["--columns", "a"], "is empty"),
        ("date,a\nnope,1\nnah,2\n", ["--columns", "a"], "does not parse"),
        (
            "\n".join(["date,a"] + [f"2020-01-{d:02d},{d}" for d in range(1, 21)]),
            ["--columns", "a"],
            "too short",
        ),
    ],
)
@pytest.mark.parametrize("command", ["compare", "forecast"])
def test_bad_input_one_line_and_no_run_folder(tmp_path, capsys, text, args, message, command):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    runs = tmp_path / "runs"
    code = main([command, str(path), *args, "--runs-dir", str(runs), "--name", "x", "--quick"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and message in err, err
    assert not runs.exists() or not any(runs.iterdir())


def test_unknown_task_or_missing_file(tmp_path, capsys):
    assert main(["compare", str(tmp_path / "none.csv"), "--quick"]) == 2
    assert "neither a built-in task" in capsys.readouterr().err


def test_nino_builtin_quick(tmp_path, capsys):
    pytest.importorskip("pywt", reason="the nino task needs PyWavelets (the [data] extra)")
    code = main(
        [
            "compare",
            "nino",
            "--models",
            "persistence,climatology",
            "--runs-dir",
            str(tmp_path),
            "--name",
            "n",
            "--quick",
            "--horizon",
            "12",
        ]
    )
    assert code == 0, capsys.readouterr().err
    results = json.loads((tmp_path / "n" / "comparison.json").read_text())
    assert results["spans"]["test"] == {"steps": 120, "first": "2006-09-01", "last": "2016-08-01"}
    assert results["test_problems"] == 120 - 12 + 1


def test_forecast_npy_batches_and_numeric_time(tmp_path, capsys):
    rng = np.random.default_rng(5)
    x = np.cumsum(rng.normal(size=(2, 60, 2)), axis=1)
    x[1, 10, 0] = np.nan
    np.save(tmp_path / "x.npy", x)
    runs = tmp_path / "runs"
    code = main(
        [
            "forecast",
            str(tmp_path / "x.npy"),
            "--model",
            "persistence",
            "--runs-dir",
            str(runs),
            "--name",
            "f",
            "--difference",  # a random walk: "auto" would model its increments
            "off",
            *TINY,
        ]
    )
    assert code == 0, capsys.readouterr().err
    table = pd.read_csv(runs / "f" / "forecast.csv")
    assert list(table["time"]) == [60.0, 61.0, 62.0] * 2
    assert list(table["sequence"]) == [0, 0, 0, 1, 1, 1]
    # persistence repeats the last value of each sequence, in data units
    np.testing.assert_allclose(table["0_q50"], np.repeat(x[:, -1, 0], 3), rtol=1e-5)
    np.testing.assert_allclose(table["1_mean"], np.repeat(x[:, -1, 1], 3), rtol=1e-5)


def test_series_options_rejected_for_simulated_tasks(tmp_path, capsys):
    assert (
        main(["compare", "lorenz", "--columns", "a", "--quick", "--runs-dir", str(tmp_path)]) == 2
    )
    assert "--columns apply to a file" in capsys.readouterr().err


def test_missing_data_extra_is_one_line(tmp_path, capsys, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "pywt" else real_find_spec(name, *a),
    )
    assert main(["compare", "nino", "--quick", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "alternators-ppl[data]" in err


def test_region_and_split_at_options(tmp_path, capsys):
    path = _write_netcdf(tmp_path / "field.nc")
    runs = tmp_path / "runs"
    code = main(
        [
            "compare",
            str(path),
            "--columns",
            "sst",
            "--fill-value",
            "1e20",
            "--region",
            "lat=1:2,lon=0:3",
            "--split-at",
            "2003-01-01,60",
            "--models",
            "persistence",
            "--runs-dir",
            str(runs),
            "--name",
            "c",
            *TINY,
        ]
    )
    assert code == 0, capsys.readouterr().err
    results = json.loads((runs / "c" / "comparison.json").read_text())
    assert results["columns"] == ["sst[0,0]", "sst[0,1]", "sst[0,2]"]  # the second lat row
    assert results["spans"]["train"]["steps"] == 36 and results["spans"]["test"]["steps"] == 12
    csv = _write_csv(tmp_path / "mine.csv")
    assert (
        main(
            [
                "compare",
                str(csv),
                "--columns",
                "a",
                "--region",
                "lat=0:1",
                "--quick",
                "--runs-dir",
                str(runs),
            ]
        )
        == 2
    )
    assert "region applies to NetCDF" in capsys.readouterr().err


def test_masked_scores_equal_plain_metrics_on_the_observed_entries():
    import torch

    from alternators_ppl import metrics
    from alternators_ppl.evaluation.masked_scoring import (
        score_masked_forecast,
        score_masked_imputation,
    )

    gen = torch.Generator().manual_seed(0)
    samples = torch.randn(50, 6, 2, 1, generator=gen, dtype=torch.float64)
    truth = torch.randn(6, 2, 1, generator=gen, dtype=torch.float64)
    gappy = truth.clone()
    gappy[[1, 4], 0] = torch.nan  # lead 1 observed in problems 0, 2, 3, 5 only
    got = score_masked_forecast(samples, gappy)
    keep = [0, 2, 3, 5]
    lead1 = metrics.crps_empirical(samples[:, keep, 0], truth[keep, 0], over=(0, 1))
    assert got["crps"][0] == pytest.approx(lead1.item(), rel=1e-12)
    assert got["rmse"][1] == pytest.approx(
        metrics.rmse(samples[:, :, 1].mean(0), truth[:, 1], over=(0, 1)).item(), rel=1e-12
    )
    assert got["observed"] == [4, 6]
    scaled = score_masked_forecast(samples, gappy, scale=[3.0], shift=[100.0])
    assert scaled["crps"][0] == pytest.approx(3.0 * got["crps"][0], rel=1e-12)
    # imputation: hidden steps (B, T) where the truth is observed
    x = truth.permute(1, 0, 2)  # (B=2, T=6, 1)
    draws = samples.permute(0, 2, 1, 3)
    hidden = torch.zeros(2, 6, dtype=torch.bool)
    hidden[0, [1, 2]] = True
    x_gappy = x.clone()
    x_gappy[0, 1] = torch.nan  # hidden but never observed: not scored
    imp = score_masked_imputation(draws, x_gappy, hidden)
    assert imp["crps"] == pytest.approx(
        metrics.crps_empirical(draws[:, 0, 2], x[0, 2], over=(0,)).item(), rel=1e-12
    )


@pytest.mark.parametrize("name, last", [("sunspots", "2008-01-01"), ("co2", "2001-12-29")])
def test_statsmodels_builtins_quick(tmp_path, capsys, name, last):
    pytest.importorskip("statsmodels", reason="the series need statsmodels (the [data] extra)")
    argv = ["compare", name, "--models", "persistence", "--runs-dir", str(tmp_path),
            "--name", name, "--quick", "--context", "20", "--horizon", "5"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    results = json.loads((tmp_path / name / "comparison.json").read_text())
    assert results["spans"]["test"]["last"].startswith(last)


def test_difference_option_scores_levels_and_refuses_covariates(tmp_path, capsys):
    pytest.importorskip("statsmodels", reason="the co2 series needs statsmodels (the [data] extra)")
    argv = ["compare", "co2", "--models", "climatology", "--runs-dir", str(tmp_path),
            "--quick", "--context", "20", "--horizon", "5"]  # fmt: skip
    crps = {}
    for name in ("off", "on", "auto"):
        assert main([*argv, "--name", name, "--difference", name]) == 0, capsys.readouterr().err
        results = json.loads((tmp_path / name / "comparison.json").read_text())
        crps[name] = sum(results["summary"]["climatology"]["crps"]["mean"])
        assert results["difference"]["difference"] == (name != "off")
    # the test span lies above the training range: the climatology of the levels misses it,
    # the climatology of the increments (a random walk with drift from the last level) not;
    # "auto" sees the same on the validation windows and takes the increments
    assert crps["on"] == crps["auto"] < 0.2 * crps["off"], crps
    validation = results["difference"]["validation_crps"]
    assert validation["increments"] < validation["levels"]
    assert main([*argv, "--name", "bad", "--difference", "on", "--covariates", "month"]) == 2
    assert "difference cannot be combined with covariates" in capsys.readouterr().err


def test_auto_difference_keeps_the_levels_of_a_stationary_series():
    from alternators_ppl.experiments.file_task import FileCompareConfig, resolve_difference

    torch.manual_seed(0)
    x = torch.zeros(1, 400, 1)
    for t in range(1, 400):  # AR(1) around 0: no trend
        x[0, t] = 0.5 * x[0, t - 1] + torch.randn(1)
    windows = x.unfold(1, 17, 1)[0].permute(0, 2, 1)  # (384, 17, 1)
    cfg = FileCompareConfig("unused.csv", context=12, horizon=5)
    chosen = resolve_difference(cfg, windows[:300], windows[320:])
    assert chosen["difference"] is False, chosen
    assert resolve_difference(replace(cfg, difference=True), windows[:300], None)["difference"]


def test_auto_difference_keeps_the_levels_of_nino():
    """On the Niño indices the increments' climatology beats the levels' on validation by 9%
    (the validation decade drifts), but every model of the increments forecast worse than its
    model of the levels (docs/real_data.md): "auto" needs a trend-sized margin."""
    pytest.importorskip("pywt", reason="the Nino indices need PyWavelets (the [data] extra)")
    from alternators_ppl.experiments.file_task import (
        FileCompareConfig,
        load_split,
        resolve_difference,
    )

    cfg = FileCompareConfig("nino")
    split = load_split(cfg)
    chosen = resolve_difference(cfg, split.x_train, split.x_val)
    crps = chosen["validation_crps"]
    assert crps["increments"] < crps["levels"] and chosen["difference"] is False, chosen
