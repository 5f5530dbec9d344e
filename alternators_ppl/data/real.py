"""Real data that installs offline from the package registries (the ``[data]`` extra).

* :func:`nino_series`: the CPC ERSSTv4 monthly Nino indices shipped by PyWavelets
  (``pywt/data/sst_nino3.npz``): 800 months, Jan 1950 to Aug 2016, regions Nino 1+2, 3, 4 and
  3.4, each as absolute temperature and anomaly, in degrees C.
* :func:`ostia_series`: the OSTIA monthly sea-surface temperature field shipped by
  ``iris-sample-data`` (``sample_data/ostia_monthly.nc``): 54 months (Apr 2006 to Sep 2010) x 18
  latitudes x 432 longitudes of the equatorial band, in kelvin; land (fill 1e20) is missing.
* :func:`sunspots_series`: yearly mean sunspot numbers 1700-2008 (309 years), and
  :func:`co2_series`: weekly Mauna Loa CO2 (ppm) from March 1958 to December 2001 (2,284
  weeks, 59 missing), both from the datasets that ship with ``statsmodels``.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
from pathlib import Path

import numpy as np

from alternators_ppl.data.readers import Series, read_netcdf

__all__ = [
    "NINO_REGIONS",
    "co2_series",
    "nino_path",
    "nino_series",
    "ocean_tiles",
    "ostia_path",
    "ostia_series",
    "sunspots_series",
]

#: region names in the order of the npz columns
NINO_REGIONS = ("nino12", "nino3", "nino4", "nino34")
_EXTRA = "pip install 'alternators-ppl[data]'"


def nino_path() -> Path:
    """Path of PyWavelets' ``sst_nino3.npz``; ImportError naming the extra if absent."""
    if importlib.util.find_spec("pywt") is None:
        raise ImportError(f"the Nino indices need PyWavelets: {_EXTRA}")
    return Path(str(importlib.resources.files("pywt.data") / "sst_nino3.npz"))


def nino_series(kind: str = "anomaly", regions=NINO_REGIONS) -> Series:
    """The monthly Nino indices as a :class:`Series` (1, 800, len(regions)), degrees C.

    Args:
        kind: ``"anomaly"`` (departure from the monthly climatology) or ``"absolute"``.
        regions: a subset of :data:`NINO_REGIONS`.
    """
    if kind not in ("anomaly", "absolute"):
        raise ValueError(f"kind must be 'anomaly' or 'absolute', got {kind!r}")
    regions = tuple(regions)
    unknown = [r for r in regions if r not in NINO_REGIONS]
    if unknown or not regions:
        raise ValueError(f"regions must be a non-empty subset of {NINO_REGIONS}, got {regions}")
    import pandas as pd

    data = np.load(nino_path())["data"]  # (800, 10): year, month, (absolute, anomaly) x 4
    time = pd.to_datetime(
        {"year": data[:, 0].astype(int), "month": data[:, 1].astype(int), "day": 1}
    ).to_numpy(dtype="datetime64[ns]")
    offset = 1 if kind == "anomaly" else 0
    picked = [2 + 2 * NINO_REGIONS.index(r) + offset for r in regions]
    values = data[None, :, picked].astype(np.float64)
    columns = tuple(f"{r}_{'anom' if kind == 'anomaly' else 'abs'}" for r in regions)
    return Series(values, time, columns, freq="MS", source="ERSSTv4 Nino indices (pywt)")


def ostia_path() -> Path:
    """Path of iris-sample-data's ``ostia_monthly.nc``; ImportError naming the extra if absent."""
    spec = importlib.util.find_spec("iris_sample_data")
    if spec is None:
        raise ImportError(f"the OSTIA field needs iris-sample-data: {_EXTRA}")
    return Path(spec.submodule_search_locations[0]) / "sample_data" / "ostia_monthly.nc"


def ostia_series(region: dict | None = None) -> Series:
    """The OSTIA monthly SST field (kelvin) as a gridded :class:`Series`.

    ``region`` selects by position, e.g. ``{"latitude": slice(0, 18), "longitude":
    slice(0, 18)}``; land cells (missing at every step) are not columns, see ``series.grid``.
    """
    return read_netcdf(ostia_path(), "surface_temperature", region=region, fill_value=1e20)


def ocean_tiles(size: int = 18, min_ocean: float = 0.95) -> list[int]:
    """First longitude index of each non-overlapping ``size``-wide tile of the OSTIA band
    (all 18 latitudes) whose share of ocean cells is at least ``min_ocean``."""
    full = ostia_series()
    land = np.ones(np.prod(full.grid.shape), dtype=bool)
    land[full.grid.cells] = False
    land = land.reshape(full.grid.shape)
    starts = range(0, full.grid.shape[1] - size + 1, size)
    return [s for s in starts if 1.0 - land[:, s : s + size].mean() >= min_ocean]


def _statsmodels_datasets():
    if importlib.util.find_spec("statsmodels") is None:
        raise ImportError(f"the sunspot and CO2 series need statsmodels: {_EXTRA}")
    import statsmodels.api as sm

    return sm.datasets


def sunspots_series() -> Series:
    """Yearly mean sunspot numbers, 1700-2008, as a :class:`Series` (1, 309, 1)."""
    frame = _statsmodels_datasets().sunspots.load_pandas().data
    time = np.array([f"{int(y)}-01-01" for y in frame["YEAR"]], dtype="datetime64[ns]")
    values = frame["SUNACTIVITY"].to_numpy(np.float64)[None, :, None]
    return Series(values, time, ("sunactivity",), freq="YS", source="sunspots (statsmodels)")


def co2_series() -> Series:
    """Weekly atmospheric CO2 at Mauna Loa (ppm), 29 Mar 1958 to 29 Dec 2001, as a
    :class:`Series` (1, 2284, 1); the 59 weeks without a value are NaN (missing)."""
    frame = _statsmodels_datasets().co2.load_pandas().data
    time = frame.index.to_numpy(dtype="datetime64[ns]")
    values = frame["co2"].to_numpy(np.float64)[None, :, None]
    return Series(values, time, ("co2",), freq="W-SAT", source="Mauna Loa CO2 (statsmodels)")
