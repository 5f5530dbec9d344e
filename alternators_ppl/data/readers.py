"""Readers for a user's own series: CSV, Parquet, NetCDF and .npy/.npz files.

Every reader returns a :class:`Series`: values ``(B, T, D)`` float64 in the data's own units
with NaN where a value is missing (empty cell, NaN, a declared fill value), never filled in;
a sorted, duplicate-free, regular time axis (datetime64 or numbers); the column names; and, for
gridded NetCDF data, the :class:`Grid` that maps the D columns back onto the map.

:func:`split_series` splits a series in time (70/15/15 by default, or at given dates/indices),
fits a :class:`~alternators_ppl.data.scaling.Standardizer` on the train span only, and cuts
training windows of ``context + horizon`` steps with a stride.

Bad input raises a one-line ``ValueError`` that names the problem: an unknown or non-numeric
column, an all-missing column, an unreadable or empty file, a time column that does not parse,
duplicate or irregular time stamps, a series too short for context + horizon + the splits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from alternators_ppl.data.scaling import Standardizer

__all__ = [
    "Grid",
    "Series",
    "SplitSeries",
    "read_series",
    "read_table",
    "read_netcdf",
    "read_array",
    "split_series",
    "make_windows",
]

TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq")
NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".cdf")
ARRAY_SUFFIXES = (".npy", ".npz")
#: column names taken as the time column when none is named
TIME_NAMES = ("time", "date", "datetime", "timestamp")


@dataclass(frozen=True, eq=False)
class Grid:
    """Where the D columns of a gridded series sit on the map.

    Attributes:
        variable: the NetCDF variable name.
        dims: space dimension names, e.g. ``("lat", "lon")``.
        coords: each space dim's coordinate values.
        cells: ``(D,)`` flat (C-order) index of each column into the space grid; cells that are
            missing at every time step (land) are not columns.
        attrs: the variable's attributes (units, long_name, ...).
    """

    variable: str
    dims: tuple[str, ...]
    coords: dict
    cells: np.ndarray
    attrs: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        """Space shape, e.g. ``(n_lat, n_lon)``."""
        return tuple(len(self.coords[d]) for d in self.dims)

    def unflatten(self, x: np.ndarray) -> np.ndarray:
        """``(..., D)`` -> ``(..., *shape)`` with NaN at the cells that are not columns."""
        x = np.asarray(x)
        out = np.full(x.shape[:-1] + (math.prod(self.shape),), np.nan, dtype=np.float64)
        out[..., self.cells] = x
        return out.reshape(x.shape[:-1] + self.shape)


@dataclass(frozen=True, eq=False)
class Series:
    """A multivariate series read from a file.

    Attributes:
        values: ``(B, T, D)`` float64 in data units; NaN = missing.
        time: ``(T,)`` sorted ``datetime64[ns]`` (UTC if the file had zones) or float64.
        columns: the D column names.
        freq: pandas frequency string of a datetime axis (e.g. ``"MS"``, ``"D"``), else None.
        step: the numeric time step of a number axis, else None.
        grid: a :class:`Grid` for gridded NetCDF data, else None.
        source: where the series came from.
    """

    values: np.ndarray
    time: np.ndarray
    columns: tuple[str, ...]
    freq: str | None = None
    step: float | None = None
    grid: Grid | None = None
    source: str = ""

    @property
    def mask(self) -> np.ndarray:
        """``(B, T, D)`` bool, True = observed."""
        return ~np.isnan(self.values)

    def future_times(self, horizon: int) -> np.ndarray:
        """The ``horizon`` time stamps after the last one, continuing the series' step."""
        if self.freq is not None:
            import pandas as pd

            last = pd.Timestamp(self.time[-1])
            if self.freq in ("MS", "ME", "YS", "YE"):  # calendar steps keep the day of month
                unit = "months" if self.freq[0] == "M" else "years"
                stamps = [last + pd.DateOffset(**{unit: k}) for k in range(1, horizon + 1)]
            else:
                offset = pd.tseries.frequencies.to_offset(self.freq)
                stamps = [last + k * offset for k in range(1, horizon + 1)]
            return pd.DatetimeIndex(stamps).to_numpy(dtype="datetime64[ns]")
        return self.time[-1] + self.step * np.arange(1, horizon + 1, dtype=np.float64)


