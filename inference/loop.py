"""The one epoch loop that every trainer of the library runs (Eq. 12, SVI, the DMM, comparators).

A trainer supplies what one minibatch does (``train_batch``: forward, backward, optimiser step;
returns the batch's summed loss) and, optionally, a validation score. The loop owns the rest:
shuffling into minibatches, the progress bar, the non-finite stop, validation, the best and last
checkpoints, the time budget, exact resumption with a check of the run's arguments, and
callbacks. Everything it records is in the returned :class:`History`.
"""

from __future__ import annotations

import hashlib
import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
from tqdm.auto import tqdm

from alternators_ppl import distributed
from alternators_ppl.errors import NonFiniteLossError
from alternators_ppl.inference.checkpoint import load_checkpoint, save_checkpoint
from alternators_ppl.seeding import capture_rng_state, restore_rng_state

__all__ = [
    "History",
    "Checkpointing",
    "run_epochs",
    "data_fingerprint",
    "check_resume",
    "fixed_noise_sum",
    "CPU_CHUNK_STEPS",
    "gradient_chunk",
    "backward_in_chunks",
]

#: on the CPU a minibatch's gradient is accumulated over chunks of at most this many
#: sequence-steps (B_chunk x T): the working set then stays in the caches. At T = 1,000 on 2
#: cores this halves a training step from B = 32 up (docs/performance.md section 8).
CPU_CHUNK_STEPS = 8192


@dataclass
class History:
    """Per-epoch record of a training run (lists of length ``epochs`` run so far).

    ``steps`` counts optimiser steps, ``stop_reason`` is "epochs", "budget" or "callback".
    """

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    best_loss: float | None = None
    steps: int = 0
    stop_reason: str | None = None
    calibration: dict | None = None  # the noise selection after training, when one ran

    @property
    def epochs_run(self) -> int:
        """Number of epochs completed."""
        return len(self.train_loss)

    def to_dict(self) -> dict:
        """Plain-data copy (JSON-serialisable)."""
        return {**asdict(self), "epochs_run": self.epochs_run}

    @classmethod
    def from_dict(cls, data: Mapping) -> History:
        """Inverse of :meth:`to_dict` (older records without ``steps`` are accepted)."""
        return cls(**{k: v for k, v in data.items() if k != "epochs_run"})


@dataclass
class Checkpointing:
    """Where and what the loop checkpoints: ``directory/{best,last}.pt`` of ``module`` (and the
    optimiser/scheduler in ``last.pt``), tagged with ``run_args`` (a JSON-ready dict that a
    resumed run must match exactly)."""

    directory: Path
    module: torch.nn.Module
    optimizer: torch.optim.Optimizer | None = None
    scheduler: object | None = None
    run_args: dict = field(default_factory=dict)


def data_fingerprint(*tensors: torch.Tensor | None) -> str:
    """A short hash of the values and shapes of the given tensors (None entries allowed)."""
    digest = hashlib.sha256()
    for tensor in tensors:
        if tensor is None:
            digest.update(b"none")
            continue
        data = tensor.detach().to("cpu", torch.float64).contiguous()
        digest.update(str(tuple(data.shape)).encode())
        digest.update(torch.nan_to_num(data, nan=1.2345e308).numpy().tobytes())
    return digest.hexdigest()[:16]


def check_resume(stored: Mapping | None, current: Mapping, path: Path) -> None:
    """Raise ValueError naming every argument in which a resumed run differs from ``stored``."""
    if stored is None:
        raise ValueError(f"{path} records no run arguments; it cannot be resumed safely")
    keys = sorted(set(stored) | set(current))
    diffs = [
        f"{k}: checkpoint {stored.get(k)!r}, now {current.get(k)!r}"
        for k in keys
        if stored.get(k) != current.get(k)
    ]
    if diffs:
        raise ValueError(f"cannot resume from {path}: run arguments differ ({'; '.join(diffs)})")


def _run_args(ckpt: Checkpointing) -> dict:
    """The run's arguments; a data-parallel run adds its number of processes."""
    world = distributed.world_size()
    return ckpt.run_args if world == 1 else {**ckpt.run_args, "world_size": world}


