"""One ``seed=`` for a reproducible run: torch (CPU and CUDA), numpy, Python and Pyro."""

from __future__ import annotations

import random

import numpy as np
import pyro
import torch

__all__ = ["seed_everything", "capture_rng_state", "restore_rng_state"]


def seed_everything(seed: int) -> None:
    """Seed torch (all devices), numpy's global generator, ``random`` and Pyro with ``seed``."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    pyro.set_rng_seed(int(seed))  # seeds torch, numpy and random together


def capture_rng_state() -> dict:
    """Snapshot of every global generator, storable with ``torch.save(weights_only=True)``."""
    np_state = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy_key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
        "numpy_pos": int(np_state["state"]["pos"]),
        "numpy_gauss": [int(np_state["has_gauss"]), float(np_state["gauss"])],
        "python": random.getstate(),
    }


def restore_rng_state(state: dict) -> None:
    """Restore generators captured by :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    has_gauss, gauss = state["numpy_gauss"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {
                "key": state["numpy_key"].numpy().astype(np.uint32),
                "pos": state["numpy_pos"],
            },
            "has_gauss": has_gauss,
            "gauss": gauss,
        }
    )
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
