"""Data-parallel helpers on plain ``torch.distributed`` (gloo on CPU, nccl on CUDA).

Every floor asks the same questions here: is a process group running (:func:`is_distributed`),
which rank am I (:func:`rank`, :func:`is_main_process`), how many are we (:func:`world_size`).
Without a process group (or with one process) every helper is a no-op that returns its input,
so single-process code paths are unchanged. ``torchrun`` sets ``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK``; :func:`init_from_env` starts the group from them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch
import torch.distributed as dist

__all__ = [
    "launched_by_torchrun",
    "init_from_env",
    "process_group",
    "is_distributed",
    "rank",
    "world_size",
    "is_main_process",
    "shard",
    "barrier",
    "broadcast_object",
    "broadcast_tensor",
    "broadcast_module",
    "all_reduce_floats",
    "all_gather_objects",
    "average_gradients",
    "sum_gradients",
    "stage_on_main",
    "publish_on_main",
]


def launched_by_torchrun() -> bool:
    """True when the environment of this process names a world of more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device="cpu") -> torch.device:
    """Start the process group from torchrun's environment; return this rank's device.

    Backend nccl when ``device`` is CUDA (each rank takes ``cuda:LOCAL_RANK``), else gloo.
    Without a torchrun environment, or when a group already runs, nothing is started and
    ``device`` is returned as a torch.device.
    """
    device = torch.device(device)
    if not launched_by_torchrun():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if dist.is_available() and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


@contextlib.contextmanager
def process_group(device="cpu") -> Iterator[torch.device]:
    """:func:`init_from_env` for the duration of a block; the group it started is destroyed
    on exit. Yields this rank's device."""
    started = launched_by_torchrun() and dist.is_available() and not dist.is_initialized()
    resolved = init_from_env(device)
    try:
        yield resolved
    finally:
        if started and dist.is_initialized():
            dist.destroy_process_group()


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on rank 0 (and in a single process): the one that writes files."""
    return rank() == 0


def _comm_device() -> torch.device:
    """Where collective buffers live: the current CUDA device for nccl, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def shard(index: torch.Tensor) -> torch.Tensor:
    """This rank's share of a global minibatch of indices: ``index[rank::world_size]``."""
    return index[rank() :: world_size()] if is_distributed() else index


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if is_distributed():
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s picklable ``obj`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_tensor(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Rank ``src``'s tensor on every rank (same shape and dtype everywhere; returned on the
    device it came from)."""
    if not is_distributed():
        return tensor
    buffer = tensor.to(_comm_device()).contiguous()
    dist.broadcast(buffer, src=src)
    return buffer.to(tensor.device)


@torch.no_grad()
def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers into ``module`` on every rank."""
    if not is_distributed():
        return
    for tensor in [*module.parameters(), *module.buffers()]:
        tensor.copy_(broadcast_tensor(tensor.detach(), src))


def all_reduce_floats(values: Iterable[float], op: str = "sum") -> list[float]:
    """Element-wise ``op`` ("sum" or "max") of a list of floats over ranks (float64)."""
    values = [float(v) for v in values]
    if not is_distributed():
        return values
    ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}
    if op not in ops:
        raise ValueError(f"op must be 'sum' or 'max', got {op!r}")
    buffer = torch.tensor(values, dtype=torch.float64, device=_comm_device())
    dist.all_reduce(buffer, op=ops[op])
    return buffer.tolist()


def all_gather_objects(obj) -> list:
    """Every rank's picklable ``obj``, in rank order (``[obj]`` in one process)."""
    if not is_distributed():
        return [obj]
    gathered = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


@torch.no_grad()
def _reduce_gradients(params, scale: float, loss: float, count: int, mean: bool):
    """One all-reduce of [loss * scale, count, has-grad flags, grads * scale] (float64)."""
    params = list(params)
    has = [p.grad is not None for p in params]
    header = torch.tensor([loss * scale, float(count), *map(float, has)], dtype=torch.float64)
    parts = [header.to(_comm_device())]
    for p, present in zip(params, has, strict=True):
        grad = p.grad.detach() * scale if present else torch.zeros_like(p)
        parts.append(grad.reshape(-1).to(_comm_device(), torch.float64))
    buffer = torch.cat(parts)
    dist.all_reduce(buffer)
    total_count = buffer[1].item()
    divisor = total_count if mean else 1.0
    offset = 2 + len(params)
    for i, p in enumerate(params):
        size = p.numel()
        if buffer[2 + i].item() > 0:
            grad = (buffer[offset : offset + size] / divisor).reshape(p.shape)
            p.grad = grad.to(p.device, p.dtype)
        offset += size
    return buffer[0].item(), int(total_count)


def average_gradients(params, count: int, loss: float) -> tuple[float, int]:
    """Make gradients of a per-item MEAN loss over this rank's ``count`` items into the
    gradients of the mean over the global minibatch (all ranks' items), exactly, for any
    split; return (global summed loss, global count). ``loss`` is this rank's mean (0 when
    ``count`` is 0). Parameters without a gradient on every rank keep ``grad = None``."""
    if not is_distributed():
        return loss * count, count
    return _reduce_gradients(params, float(count), loss, count, mean=True)


def sum_gradients(params, loss: float, count: int = 1) -> tuple[float, int]:
    """Gradients (and ``loss``) of a SUMMED loss, summed over ranks: the gradients one process
    would get on the global minibatch; return (global loss, global count)."""
    if not is_distributed():
        return loss, count
    return _reduce_gradients(params, 1.0, loss, count, mean=False)


def stage_on_main(stage: Callable[[], tuple[Path, Path]]) -> tuple[Path, Path]:
    """Stage a run folder on rank 0 only: ``stage()`` -> (final, staging) runs there (e.g.
    ``runs.stage_run_folder``) and its error, if any, is raised on every rank. Every rank gets
    rank 0's final path; ranks > 0 get a private temporary staging folder that
    :func:`publish_on_main` discards, so a job can run the same code (and the same
    collectives) on every rank while only rank 0's files are published."""
    if is_main_process():
        try:
            final, staging = stage()
        except BaseException as error:
            broadcast_object(error)  # the other ranks stop with the same error
            raise
        broadcast_object(final)
        return final, staging
    final = broadcast_object(None)
    if isinstance(final, BaseException):
        raise final
    return Path(final), Path(tempfile.mkdtemp(prefix=f".rank{rank()}-", suffix=".discard"))


def publish_on_main(staging: Path, final: Path, publish: Callable[[Path, Path], Path]) -> Path:
    """Rank 0: ``publish(staging, final)`` (e.g. ``runs.publish_run_folder``); ranks > 0
    delete their staging folder from :func:`stage_on_main`. Returns the final path."""
    if is_main_process():
        return publish(staging, final)
    shutil.rmtree(staging, ignore_errors=True)
    return final