@dataclass(frozen=True, eq=False)
class SplitSeries:
    """A series split in time, standardised with statistics of the train span only.

    Attributes:
        series: the :class:`Series` (data units).
        x: ``(B, T, D)`` float32 standardised values, NaN = missing.
        scaler: the :class:`Standardizer` fitted on ``x[:, :val_start]`` (data units).
        val_start, test_start: first step of the validation and of the test span.
        context, horizon: the forecast problem's lengths.
        x_train: ``(N, context + horizon, D)`` windows inside the train span.
        x_val: ``(M, context + horizon, D)`` windows whose last ``horizon`` steps lie in the
            validation span (their context may reach back into train).
    """

    series: Series
    x: np.ndarray
    scaler: Standardizer
    val_start: int
    test_start: int
    context: int
    horizon: int
    x_train: np.ndarray
    x_val: np.ndarray

    def test_problems(self, stride: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Forecast problems whose future lies in the test span.

        Origins ``o = test_start, test_start + stride, ...`` with ``o >= context`` and
        ``o + horizon <= T``; the context ``x[o - context : o]`` may reach into earlier spans
        (it is the observed past). Returns (context (N, C, D), future (N, H, D), origins (N,)
        step indices); with B sequences, problem n is sequence n % B at origin n // B.
        """
        origins = _origins(
            max(self.test_start, self.context), self.x.shape[1], self.horizon, stride
        )
        past = np.concatenate([self.x[:, o - self.context : o] for o in origins], axis=0)
        future = np.concatenate([self.x[:, o : o + self.horizon] for o in origins], axis=0)
        return past, future, np.repeat(np.asarray(origins), self.x.shape[0])


def _origins(first: int, steps: int, horizon: int, stride: int) -> list[int]:
    return list(range(first, steps - horizon + 1, stride))


# --------------------------------------------------------------------------- checks


def _fail(message: str) -> None:
    raise ValueError(message)


def _check_path(path) -> Path:
    path = Path(path)
    if not path.is_file():
        _fail(f"file {str(path)!r} does not exist or is not a file")
    if path.stat().st_size == 0:
        _fail(f"file {str(path)!r} is empty")
    return path


def _check_values(values: np.ndarray, columns, source: str) -> np.ndarray:
    """values (B, T, D) float64: reject inf and all-missing columns."""
    if values.shape[1] == 0:
        _fail(f"{source} has no rows")
    if np.isinf(values).any():
        col = columns[int(np.argwhere(np.isinf(values))[0, -1])]
        _fail(f"column {col!r} of {source} holds inf values")
    empty = np.isnan(values).all(axis=(0, 1))
    if empty.any():
        _fail(f"column {columns[int(np.flatnonzero(empty)[0])]!r} of {source} is all missing")
    return values


def _apply_fill(values: np.ndarray, fill_value) -> np.ndarray:
    if fill_value is not None:
        fill = float(fill_value)
        values = np.where(np.isclose(values, fill, rtol=1e-6, atol=0.0), np.nan, values)
    return values


def _parse_time(raw, name: str):
    """Parse a time column: numbers (float64) or dates/datetimes (datetime64[ns], UTC if zoned).

    Returns (time (T,), kind) with kind "number" or "datetime".
    """
    import pandas as pd

    col = pd.Series(raw)
    if col.isna().any():
        _fail(f"time column {name!r} has {int(col.isna().sum())} empty entries")
    if pd.api.types.is_bool_dtype(col):
        _fail(f"time column {name!r} holds booleans, not dates or numbers")
    if pd.api.types.is_numeric_dtype(col):
        t = col.to_numpy(dtype=np.float64)
        if not np.isfinite(t).all():
            _fail(f"time column {name!r} holds non-finite numbers")
        return t, "number"
    if not pd.api.types.is_datetime64_any_dtype(col):
        numbers = pd.to_numeric(col, errors="coerce")
        if numbers.notna().all():
            return _parse_time(numbers, name)
        try:
            col = pd.to_datetime(col, format="mixed")
        except (ValueError, TypeError, OverflowError):
            try:  # mixed zones (or zoned and naive stamps): put every stamp in UTC
                col = pd.to_datetime(col, format="mixed", utc=True)
            except (ValueError, TypeError, OverflowError):
                bad = next(str(v) for v in raw if _unparseable(v))
                _fail(f"time column {name!r} does not parse as dates or numbers (e.g. {bad!r})")
    if getattr(col.dt, "tz", None) is not None:
        col = col.dt.tz_convert("UTC").dt.tz_localize(None)
    return col.to_numpy(dtype="datetime64[ns]"), "datetime"


def _unparseable(value) -> bool:
    import pandas as pd

    try:
        pd.to_datetime(value, format="mixed", utc=True)
    except (ValueError, TypeError, OverflowError):
        return True
    return False


def _order_time(time: np.ndarray, values: np.ndarray, name: str):
    """Sort by time (stable); duplicates are an error. values (B, T, D)."""
    order = np.argsort(time, kind="stable")
    time, values = time[order], values[:, order]
    same = np.flatnonzero(time[1:] == time[:-1])
    if len(same):
        _fail(f"time column {name!r} has duplicate stamps (e.g. {time[same[0]]})")
    return time, values


def _regular(time: np.ndarray, kind: str, name: str, resample):
    """Check the steps are regular (or resample); return (time, freq, step, bins or None).

    ``bins`` (T_old,) maps each old stamp to its resampled step when resampling.
    """
    import pandas as pd

    if kind == "datetime":
        index = pd.DatetimeIndex(time)
        if resample is not None:
            try:
                offset = pd.tseries.frequencies.to_offset(resample)
            except ValueError:
                _fail(f"resample rule {resample!r} is not a pandas frequency (e.g. 'D', 'MS')")
            grid = pd.DatetimeIndex(pd.Series(0, index=index).resample(offset).mean().index)
            bins = np.searchsorted(grid.to_numpy(), index.to_numpy(), side="right") - 1
            return grid.to_numpy(dtype="datetime64[ns]"), offset.freqstr, None, bins
        if len(index) < 3:
            freq = pd.tseries.frequencies.to_offset(index[1] - index[0]) if len(index) > 1 else None
            return time, (freq.freqstr if freq is not None else "D"), None, None
        inferred = pd.DatetimeIndex(time, freq="infer").freq  # an offset, or None if irregular
        if inferred is None:
            calendar = _calendar_freq(index)
            if calendar is not None:
                return time, calendar, None, None
            diffs = np.diff(time)
            at = int(np.flatnonzero(diffs != np.median(diffs))[0]) if len(set(diffs)) > 1 else 0
            _fail(
                f"time column {name!r} has irregular steps (e.g. {index[at]} -> {index[at + 1]}); "
                "give a resample rule (e.g. resample='D', --resample D)"
            )
        return time, inferred.freqstr, None, None
    diffs = np.diff(time)
    if resample is not None:
        try:
            step = float(resample)
        except (TypeError, ValueError):
            _fail(f"resample rule {resample!r} must be a positive number for a numeric time axis")
        if not step > 0:
            _fail(f"resample rule {resample!r} must be a positive number for a numeric time axis")
        bins = np.floor((time - time[0]) / step + 1e-9).astype(int)
        return time[0] + step * np.arange(bins[-1] + 1), None, step, bins
    if len(diffs) == 0:
        return time, None, 1.0, None
    step = float(np.median(diffs))
    bad = np.flatnonzero(~np.isclose(diffs, step, rtol=1e-6, atol=1e-12 * max(1.0, abs(step))))
    if len(bad):
        at = int(bad[0])
        _fail(
            f"time column {name!r} has irregular steps (e.g. {time[at]:g} -> {time[at + 1]:g}, "
            f"usual step {step:g}); give a resample rule (e.g. --resample {step:g})"
        )
    return time, None, step, None


def _calendar_freq(index) -> str | None:
    """The frequency "MS" for stamps in consecutive calendar months (e.g. mid-month labels),
    "YS" for consecutive years, else None."""
    months = index.year.to_numpy() * 12 + index.month.to_numpy()
    if (np.diff(months) == 1).all():
        return "MS"
    if (np.diff(index.year.to_numpy()) == 1).all():
        return "YS"
    return None


def _bin_mean(values: np.ndarray, bins: np.ndarray, steps: int) -> np.ndarray:
    """Mean of the observed values falling in each of ``steps`` bins; empty bins stay NaN."""
    b, _, d = values.shape
    total = np.zeros((b, steps, d))
    count = np.zeros((b, steps, d))
    seen = ~np.isnan(values)
    np.add.at(total, (slice(None), bins), np.where(seen, values, 0.0))
    np.add.at(count, (slice(None), bins), seen.astype(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _finish(values, time, kind, name, resample, columns, source, grid=None) -> Series:
    time, values = _order_time(time, values, name)
    new_time, freq, step, bins = _regular(time, kind, name, resample)
    if bins is not None:
        values = _bin_mean(values, bins, len(new_time))
    values = _check_values(values, columns, source)
    return Series(values, new_time, tuple(columns), freq, step, grid, source)


# --------------------------------------------------------------------------- readers


def read_table(
    path,
    columns=None,
    time_column: str | None = None,
    resample=None,
    fill_value: float | None = None,
) -> Series:
    """Read a CSV (or TSV) or Parquet table: one time column plus numeric value columns.

    Args:
        path: ``.csv``/``.tsv``/``.txt`` (comma, tab or semicolon separated) or ``.parquet``.
        columns: value columns (list or comma-separated string); default every numeric
            column but the time column.
        time_column: the time column; default the first of ``time, date, datetime,
            timestamp`` (any case) present, else the row number.
        resample: a pandas frequency (``"D"``, ``"MS"``) for a datetime axis or a step for a
            numeric one; rows are averaged per bin and empty bins stay missing.
        fill_value: a number that marks missing values.

    Returns:
        :class:`Series` with values ``(1, T, D)``.
    """
    import pandas as pd

    path = _check_path(path)
    source = f"file {path.name!r}"
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, sep=None, engine="python")
    except pd.errors.EmptyDataError:
        _fail(f"{source} is empty")
    except Exception as error:  # any parser failure is an unreadable file
        _fail(f"cannot read {source} as a table: {str(error).splitlines()[0]}")
    frame.columns = [str(c).strip() for c in frame.columns]
    if len(frame) == 0:
        _fail(f"{source} has no rows")
    if time_column is None:
        lower = {c.lower(): c for c in frame.columns}
        time_column = next((lower[n] for n in TIME_NAMES if n in lower), None)
    elif time_column not in frame.columns:
        _fail(f"unknown time column {time_column!r}; {source} has {', '.join(frame.columns)}")
    if isinstance(columns, str):
        columns = [c.strip() for c in columns.split(",") if c.strip()]
    if columns is None:
        columns = [
            c for c in frame.columns if c != time_column and pd.api.types.is_numeric_dtype(frame[c])
        ]
        if not columns:
            _fail(f"{source} has no numeric value column")
    columns = list(columns)
    for c in columns:
        if c not in frame.columns:
            _fail(f"unknown column {c!r}; {source} has {', '.join(frame.columns)}")
        if c == time_column:
            _fail(f"column {c!r} is the time column, not a value column")
    if len(set(columns)) != len(columns):
        _fail(f"columns repeat a name: {columns}")
    values = np.stack([_numeric(frame[c], c, source) for c in columns], axis=-1)[None]
    values = _apply_fill(values, fill_value)
    if time_column is None:
        time, kind, name = np.arange(len(frame), dtype=np.float64), "number", "<row number>"
    else:
        time, kind = _parse_time(frame[time_column].to_numpy(), time_column)
        name = time_column
    return _finish(values, time, kind, name, resample, columns, source)


def _numeric(col, name: str, source: str) -> np.ndarray:
    import pandas as pd

    if pd.api.types.is_bool_dtype(col):
        _fail(f"column {name!r} of {source} is not numeric (booleans)")
    if pd.api.types.is_numeric_dtype(col):
        return col.to_numpy(dtype=np.float64, na_value=np.nan)
    text = col.astype("string").str.strip()
    blank = col.isna() | (text == "")
    numbers = pd.to_numeric(text.where(~blank), errors="coerce")
    bad = numbers.isna() & ~blank
    if bad.any():
        _fail(f"column {name!r} of {source} is not numeric (e.g. {str(col[bad].iloc[0])!r})")
    return numbers.to_numpy(dtype=np.float64, na_value=np.nan)


def read_netcdf(
    path,
    variable: str | None = None,
    time_dim: str | None = None,
    region: dict | None = None,
    resample=None,
    fill_value: float | None = None,
) -> Series:
    """Read one variable of a NetCDF file (through xarray) as a gridded series.

    The variable has a time dimension and any number of space dimensions; its grid cells
    become the D columns (C order), except cells missing at every step (e.g. land), which are
    dropped and recorded in :attr:`Series.grid`. ``_FillValue``/``missing_value`` become NaN
    through xarray; ``fill_value`` adds another marker (e.g. ``1e20``).

    Args:
        path: a NetCDF3 or NetCDF4/HDF5 file.
        variable: the variable; default the only one with a time dimension.
        time_dim: the time dimension; default ``time`` or the one with datetime coordinates.
        region: ``{dim: slice or index list}`` selection (by position) before flattening.
        resample, fill_value: as in :func:`read_table`.

    Returns:
        :class:`Series` with values ``(1, T, D)`` and ``grid`` set.
    """
    import xarray as xr

    path = _check_path(path)
    source = f"file {path.name!r}"
    try:
        data = xr.open_dataset(path)
    except Exception as error:
        _fail(f"cannot read {source} as NetCDF: {str(error).splitlines()[0]}")
    with data:
        if variable is None:
            timed = [v for v in data.data_vars if _time_dim(data[v], None) is not None]
            if len(timed) != 1:
                _fail(f"{source} has variables {list(data.data_vars)}; name one (--columns VAR)")
            variable = timed[0]
        if variable not in data.data_vars:
            _fail(f"unknown variable {variable!r}; {source} has {', '.join(data.data_vars)}")
        array = data[variable]
        tdim = _time_dim(array, time_dim)
        if tdim is None:
            _fail(f"variable {variable!r} of {source} has no time dimension (dims {array.dims})")
        if region:
            unknown = [d for d in region if d not in array.dims]
            if unknown:
                _fail(f"region names unknown dimension(s) {unknown}; {variable!r} has {array.dims}")
            array = array.isel(region)
        space = tuple(d for d in array.dims if d != tdim)
        array = array.transpose(tdim, *space)
        if not np.issubdtype(array.dtype, np.number):
            _fail(f"variable {variable!r} of {source} is not numeric ({array.dtype})")
        raw = np.asarray(array.values, dtype=np.float64)
        coords = {
            d: np.asarray(array[d].values) if d in array.coords else np.arange(array.sizes[d])
            for d in space
        }
        time_raw = array[tdim].values if tdim in array.coords else np.arange(array.sizes[tdim])
        attrs = {k: v for k, v in array.attrs.items() if isinstance(v, str | int | float)}
    if raw.shape[0] == 0:
        _fail(f"{source} has no time steps")
    flat = _apply_fill(raw.reshape(raw.shape[0], -1), fill_value)
    ocean = ~np.isnan(flat).all(axis=0)
    if not ocean.any():
        _fail(f"variable {variable!r} of {source} is all missing")
    cells = np.flatnonzero(ocean)
    grid = Grid(variable, space, coords, cells, attrs)
    columns = [f"{variable}[{','.join(map(str, np.unravel_index(c, grid.shape)))}]" for c in cells]
    time, kind = _parse_time(np.asarray(time_raw), tdim)
    return _finish(flat[None, :, cells], time, kind, tdim, resample, columns, source, grid)


def _time_dim(array, time_dim: str | None) -> str | None:
    if time_dim is not None:
        if time_dim not in array.dims:
            _fail(f"time dimension {time_dim!r} not in the variable's dims {array.dims}")
        return time_dim
    for d in array.dims:
        if d.lower() in TIME_NAMES:
            return d
    for d in array.dims:
        if d in array.coords and np.issubdtype(array[d].dtype, np.datetime64):
            return d
    return None


def read_array(path, key: str | None = None, columns=None, fill_value=None) -> Series:
    """Read a ``.npy`` or ``.npz`` array of shape (T, D) or (B, T, D); time is the step index.

    Args:
        path: the file; for ``.npz``, ``key`` names the array (default: the only one).
        columns: column indices to keep (ints or their strings); default all. Columns are
            named by their index.
        fill_value: a number that marks missing values.

    Returns:
        :class:`Series` with values ``(B, T, D)``.
    """
    path = _check_path(path)
    source = f"file {path.name!r}"
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as error:
        _fail(f"cannot read {source} as a numpy array: {str(error).splitlines()[0]}")
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            names = list(loaded.files)
            if key is None and len(names) != 1:
                _fail(f"{source} holds arrays {names}; name one")
            key = names[0] if key is None else key
            if key not in names:
                _fail(f"unknown array {key!r}; {source} holds {names}")
            loaded = loaded[key]
    if not np.issubdtype(loaded.dtype, np.number) or np.iscomplexobj(loaded):
        _fail(f"{source} holds a non-numeric array ({loaded.dtype})")
    if loaded.ndim not in (2, 3):
        _fail(f"{source} holds an array of shape {loaded.shape}; expected (T, D) or (B, T, D)")
    values = np.asarray(loaded, dtype=np.float64)
    values = values[None] if values.ndim == 2 else values
    names = [str(i) for i in range(values.shape[-1])]
    if columns is not None:
        if isinstance(columns, str):
            columns = [c.strip() for c in columns.split(",") if c.strip()]
        picked = []
        for c in columns:
            if str(c) not in names:
                _fail(f"unknown column {c!r}; {source} has columns 0..{len(names) - 1}")
            picked.append(int(c))
        values, names = values[..., picked], [names[i] for i in picked]
    values = _apply_fill(values, fill_value)
    time = np.arange(values.shape[1], dtype=np.float64)
    return _finish(values, time, "number", "<step>", None, names, source)


def read_series(
    path, columns=None, time_column=None, resample=None, fill_value=None, region=None
) -> Series:
    """Read any supported file by its suffix (see :func:`read_table`, :func:`read_netcdf`,
    :func:`read_array`). For NetCDF, ``columns`` names the one variable."""
    suffix = Path(path).suffix.lower()
    if suffix in TABLE_SUFFIXES:
        return read_table(path, columns, time_column, resample, fill_value)
    if suffix in NETCDF_SUFFIXES:
        if isinstance(columns, list | tuple):
            if len(columns) != 1:
                _fail(f"a NetCDF file takes one variable in columns, got {list(columns)}")
            columns = columns[0]
        return read_netcdf(path, columns, time_column, region, resample, fill_value)
    if suffix in ARRAY_SUFFIXES:
        return read_array(path, None, columns, fill_value)
    known = ", ".join(TABLE_SUFFIXES + NETCDF_SUFFIXES + ARRAY_SUFFIXES)
    _fail(f"unsupported file type {suffix or '(none)'!r} of {str(path)!r}; use one of {known}")


# --------------------------------------------------------------------------- splits


def make_windows(
    x: np.ndarray, length: int, stride: int = 1, start: int = 0, stop: int | None = None
) -> np.ndarray:
    """Windows ``x[:, s : s + length]`` for ``s = start, start + stride, ...`` ending by
    ``stop``: (B, T, D) -> (N, length, D), window n is sequence n % B; (0, length, D) if
    none fit."""
    stop = x.shape[1] if stop is None else stop
    starts = range(start, stop - length + 1, stride)
    if len(starts) == 0:
        return np.zeros((0, length, x.shape[-1]), dtype=x.dtype)
    return np.concatenate([x[:, s : s + length] for s in starts], axis=0)


def _boundary(value, series: Series, name: str) -> int:
    """A split boundary as a step index: an int index, or a date/number on the time axis."""
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return int(value)
    if series.freq is not None or np.issubdtype(series.time.dtype, np.datetime64):
        import pandas as pd

        try:
            stamp = pd.Timestamp(value)
        except (ValueError, TypeError):
            _fail(f"{name} {value!r} is neither a step index nor a date")
        if stamp.tzinfo is not None:
            stamp = stamp.tz_convert("UTC").tz_localize(None)
        return int(np.searchsorted(series.time, stamp.to_datetime64(), side="left"))
    try:
        number = float(value)
    except (TypeError, ValueError):
        _fail(f"{name} {value!r} is neither a step index nor a time value")
    return int(np.searchsorted(series.time, number, side="left"))


def split_series(
    series: Series,
    context: int,
    horizon: int,
    fractions=(0.7, 0.15, 0.15),
    split_at=None,
    stride: int = 1,
) -> SplitSeries:
    """Split in time, scale on train only, cut training and validation windows.

    Args:
        series: a :class:`Series` ``(B, T, D)``.
        context, horizon: forecast problem lengths (>= 1).
        fractions: (train, validation, test) shares of the steps, summing to 1.
        split_at: optional ``(val_start, test_start)``, each an int step index or a
            date/number on the time axis; overrides ``fractions``.
        stride: step between training windows (>= 1).

    Returns:
        :class:`SplitSeries`. Raises ``ValueError`` if a span is too short: train must hold a
        window of context + horizon, validation and test at least ``horizon`` steps each, and
        every span at least one observed value.
    """
    for name, value in (("context", context), ("horizon", horizon), ("stride", stride)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            _fail(f"{name} must be a positive integer, got {value!r}")
    steps = series.values.shape[1]
    if split_at is not None:
        if len(split_at) != 2:
            _fail(f"split_at must be (val_start, test_start), got {split_at!r}")
        val_start = _boundary(split_at[0], series, "split_at[0]")
        test_start = _boundary(split_at[1], series, "split_at[1]")
        if not 0 < val_start < test_start < steps:
            _fail(
                f"split_at {split_at!r} gives steps {val_start}, {test_start}; "
                f"need 0 < val_start < test_start < {steps}"
            )
    else:
        shares = np.asarray(fractions, dtype=np.float64)
        if shares.shape != (3,) or (shares <= 0).any() or not math.isclose(shares.sum(), 1.0):
            _fail(f"fractions must be three positive shares summing to 1, got {fractions!r}")
        val_start = int(round(shares[0] * steps))
        test_start = int(round((shares[0] + shares[1]) * steps))
    need = context + horizon
    spans = {
        "train": (0, val_start),
        "validation": (val_start, test_start),
        "test": (test_start, steps),
    }
    if val_start < need or test_start - val_start < horizon or steps - test_start < horizon:
        _fail(
            f"series of {steps} steps is too short for context {context} + horizon {horizon} "
            f"with spans train {val_start}, validation {test_start - val_start}, test "
            f"{steps - test_start} (train needs >= {need}, validation and test >= {horizon})"
        )
    for name, (a, b) in spans.items():
        if np.isnan(series.values[:, a:b]).all():
            _fail(f"the {name} span (steps {a}..{b - 1}) has no observed value")
    train_part = series.values[:, :val_start]
    empty = np.isnan(train_part).all(axis=(0, 1))
    if empty.any():
        _fail(
            f"column {series.columns[int(np.flatnonzero(empty)[0])]!r} is all missing in "
            "the train span"
        )
    scaler = Standardizer().fit(train_part)
    x = scaler.transform(series.values).astype(np.float32)
    x_train = make_windows(x, need, stride, 0, val_start)
    first_val = max(val_start - context, 0)
    x_val = make_windows(x, need, 1, first_val, test_start)
    if len(x_val) == 0:
        _fail(
            f"the validation span ({test_start - val_start} steps) holds no forecast window "
            f"of context {context} + horizon {horizon}"
        )
    return SplitSeries(series, x, scaler, val_start, test_start, context, horizon, x_train, x_val)