def _resume(ckpt: Checkpointing, resume) -> tuple[History, int] | None:
    last = ckpt.directory / "last.pt"
    # rank 0 decides whether there is a checkpoint; every rank then reads it (a shared folder)
    if not distributed.broadcast_object(last.is_file()):
        if resume == "auto":
            return None
        raise ValueError(f"resume=True but there is no checkpoint {last}; use resume='auto'")
    extra = load_checkpoint(last, ckpt.module, ckpt.optimizer, ckpt.scheduler)
    check_resume(extra.get("run_args"), _run_args(ckpt), last)
    if distributed.rank() > 0:  # each rank continues its own random stream
        state = extra["rank_rng"][distributed.rank() - 1]
        state["torch"] = state["torch"].cpu()
        state["cuda"] = [s.cpu() for s in state["cuda"]]
        state["numpy_key"] = state["numpy_key"].cpu()
        restore_rng_state(state)
    return History.from_dict(extra["history"]), extra["epoch"]


def fixed_noise_sum(
    score: Callable[[torch.Tensor], float],
    num_items: int,
    chunk_size: int,
    seed: int,
    device,
) -> float:
    """Sum of ``score(index)`` over chunks of ``chunk_size`` consecutive items, chunk c under
    the torch seed ``seed + c`` (the global random state is left untouched).

    For validation with fixed noise: the value does not depend on the number of processes,
    since under a process group rank r scores chunks r, r + W, ... and the sums are all-reduced.
    """
    device = torch.device(device)
    devices = [device] if device.type == "cuda" else []
    total = 0.0
    chunks = range(0, num_items, chunk_size)
    for c in range(distributed.rank(), len(chunks), distributed.world_size()):
        begin = chunks[c]
        index = torch.arange(begin, min(begin + chunk_size, num_items), device=device)
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed + c)
            total += score(index)
    return distributed.all_reduce_floats([total])[0]


def gradient_chunk(num_sequences: int, num_steps: int, device) -> int | None:
    """Sequences per gradient chunk for a minibatch of ``num_sequences`` sequences of
    ``num_steps`` steps on ``device``: on the CPU, the fewest equal chunks of at most
    ``CPU_CHUNK_STEPS`` sequence-steps (one sequence each at least); None (the whole minibatch
    at once) on an accelerator, which wants large batches."""
    if torch.device(device).type != "cpu":
        return None
    pieces = math.ceil(num_sequences * num_steps / CPU_CHUNK_STEPS)
    return max(1, math.ceil(num_sequences / max(1, pieces)))


def backward_in_chunks(
    loss_of: Callable[[torch.Tensor], torch.Tensor], index: torch.Tensor, chunk: int | None
) -> float:
    """Back-propagate the mean loss of the minibatch ``index`` (1-D) chunk by chunk.

    ``loss_of(part)`` is the mean loss over the sequences ``part`` (a scalar tensor); each
    chunk of at most ``chunk`` sequences (None: all) adds its gradient weighted by
    len(part) / len(index), so the accumulated gradient is the minibatch mean's. Returns the
    minibatch's mean loss; a non-finite chunk loss is returned at once, unpropagated (the
    caller then skips the step).
    """
    total = 0.0
    for part in index.split(len(index) if chunk is None else chunk):
        loss = loss_of(part)
        value = loss.item()
        if not math.isfinite(value):
            return value
        (loss * (len(part) / len(index))).backward()
        total += value * len(part)
    return total / len(index)


