"""Semi-real decoding set: the real rat trajectory that ``ratinabox`` ships (Sargolini et al.
2006, ``data/sargolini.npz``: 29,800 positions at 50 Hz in a 1 m box) drives simulated place
cells with Poisson spiking; decode 2-D position and velocity.

Only the data file is read (``pip install --no-deps ratinabox`` is enough). Bins of 0.1 s
(5 samples); place cells have Gaussian fields (centres uniform in the box, widths U(0.08,
0.15) m, peak rates U(5, 20) Hz); features are the counts of bins t-2, t-1 and t, standardised
on train; behaviour (x, y, vx, vy) is standardised on train. Split in time 70 / 15 / 15.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from alternators_ppl.data.decoding import DecodingTask, lagged_bins, standardised_task
from alternators_ppl.data.lorenz import _positive_int

__all__ = ["sargolini_path", "load_sargolini", "ratinabox_task"]


def sargolini_path() -> Path:
    """Path of ratinabox's ``data/sargolini.npz``; ImportError with the install line if absent."""
    spec = importlib.util.find_spec("ratinabox")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("ratinabox is not installed: pip install --no-deps ratinabox")
    path = Path(spec.submodule_search_locations[0]) / "data" / "sargolini.npz"
    if not path.is_file():
        raise ImportError(f"ratinabox is installed but {path} is missing")
    return path


def load_sargolini() -> tuple[np.ndarray, np.ndarray]:
    """Times (29800,) in s and positions (29800, 2) in m of the Sargolini trajectory."""
    with np.load(sargolini_path()) as data:
        return np.asarray(data["t"], np.float64), np.asarray(data["pos"], np.float64)


def ratinabox_task(
    seed: int = 0,
    num_cells: int = 100,
    bin_samples: int = 5,
    lags=(2, 1, 0),
    max_bins: int | None = None,
    fractions=(0.7, 0.15, 0.15),
) -> DecodingTask:
    """Place-cell spikes along the real trajectory; z = (x, y, vx, vy) standardised on train.

    ``bin_samples`` 50 Hz samples make one bin; ``max_bins`` keeps only the first bins (for
    quick runs). ``seed`` draws the place fields and the spikes (the trajectory is data).
    """
    num_cells = _positive_int("num_cells", num_cells)
    bin_samples = _positive_int("bin_samples", bin_samples)
    t, pos = load_sargolini()
    dt = float(np.median(np.diff(t))) * bin_samples
    num_bins = len(pos) // bin_samples
    pos = pos[: num_bins * bin_samples].reshape(num_bins, bin_samples, 2).mean(1)
    if max_bins is not None:
        pos = pos[: _positive_int("max_bins", max_bins)]
    vel = np.gradient(pos, dt, axis=0)
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 1, (num_cells, 2))
    widths = rng.uniform(0.08, 0.15, num_cells)
    peaks = rng.uniform(5, 20, num_cells)
    sq = ((pos[:, None] - centres[None]) ** 2).sum(-1)
    rates = peaks * np.exp(-sq / (2 * widths**2)) * dt  # expected counts per bin
    counts = rng.poisson(rates).astype(np.float64)
    x = lagged_bins(counts, lags)
    z = np.concatenate([pos, vel], 1)[max(lags) :]
    return standardised_task(
        x, z, fractions, ("x", "y", "vx", "vy"),
        info={"task": "ratinabox", "seed": seed, "num_cells": num_cells, "bin_s": dt,
              "num_bins": len(pos), "spikes_per_bin": float(counts.mean()), "lags": list(lags)},
        arrays={"counts": counts, "position": pos, "velocity": vel},
    )  # fmt: skip
