"""SST pieces: convolutional OTN/FTN, the references, spread-skill, the OISST loader, `sst`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from alternators_ppl.data.oisst import read_oisst_boxes, split_oisst_by_year
from alternators_ppl.experiments.sst import (
    monthly_climatology_draws,
    pca_kalman_draws,
    persistence_draws,
    spread_skill,
)
from alternators_ppl.grid_networks import GridDecoder, GridEncoder
from alternators_ppl.models.alternator import Alternator


def test_grid_networks_shapes_and_land():
    enc = GridEncoder((5, 7), 4, channels=(3, 6), land=torch.arange(35) < 7)
    dec = GridDecoder(4, (5, 7), channels=(3, 6))
    x = torch.randn(2, 3, 35)
    assert enc(x).shape == (2, 3, 4) and dec(torch.randn(2, 3, 4)).shape == (2, 3, 35)
    moved = x.clone()
    moved[..., :7] = 100.0  # land values never reach the latent
    torch.testing.assert_close(enc(moved), enc(x))
    with pytest.raises(ValueError, match="shape"):
        enc(torch.randn(2, 34))


def test_conv_alternator_masks_land_out_of_the_likelihood():
    torch.manual_seed(0)
    model = Alternator(
        36, 3, otn=GridDecoder(3, (6, 6), (4,)), ftn=GridEncoder((6, 6), 3, (4,))
    ).double()
    x = torch.randn(2, 5, 36, dtype=torch.float64)
    z = torch.randn(2, 6, 3, dtype=torch.float64)
    mask = torch.ones(2, 5, 36, dtype=torch.bool)
    mask[..., :4] = False  # land
    base = model.log_joint(x, z, mask)
    moved = x.clone()
    moved[..., :4] += 5.0
    # the x-term ignores land; the z-term still reads it through the FTN unless zeroed there
    x_term = model.x_dist(z[:, :-1]).log_prob(x)
    manual = (x_term * mask).sum((1, 2))
    x_term_moved = model.x_dist(z[:, :-1]).log_prob(moved)
    torch.testing.assert_close((x_term_moved * mask).sum((1, 2)), manual)
    assert torch.isfinite(base).all()
    draws = model.forecast(torch.where(mask, x, torch.nan)[:, :4], 2, 7)
    assert draws.shape == (7, 2, 2, 36) and torch.isfinite(draws).all()


@pytest.mark.parametrize("better", ["given", "spread"])
def test_sst_alternator_keeps_the_timescales_that_forecast_validation_better(monkeypatch, better):
    from types import SimpleNamespace

    from alternators_ppl.experiments import registry, sst
    from alternators_ppl.experiments.registry import spread_sigma_z

    seen = []

    def fake_crps(model, x_val, seed=0, n_targets=None):  # stands in for the held-out score
        seen.append(x_val)
        return 0.5 if model.sigma_z_per_dim == (better == "spread") else 0.7

    monkeypatch.setattr(registry, "holdout_forecast_crps", fake_crps)
    g = torch.Generator().manual_seed(0)
    split = SimpleNamespace(x_train=torch.randn(4, 9, 36, generator=g),
                            x_val=torch.randn(2, 9, 36, generator=g))  # fmt: skip
    cfg = sst.SSTConfig(tile=6, latent_dim=3, channels=(4,), epochs=1, budget_s=5.0,
                        calibrate=False)  # fmt: skip
    model, record = sst._fit_conv_alternator(cfg, split, 0, "cpu")
    assert record["kept"] == better and set(record["validation_crps"]) == {"given", "spread"}
    assert all(x is split.x_val for x in seen)  # judged on validation, never on test
    expected = spread_sigma_z(3, 0.3) if better == "spread" else [0.1] * 3
    assert model.sigma_z_values() == pytest.approx(expected)
    with pytest.raises(ValueError, match="latent_timescales"):
        sst.SSTConfig(latent_timescales="many")


def test_persistence_and_monthly_climatology():
    past = np.array([[[1.0, np.nan], [2.0, np.nan], [np.nan, np.nan]]])  # (1, 3, 2)
    d = persistence_draws(past, 2, 3)
    assert d.shape == (3, 1, 2, 2)
    np.testing.assert_array_equal(d[0, 0, :, 0], [2.0, 2.0])  # last observed, not NaN
    # climatology: two sequences, 24 months; cell value = month number + 10 * sequence
    months = np.tile(np.arange(1, 13), 2)
    x = (months[None, :, None] + 10.0 * np.arange(2)[:, None, None]).repeat(3, 2)
    x[:, :, 2] = np.nan  # a land cell
    target = np.array([[3, 4], [3, 4], [12, 1]])  # problem n is sequence n % 2
    gen = torch.Generator().manual_seed(0)
    draws = monthly_climatology_draws(x, months, 24, target, 5, gen)
    assert draws.shape == (5, 3, 2, 3)
    # train residuals are 0, so the spread falls back to 1; the mean is the month's value
    mean = draws.mean(0).numpy()
    np.testing.assert_allclose(mean[0, :, 0], [3.0, 4.0], atol=2.0)
    exact = monthly_climatology_draws(x, months, 24, target, 4000, gen).mean(0).numpy()
    np.testing.assert_allclose(exact[1, :, 1], [13.0, 14.0], atol=0.1)
    np.testing.assert_allclose(exact[2, :, 0], [12.0, 1.0], atol=0.1)


def test_spread_skill_is_one_when_calibrated():
    gen = torch.Generator().manual_seed(1)
    truth = torch.randn(400, 2, 5, generator=gen, dtype=torch.float64)
    draws = torch.randn(300, 400, 2, 5, generator=gen, dtype=torch.float64)
    ratio = spread_skill(draws, truth)
    assert len(ratio) == 2 and all(0.93 < r < 1.07 for r in ratio)
    over = spread_skill(3.0 * draws, truth)  # spread 3, skill ~1: ratio ~3 (not 9)
    assert all(2.8 < r < 3.2 for r in over)


def test_pca_kalman_draws_follow_a_slow_pattern():
    rng = np.random.default_rng(0)
    pattern = rng.normal(size=20)
    t = np.arange(400)
    amp = np.sin(2 * np.pi * t / 40)
    x = (amp[:, None] * pattern + 0.05 * rng.normal(size=(400, 20)))[None].astype(np.float32)
    windows = np.stack([x[0, s : s + 12] for s in range(0, 300, 3)])
    val = np.stack([x[0, s : s + 12] for s in range(300, 340, 4)])
    past = x[:, 388 - 9 : 388]
    draws = pca_kalman_draws(windows, val, past, 3, 200, 2, 0, 20.0, em_iters=30)
    assert draws.shape == (200, 1, 3, 20)
    truth = x[0, 388:391]
    err = np.sqrt(((draws.mean(0)[0].numpy() - truth) ** 2).mean())
    assert err < 0.5 * np.sqrt((truth**2).mean())  # far better than predicting 0


def _oisst_file(path, day, grid, land):
    xr = pytest.importorskip("xarray")
    pd = pytest.importorskip("pandas")
    n_lat, n_lon = grid.shape
    data = np.where(land, -999, np.round(grid * 100)).astype(np.int16)[None, None]
    ds = xr.Dataset(
        {"sst": (("time", "zlev", "lat", "lon"), data)},
        coords={
            "time": [(pd.Timestamp(day) - pd.Timestamp("1978-01-01")).days],
            "zlev": [0.0],
            "lat": -89.875 + 0.25 * np.arange(n_lat),
            "lon": 0.125 + 0.25 * np.arange(n_lon),
        },
    )
    ds["sst"].attrs.update(
        scale_factor=0.01, add_offset=0.0, _FillValue=np.int16(-999), units="Celsius"
    )
    ds["time"].attrs.update(units="days since 1978-01-01 12:00:00")
    ds.to_netcdf(path, engine="h5netcdf")
    return path


def test_oisst_boxes_and_year_splits(tmp_path):
    days = ["2019-12-30", "2019-12-31", "2020-06-01", "2021-01-01", "2021-01-02"]
    land = np.zeros((4, 6), dtype=bool)
    land[:2, :2] = True  # the first 2 x 2 box is land
    land[2, 4] = True  # one land cell in the last box of the second row
    grids, paths = [], []
    for k, day in enumerate(reversed(days)):  # files in any order
        grid = 20.0 + k + 0.01 * np.arange(24).reshape(4, 6)
        grids.append(grid)
        paths.append(_oisst_file(tmp_path / f"oisst-avhrr-v02r01.{day}.nc", day, grid, land))
    boxes = read_oisst_boxes(paths, box=2, min_ocean=0.7)
    assert boxes.values.shape == (5, 5, 4)  # 6 boxes minus the land one; 5 days
    assert str(boxes.time[0])[:10] == "2019-12-30"
    np.testing.assert_allclose(boxes.lat0, [-89.875, -89.875, -89.375, -89.375, -89.375])
    first_day = grids[-1]  # written last, earliest date
    np.testing.assert_allclose(boxes.values[0, 0], first_day[0:2, 2:4].reshape(-1), atol=1e-6)
    last_box = boxes.values[4, 0]
    assert np.isnan(last_box[0]) and np.isfinite(last_box[1:]).all()
    splits = split_oisst_by_year(boxes)
    assert {k: v.values.shape[1] for k, v in splits.items()} == {"train": 2, "val": 1, "test": 2}
    with pytest.raises(ValueError, match="no day of the test years"):
        split_oisst_by_year(boxes, test=(2022, 2022))
    with pytest.raises(ValueError, match="days repeat"):
        read_oisst_boxes(paths + paths[:1], box=2)


@pytest.mark.slow
def test_sst_quick_command(tmp_path, capsys):
    pytest.importorskip("iris_sample_data", reason="OSTIA needs iris-sample-data ([data] extra)")
    from alternators_ppl.cli import main

    argv = ["sst", "--quick", "--tiles", "2", "--latent-timescales", "auto", "--first-seed", "2"]
    code = main([*argv, "--runs-dir", str(tmp_path), "--name", "s"])
    assert code == 0, capsys.readouterr().err
    results = json.loads((tmp_path / "s" / "sst.json").read_text())
    assert results["config"]["latent_timescales"] == "auto"
    assert results["config"]["first_seed"] == 2  # the maps show the first seed run
    record = results["per_seed"]["alternator-conv"][0]["latent_timescales"]
    assert set(record["validation_crps"]) == {"given", "spread"}  # both were trained
    spread = results["per_seed"]["alternator-conv"][0]["forecast_spread"]
    assert len(spread["factors"]) == 3  # one per lead, fitted on the validation windows
    assert results["test_first_origin"] == "2010-02"  # the test span: last 15% of 54 months
    assert set(results["summary"]) == {
        "alternator-conv",
        "kalman-pca",
        "climatology-monthly",
        "persistence",
    }
    assert (tmp_path / "s" / "figures" / "maps.png").is_file()
    assert results["peak_rss_mb"] > 0
