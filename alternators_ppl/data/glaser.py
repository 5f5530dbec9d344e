"""Loader for the preprocessed neural-decoding data of Glaser et al. (2020), "Machine learning
for neural decoding" (M1, S1 and hippocampus pickles, which the user supplies).

The file is a pickle of ``(neural_data, behaviour)`` (their ``example_data_*.pickle``: spike
counts (T, N) and velocity (M1, S1) or position (HC), (T, D)), or a dict with ``neural_data``
and one of ``vels_binned``, ``pos_binned`` or ``behaviour``. Features are the lagged bins of
Glaser's code (``bins_before`` earlier bins, the current bin if ``bins_current``, and
``bins_after`` later bins, flattened); the split is in time, 70% train / 15% validation /
15% test; features and behaviour are standardised with statistics of the training span only.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from alternators_ppl.data.decoding import DecodingTask, standardised_task

__all__ = ["read_glaser_pickle", "glaser_lagged", "glaser_task", "BEHAVIOUR_KEYS"]

BEHAVIOUR_KEYS = ("vels_binned", "pos_binned", "behaviour")


def read_glaser_pickle(path) -> tuple[np.ndarray, np.ndarray]:
    """Spike counts (T, N) and behaviour (T, D) as float64 from a Glaser-format pickle."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    with open(path, "rb") as handle:
        content = pickle.load(handle, encoding="latin1")  # their files are Python-2 pickles
    if isinstance(content, dict):
        if "neural_data" not in content:
            raise ValueError(f"{path}: dict without 'neural_data' (keys {sorted(content)})")
        found = [k for k in BEHAVIOUR_KEYS if k in content]
        if len(found) != 1:
            raise ValueError(f"{path}: expected exactly one of {BEHAVIOUR_KEYS}, found {found}")
        neural, behaviour = content["neural_data"], content[found[0]]
    elif isinstance(content, tuple | list) and len(content) == 2:
        neural, behaviour = content
    else:
        kind = type(content).__name__
        raise ValueError(f"{path}: expected (neural_data, behaviour) or a dict, got {kind}")
    neural, behaviour = np.asarray(neural, dtype=np.float64), np.asarray(behaviour, np.float64)
    if behaviour.ndim == 1:
        behaviour = behaviour[:, None]
    if neural.ndim != 2 or behaviour.ndim != 2 or len(neural) != len(behaviour):
        raise ValueError(
            f"{path}: neural_data (T, N) and behaviour (T, D) must share T, got "
            f"{neural.shape} and {behaviour.shape}"
        )
    return neural, behaviour


def glaser_lagged(neural: np.ndarray, bins_before: int, bins_current: int, bins_after: int):
    """Glaser's ``get_spikes_with_history``, flattened and without the NaN edge rows.

    neural (T, N) -> (T - bins_before - bins_after, N * (bins_before + bins_current +
    bins_after)); row i is time t = i + bins_before and holds the bins t - bins_before .. t +
    bins_after (t itself only if ``bins_current``), oldest first.
    """
    if min(bins_before, bins_after) < 0 or bins_current not in (0, 1):
        raise ValueError("bins_before and bins_after must be >= 0 and bins_current 0 or 1")
    offsets = [o for o in range(-bins_before, bins_after + 1) if o != 0 or bins_current]
    if not offsets:
        raise ValueError("no bins selected: set bins_before, bins_current or bins_after")
    steps = len(neural) - bins_before - bins_after
    if steps < 1:
        raise ValueError(f"{len(neural)} bins are too few for the lags")
    start = bins_before
    return np.concatenate([neural[start + o : start + o + steps] for o in offsets], axis=1)


def glaser_task(
    path,
    bins_before: int = 6,
    bins_current: int = 1,
    bins_after: int = 0,
    fractions=(0.7, 0.15, 0.15),
) -> DecodingTask:
    """A :class:`DecodingTask` from a Glaser-format pickle at ``path`` (train / val / test)."""
    neural, behaviour = read_glaser_pickle(path)
    x = glaser_lagged(neural, bins_before, bins_current, bins_after)
    z = behaviour[bins_before : len(behaviour) - bins_after]
    return standardised_task(
        x, z, fractions, tuple(f"b{d + 1}" for d in range(z.shape[1])),
        info={"task": "glaser", "path": str(path), "num_bins": len(neural),
              "num_neurons": neural.shape[1], "bins_before": bins_before,
              "bins_current": bins_current, "bins_after": bins_after},
        arrays={},
    )  # fmt: skip
