"""Readers of a user's own series: formats, time axes, missing values, splits, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from alternators_ppl.data.readers import read_array, read_netcdf, read_series, read_table
from alternators_ppl.data.splits import make_windows, split_series

pd = pytest.importorskip("pandas", reason="the readers need the [data] extra (pandas)")


def _csv(tmp_path, text: str, name: str = "s.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _frame(steps: int = 60, freq: str = "D", start: str = "2020-01-01"):
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "date": pd.date_range(start, periods=steps, freq=freq),
            "a": rng.normal(10.0, 2.0, steps),
            "b": rng.normal(-5.0, 0.5, steps),
        }
    )


# --------------------------------------------------------------------------- formats


def test_csv_dates_sorted_and_missing_kept(tmp_path):
    path = _csv(
        tmp_path,
        "date,a,b,label\n2020-01-03,3,,x\n2020-01-01,1,10,y\n2020-01-02,NaN,20,z\n"
        "2020-01-04,-999,40,w\n",
    )
    s = read_table(path, columns=["a", "b"], fill_value=-999)
    assert s.columns == ("a", "b")
    assert s.values.shape == (1, 4, 2)
    assert s.time[0] == np.datetime64("2020-01-01")  # sorted
    expected = np.array([[1, 10], [np.nan, 20], [3, np.nan], [np.nan, 40]])
    np.testing.assert_array_equal(s.values[0], expected)  # NaN, empty and fill stay missing
    assert s.mask.sum() == 5
    assert s.freq == "D"
    np.testing.assert_array_equal(
        s.future_times(2), np.array(["2020-01-05", "2020-01-06"], dtype="datetime64[ns]")
    )


def test_parquet_equals_csv(tmp_path):
    pytest.importorskip("pyarrow", reason="parquet needs pyarrow (the [data] extra)")
    frame = _frame()
    frame.to_csv(tmp_path / "s.csv", index=False)
    frame.to_parquet(tmp_path / "s.parquet")
    a = read_series(tmp_path / "s.csv", columns="a,b")
    b = read_series(tmp_path / "s.parquet", columns="a,b")
    np.testing.assert_allclose(a.values, b.values, rtol=1e-12)
    np.testing.assert_array_equal(a.time, b.time)


def test_time_zones_numbers_and_monthly(tmp_path):
    # mixed zones are put in UTC: 01:00+01:00 and 00:00Z are the same instant
    with pytest.raises(ValueError, match="duplicate"):
        read_table(
            _csv(tmp_path, "time,v\n2020-01-01T01:00+01:00,1\n2020-01-01T00:00Z,2\n", "dup.csv")
        )
    numbers = read_table(_csv(tmp_path, "t,v\n0.5,1\n0,2\n1.0,3\n", "n.csv"), time_column="t")
    np.testing.assert_array_equal(numbers.time, [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(numbers.values[0, :, 0], [2, 1, 3])
    np.testing.assert_allclose(numbers.future_times(2), [1.5, 2.0])
    monthly = _frame(30, "MS")
    monthly.to_csv(tmp_path / "m.csv", index=False)
    m = read_table(tmp_path / "m.csv")
    assert m.freq == "MS"
    assert m.future_times(1)[0] == np.datetime64(
        pd.Timestamp("2020-01-01") + pd.DateOffset(months=30)
    )


def test_zoned_stamps_become_utc(tmp_path):
    path = _csv(
        tmp_path,
        "time,v\n2020-01-01T02:00+01:00,1\n2020-01-01T03:00+01:00,2\n2020-01-01T04:00+01:00,3\n",
    )
    s = read_table(path)
    assert s.time[0] == np.datetime64("2020-01-01T01:00")
    assert s.freq == "h"


def test_irregular_steps_error_unless_resampled(tmp_path):
    frame = _frame(20).drop(index=[5, 6])
    frame.loc[frame.index[0], "a"] = np.nan
    frame.to_csv(tmp_path / "g.csv", index=False)
    with pytest.raises(ValueError, match="irregular steps.*resample"):
        read_table(tmp_path / "g.csv")
    s = read_table(tmp_path / "g.csv", resample="D")
    assert s.values.shape == (1, 20, 2)
    assert np.isnan(s.values[0, 5:7]).all()  # the dropped days are missing, not filled
    assert np.isnan(s.values[0, 0, 0])
    np.testing.assert_allclose(s.values[0, 7], frame.iloc[5][["a", "b"]].astype(float))


def test_numeric_irregular_and_resample(tmp_path):
    path = _csv(tmp_path, "t,v\n0,1\n1,2\n3,4\n4,5\n")
    with pytest.raises(ValueError, match="irregular"):
        read_table(path, time_column="t")
    s = read_table(path, time_column="t", resample=1)
    np.testing.assert_array_equal(s.values[0, :, 0], [1, 2, np.nan, 4, 5])


def test_netcdf_grid_and_land(tmp_path):
    xr = pytest.importorskip("xarray")
    rng = np.random.default_rng(1)
    field = rng.normal(290.0, 1.0, (12, 3, 4)).astype(np.float32)
    field[:, 0, 0] = 1e20  # a land cell
    field[2, 1, 1] = np.nan
    data = xr.Dataset(
        {"sst": (("time", "lat", "lon"), field), "other": (("lat",), np.zeros(3))},
        coords={
            "time": pd.date_range("2000-01-01", periods=12, freq="MS"),
            "lat": [-1.0, 0.0, 1.0],
            "lon": [10.0, 11.0, 12.0, 13.0],
        },
    )
    path = tmp_path / "f.nc"
    data.to_netcdf(path, engine="h5netcdf")
    s = read_netcdf(path, fill_value=1e20)
    assert s.values.shape == (1, 12, 11)  # 12 cells minus the land cell
    assert s.grid.dims == ("lat", "lon") and s.grid.shape == (3, 4)
    assert np.isnan(s.values[0, 2, s.grid.cells.tolist().index(5)])
    back = s.grid.unflatten(s.values[0])
    assert np.isnan(back[:, 0, 0]).all()
    np.testing.assert_allclose(back[:, 2, 3], field[:, 2, 3], rtol=1e-6)
    sub = read_netcdf(path, "sst", region={"lon": slice(1, 3)}, fill_value=1e20)
    assert sub.values.shape == (1, 12, 6)


def test_npy_and_npz(tmp_path):
    x = np.arange(2 * 30 * 3, dtype=float).reshape(2, 30, 3)
    np.save(tmp_path / "a.npy", x)
    np.savez(tmp_path / "b.npz", first=x[0], second=x)
    assert read_array(tmp_path / "a.npy").values.shape == (2, 30, 3)
    s = read_series(tmp_path / "a.npy", columns="0,2")
    np.testing.assert_array_equal(s.values, x[..., [0, 2]])
    with pytest.raises(ValueError, match="holds arrays"):
        read_array(tmp_path / "b.npz")
    np.testing.assert_array_equal(read_array(tmp_path / "b.npz", "first").values[0], x[0])


# --------------------------------------------------------------------------- splits


def test_split_scaling_on_train_only_and_windows(tmp_path):
    values = np.concatenate([np.full(70, 1.0), np.full(30, 100.0)])
    values[:70] += np.arange(70) % 2  # train: 1, 2, 1, 2, ... mean 1.5, std 0.5
    frame = pd.DataFrame({"t": np.arange(100), "v": values})
    frame.to_csv(tmp_path / "s.csv", index=False)
    s = read_table(tmp_path / "s.csv", time_column="t")
    split = split_series(s, context=5, horizon=3, stride=2)
    assert (split.val_start, split.test_start) == (70, 85)
    np.testing.assert_allclose(split.scaler.mean, [1.5])
    np.testing.assert_allclose(split.scaler.scale, [0.5])
    assert split.x_train.shape == (len(range(0, 70 - 8 + 1, 2)), 8, 1)
    assert split.x_train.max() <= 1.0 + 1e-6  # no test value (100) in training windows
    past, future, origins = split.test_problems()
    assert origins[0] == 85 and origins[-1] == 97
    np.testing.assert_allclose(split.scaler.inverse_transform(future), 100.0, rtol=1e-5)
    np.testing.assert_array_equal(past[0], split.x[0, 80:85])
    at = split_series(s, 5, 3, split_at=(60, 90))
    assert (at.val_start, at.test_start) == (60, 90)


def test_split_at_dates(tmp_path):
    _frame(100).to_csv(tmp_path / "s.csv", index=False)
    s = read_table(tmp_path / "s.csv")
    split = split_series(s, 10, 5, split_at=("2020-02-10", "2020-03-01"))
    assert split.val_start == 40 and split.test_start == 60


def test_make_windows():
    x = np.arange(10.0).reshape(1, 10, 1)
    w = make_windows(x, 4, stride=3)
    np.testing.assert_array_equal(w[:, :, 0], [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]])
    assert make_windows(x, 11).shape == (0, 11, 1)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "text, kwargs, message",
    [
        ("date,a\n2020-01-01,1\n", {"columns": ["zz"]}, "unknown column 'zz'"),
        ("date,a,b\n2020-01-01,1,x\n2020-01-02,2,y\n", {"columns": "a,b"}, "column 'b'.*not num"),
        ("date,a,b\n2020-01-01,1,\n2020-01-02,2,\n", {"columns": "a,b"}, "'b'.*all missing"),
        ("date,a\nfoo,1\nbar,2\n", {}, "time column 'date' does not parse"),
        ("date,a\n2020-01-01,1\n2020-01-01,2\n", {}, "duplicate"),
        ("date,a\n", {}, "no rows"),
        ("", {}, "is empty"),
        ("date,a\n2020-01-01,1\n", {"time_column": "when"}, "unknown time column"),
    ],
)
def test_bad_tables(tmp_path, text, kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        read_table(_csv(tmp_path, text), **kwargs)
    assert "\n" not in str(info.value)


def test_bad_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        read_series(tmp_path / "nope.csv")
    (tmp_path / "x.nc").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match="cannot read"):
        read_series(tmp_path / "x.nc")
    (tmp_path / "x.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match="cannot read"):
        read_series(tmp_path / "x.npy")
    (tmp_path / "x.xls").write_text("a")
    with pytest.raises(ValueError, match="unsupported file type"):
        read_series(tmp_path / "x.xls")


def test_too_short_for_splits(tmp_path):
    _frame(30).to_csv(tmp_path / "s.csv", index=False)
    s = read_table(tmp_path / "s.csv")
    with pytest.raises(ValueError, match="too short for context 20 \\+ horizon 5"):
        split_series(s, 20, 5)
    with pytest.raises(ValueError, match="context must be a positive integer"):
        split_series(s, 0, 5)


# --------------------------------------------------------------------------- property test


def test_property_input_checks(tmp_path_factory):
    """Any table of numbers and blanks either reads (with every blank missing, nothing filled)
    or fails with a one-line ValueError; all-missing columns always fail."""
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    cell = st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False), st.just("abc"))

    @hypothesis.settings(max_examples=40, deadline=None)
    @hypothesis.given(st.lists(st.tuples(cell, cell), min_size=1, max_size=12))
    def check(rows):
        path = tmp_path_factory.mktemp("p") / "s.csv"
        lines = ["t,a,b"] + [
            f"{i},{'' if a is None else a},{'' if b is None else b}"
            for i, (a, b) in enumerate(rows)
        ]
        path.write_text("\n".join(lines) + "\n")
        cols = list(zip(*rows, strict=True))
        expect_fail = any(all(v is None for v in c) or any(v == "abc" for v in c) for c in cols)
        try:
            s = read_table(path, columns="a,b", time_column="t")
        except ValueError as error:
            assert expect_fail, f"unexpected error {error}"
            assert "\n" not in str(error)
            return
        assert not expect_fail
        blanks = np.array([[v is None for v in r] for r in rows])
        np.testing.assert_array_equal(np.isnan(s.values[0]), blanks)
        given = np.array([[np.nan if v is None else float(v) for v in r] for r in rows])
        np.testing.assert_allclose(s.values[0], given, rtol=1e-12)

    check()


# --------------------------------------------------------------------------- offline real data


def test_nino_indices():
    pytest.importorskip("pywt", reason="the Nino indices need PyWavelets (the [data] extra)")
    from alternators_ppl.data.real import nino_series

    anom, absolute = nino_series("anomaly"), nino_series("absolute")
    assert anom.values.shape == (1, 800, 4) and anom.freq == "MS"
    assert anom.time[0] == np.datetime64("1950-01-01") and anom.time[-1] == np.datetime64(
        "2016-08-01"
    )
    # independent check of the column layout: the anomaly is the absolute temperature minus
    # its calendar-month climatology (up to the base period), so they correlate closely
    months = pd.DatetimeIndex(anom.time).month.to_numpy()
    for d in range(4):
        a = absolute.values[0, :, d]
        clim = np.array([a[months == m].mean() for m in range(1, 13)])[months - 1]
        assert np.corrcoef(a - clim, anom.values[0, :, d])[0, 1] > 0.97
    assert 20.0 < np.mean(absolute.values) < 30.0
    with pytest.raises(ValueError, match="kind"):
        nino_series("raw")


def test_sunspots_and_co2_from_statsmodels():
    """Checked against the raw files statsmodels ships (read here with the csv module, not
    through statsmodels or the code under test)."""
    pytest.importorskip("statsmodels", reason="the series need statsmodels (the [data] extra)")
    import csv
    import importlib.util
    from pathlib import Path

    from alternators_ppl.data.real import co2_series, sunspots_series

    root = Path(importlib.util.find_spec("statsmodels").submodule_search_locations[0])
    with open(root / "datasets" / "sunspots" / "sunspots.csv") as handle:
        rows = list(csv.DictReader(handle))
    sun = sunspots_series()
    assert sun.values.shape == (1, 309, 1) and sun.freq == "YS" and len(rows) == 309
    np.testing.assert_allclose(sun.values[0, :, 0], [float(r["SUNACTIVITY"]) for r in rows])
    assert sun.time[0] == np.datetime64("1700-01-01")
    assert sun.time[-1] == np.datetime64("2008-01-01")
    co2 = co2_series()
    assert co2.values.shape == (1, 2284, 1) and co2.freq == "W-SAT"
    assert int(np.isnan(co2.values).sum()) == 59
    assert co2.values[0, 0, 0] == 316.1 and co2.values[0, -1, 0] == 371.5
    assert co2.time[0] == np.datetime64("1958-03-29")
    assert co2.time[-1] == np.datetime64("2001-12-29")
    assert co2.future_times(1)[0] == np.datetime64("2002-01-05")  # the next Saturday


def test_ostia_field_against_h5py():
    pytest.importorskip("iris_sample_data", reason="OSTIA needs iris-sample-data ([data] extra)")
    h5py = pytest.importorskip("h5py")
    from alternators_ppl.data.real import ostia_path, ostia_series

    s = ostia_series(region={"longitude": slice(200, 230)})
    with h5py.File(ostia_path()) as f:
        raw = f["surface_temperature"][:, :, 200:230].astype(np.float64)
    land = raw > 1e19
    assert s.values.shape == (1, 54, int((~land.any(0)).sum()))
    np.testing.assert_allclose(
        s.grid.unflatten(s.values[0]), np.where(land, np.nan, raw), rtol=1e-6
    )
    assert s.freq == "MS" and 285.0 < np.nanmean(s.values) < 305.0