def run_epochs(
    train_batch: Callable[[torch.Tensor], float],
    num_train: int,
    *,
    epochs: int,
    batch_size: int,
    device,
    normaliser: float | None = None,
    validate: Callable[[], float] | None = None,
    current_lr: Callable[[], float] | None = None,
    end_epoch: Callable[[], None] | None = None,
    keep_best: torch.nn.Module | None = None,
    checkpointing: Checkpointing | None = None,
    resume: bool | Literal["auto"] = False,
    budget_s: float | None = None,
    callback: Callable[[int, History], bool | None] | None = None,
    progress: bool = False,
    desc: str = "fit",
) -> History:
    """Run up to ``epochs`` epochs over ``num_train`` sequences; return the :class:`History`.

    Each epoch draws a random permutation (from the global torch generator, on the CPU, then
    moved to ``device``) and calls ``train_batch(index)`` per minibatch of ``batch_size``
    indices; the returned float (the batch's summed loss) must be finite, and the epoch's
    train loss is the sum divided by ``normaliser`` (default ``num_train``). ``train_batch``
    may raise :class:`NonFiniteLossError` itself (e.g. for a non-finite gradient norm); the loop
    adds where it happened. After the batches: ``current_lr()`` is recorded, ``end_epoch()`` runs
    (a scheduler step), and ``validate()`` (if given) scores the epoch, else the train loss does.
    The best score's weights of ``keep_best`` are restored at the end. With ``checkpointing``,
    ``best.pt`` and ``last.pt`` are written atomically after each epoch, tagged with the run's
    arguments; ``resume=True`` continues exactly from ``last.pt`` (an error if it is missing or
    its arguments differ), ``resume="auto"`` does so only when it exists. Training stops after
    the epoch in which the summed epoch time reaches ``budget_s``, or when ``callback(epoch,
    history)`` returns True.
    """
    if resume not in (False, True, "auto"):
        raise ValueError(f"resume must be False, True or 'auto', got {resume!r}")
    if resume and checkpointing is None:
        raise ValueError("resume needs checkpoint_dir")
    if budget_s is not None and not (isinstance(budget_s, int | float) and budget_s > 0):
        raise ValueError(f"budget_s must be a positive number of seconds, got {budget_s!r}")
    normaliser = num_train if normaliser is None else normaliser
    world, here = distributed.world_size(), distributed.rank()
    if world > 1 and min(batch_size, num_train) < world:
        raise ValueError(
            f"batch_size ({batch_size}) and the number of sequences ({num_train}) must be at "
            f"least the number of processes ({world})"
        )
    history, start = History(), 0
    resumed = _resume(checkpointing, resume) if resume else None
    if resumed is not None:
        history, start = resumed
    elif here > 0:
        torch.manual_seed(torch.initial_seed() + here)
    where = ""
    if checkpointing is not None:
        where = f"; last good checkpoint: {checkpointing.directory / 'last.pt'}"
    best_state = None
    history.stop_reason = "epochs"
    bar = tqdm(
        range(start, epochs),
        initial=start,
        total=epochs,
        desc=desc,
        unit="epoch",
        disable=not progress or not sys.stderr.isatty() or here > 0,
    )
    for epoch in bar:
        tic = time.perf_counter()
        if world == 1:
            order = torch.randperm(num_train).to(device)
        else:
            mine = torch.randperm(num_train) if here == 0 else torch.empty(num_train).long()
            order = distributed.broadcast_tensor(mine).to(device)
        total = 0.0
        for batch, begin in enumerate(range(0, num_train, batch_size), start=1):
            try:
                loss = train_batch(distributed.shard(order[begin : begin + batch_size]))
            except NonFiniteLossError as error:
                context = f"at epoch {epoch + 1}, batch {batch}{where}"
                raise NonFiniteLossError(f"{error} {context}") from None
            history.steps += 1
            if not math.isfinite(loss):
                context = f"at epoch {epoch + 1}, batch {batch}{where}"
                raise NonFiniteLossError(f"loss is {loss} {context}")
            total += loss
        if current_lr is not None:
            history.lr.append(current_lr())
        if end_epoch is not None:
            end_epoch()
        history.train_loss.append(total / normaliser)
        score = history.train_loss[-1]
        if validate is not None:
            score = distributed.broadcast_object(validate())
            if not math.isfinite(score):
                raise NonFiniteLossError(f"validation loss is {score} at epoch {epoch + 1}{where}")
            history.val_loss.append(score)
        seconds = distributed.all_reduce_floats([time.perf_counter() - tic], "max")[0]
        history.epoch_seconds.append(seconds)
        improved = history.best_loss is None or score < history.best_loss
        if improved:
            history.best_epoch, history.best_loss = epoch + 1, score
        if checkpointing is not None:
            _save(checkpointing, epoch + 1, history, improved)
        bar.set_postfix(loss=f"{history.train_loss[-1]:.4g}", val=f"{score:.4g}")
        if improved and keep_best is not None:
            best_state = {k: v.detach().clone() for k, v in keep_best.state_dict().items()}
        if budget_s is not None and sum(history.epoch_seconds) >= budget_s:
            history.stop_reason = "budget"
            break
        stop = callback is not None and bool(callback(epoch + 1, history))
        if distributed.broadcast_object(stop):
            history.stop_reason = "callback"
            break
    if keep_best is not None:
        if best_state is not None:
            keep_best.load_state_dict(best_state)
        elif checkpointing is not None and (checkpointing.directory / "best.pt").is_file():
            load_checkpoint(checkpointing.directory / "best.pt", keep_best, restore_rng=False)
    return history


def _save(ckpt: Checkpointing, epoch: int, history: History, improved: bool) -> None:
    extra = {"epoch": epoch, "history": history.to_dict(), "run_args": _run_args(ckpt)}
    if distributed.is_distributed():  # every rank's random state; only rank 0 writes
        extra["rank_rng"] = distributed.all_gather_objects(capture_rng_state())[1:]
        if not distributed.is_main_process():
            return
    if improved:
        save_checkpoint(ckpt.directory / "best.pt", ckpt.module, **extra)
    last = ckpt.directory / "last.pt"
    save_checkpoint(last, ckpt.module, ckpt.optimizer, ckpt.scheduler, **extra)
