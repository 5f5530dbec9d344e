"""NOAA OISST v2.1 daily files cut into square boxes, split by year (the paper's SST setup).

An OISST daily file (``oisst-avhrr-v02r01.YYYYMMDD.nc``) holds ``sst (time=1, zlev=1, lat=720,
lon=1440)`` in degrees C, stored as int16 with ``scale_factor`` and ``_FillValue`` (land and
ice are fill). :func:`read_oisst_boxes` reads a list of such files (any grid size with that
schema), stacks them in time, cuts the grid into non-overlapping ``box x box`` patches and keeps
those with enough ocean; :func:`split_oisst_by_year` puts each day in train, validation or test
by its year (the paper: 1982-2019, 2020, 2021).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["OisstBoxes", "read_oisst_boxes", "split_oisst_by_year"]


@dataclass(frozen=True, eq=False)
class OisstBoxes:
    """Boxes of daily SST.

    Attributes:
        values: ``(B, T, box * box)`` float64 degrees C, NaN = land/ice/missing.
        time: ``(T,)`` datetime64[ns], sorted, one per day.
        lat0, lon0: ``(B,)`` latitude/longitude of each box's first cell.
        box: box side in cells.
    """

    values: np.ndarray
    time: np.ndarray
    lat0: np.ndarray
    lon0: np.ndarray
    box: int


def read_oisst_boxes(
    paths, box: int = 60, min_ocean: float = 0.9, variable: str = "sst"
) -> OisstBoxes:
    """Read daily OISST files and cut every day into the same ``box x box`` patches.

    Args:
        paths: iterable of NetCDF files (each with ``variable`` of dims (time, [zlev,] lat,
            lon)); the days may come in any order but must not repeat.
        box: patch side in grid cells (60 in the paper: 15 degrees at 0.25 degrees).
        min_ocean: keep a box if at least this share of its cells is ever observed.
        variable: the SST variable name.

    Returns:
        :class:`OisstBoxes`.
    """
    import xarray as xr

    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("paths must name at least one OISST file")
    if not (isinstance(box, int) and box >= 1):
        raise ValueError(f"box must be a positive integer, got {box!r}")
    if not 0.0 < min_ocean <= 1.0:
        raise ValueError(f"min_ocean must be in (0, 1], got {min_ocean}")
    days, fields, lat, lon = [], [], None, None
    for path in paths:
        try:
            data = xr.open_dataset(path)
        except Exception as error:
            raise ValueError(
                f"cannot read {path.name!r} as NetCDF: {str(error).splitlines()[0]}"
            ) from None
        with data:
            if variable not in data.data_vars:
                raise ValueError(
                    f"{path.name!r} has no variable {variable!r} ({', '.join(data.data_vars)})"
                )
            array = data[variable]
            if "zlev" in array.dims:
                array = array.isel(zlev=0)
            if set(array.dims) != {"time", "lat", "lon"}:
                raise ValueError(
                    f"{variable!r} of {path.name!r} must have dims (time, [zlev,] "
                    f"lat, lon), got {array.dims}"
                )
            array = array.transpose("time", "lat", "lon")
            if lat is None:
                lat, lon = array["lat"].values, array["lon"].values
            elif not (
                np.array_equal(lat, array["lat"].values)
                and np.array_equal(lon, array["lon"].values)
            ):
                raise ValueError(f"{path.name!r} has another grid than {paths[0].name!r}")
            days.append(np.asarray(array["time"].values, dtype="datetime64[ns]"))
            fields.append(np.asarray(array.values, dtype=np.float64))
    time = np.concatenate(days)
    field = np.concatenate(fields)  # (T, n_lat, n_lon)
    order = np.argsort(time, kind="stable")
    time, field = time[order], field[order]
    if (time[1:] == time[:-1]).any():
        raise ValueError(f"days repeat across files (e.g. {time[1:][time[1:] == time[:-1]][0]})")
    n_lat, n_lon = len(lat) // box, len(lon) // box
    if n_lat == 0 or n_lon == 0:
        raise ValueError(f"grid {len(lat)} x {len(lon)} holds no {box} x {box} box")
    values, lat0, lon0 = [], [], []
    for i in range(n_lat):
        for j in range(n_lon):
            patch = field[:, i * box : (i + 1) * box, j * box : (j + 1) * box]
            flat = patch.reshape(len(time), box * box)
            if (~np.isnan(flat)).any(0).mean() >= min_ocean:
                values.append(flat)
                lat0.append(lat[i * box])
                lon0.append(lon[j * box])
    if not values:
        raise ValueError(f"no {box} x {box} box has {min_ocean:.0%} ocean")
    return OisstBoxes(np.stack(values), time, np.asarray(lat0), np.asarray(lon0), box)


def split_oisst_by_year(
    boxes: OisstBoxes, train=(1982, 2019), val=(2020, 2020), test=(2021, 2021)
) -> dict[str, OisstBoxes]:
    """Split the days by year ranges (inclusive): ``{"train", "val", "test"}`` -> boxes.

    Raises ``ValueError`` if a split holds no day.
    """
    years = boxes.time.astype("datetime64[Y]").astype(int) + 1970
    out = {}
    for name, (first, last) in (("train", train), ("val", val), ("test", test)):
        keep = (years >= first) & (years <= last)
        if not keep.any():
            raise ValueError(f"no day of the {name} years {first}-{last} in the files")
        out[name] = OisstBoxes(
            boxes.values[:, keep], boxes.time[keep], boxes.lat0, boxes.lon0, boxes.box
        )
    return out
