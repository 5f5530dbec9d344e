"""Atomic checkpoints of a training run: model, optimiser, scheduler, history and RNG state."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from alternators_ppl.runs import atomic_write
from alternators_ppl.seeding import capture_rng_state, restore_rng_state

__all__ = ["save_checkpoint", "load_checkpoint"]


def save_checkpoint(path, model, optimizer=None, scheduler=None, **extra) -> Path:
    """Write a checkpoint atomically (temp file in the same folder, then rename); return its path.

    Holds the model's ``state_dict``, the optimiser's and scheduler's when given, the state of
    every global random generator and ``extra`` (plain data: ints, floats, lists, dicts).
    """
    path = Path(path)
    state = {
        "model": model.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "rng": capture_rng_state(),
        "extra": extra,
    }

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())

    atomic_write(path, write)
    return path


def load_checkpoint(path, model, optimizer=None, scheduler=None, restore_rng: bool = True) -> dict:
    """Load a checkpoint into ``model`` (and optimiser/scheduler); return its ``extra`` dict.

    Tensors land on the model's device. ``restore_rng`` also restores the random generators,
    so that a resumed run continues the same random stream.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    device = next(iter(model.buffers()), torch.empty(0)).device
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # truncated, corrupt or not a checkpoint at all
        raise ValueError(f"unreadable checkpoint {path}: {type(error).__name__}") from error
    if not isinstance(state, dict) or not {"model", "rng", "extra"} <= set(state):
        raise ValueError(f"unreadable checkpoint {path}: not a checkpoint of this library")
    model.load_state_dict(state["model"])
    if optimizer is not None and state["optimizer"] is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    if restore_rng:
        rng = state["rng"]
        rng["torch"] = rng["torch"].cpu()
        rng["cuda"] = [s.cpu() for s in rng["cuda"]]
        rng["numpy_key"] = rng["numpy_key"].cpu()
        restore_rng_state(rng)
    return state["extra"]
