"""Shared benchmark plumbing: one thread, timing medians, peak memory, JSON output."""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time

os.environ.setdefault(
    "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)

import torch  # noqa: E402

from alternators_ppl.runs import write_json  # noqa: E402

__all__ = ["single_thread", "time_call", "peak_rss_bytes", "emit", "synchronize"]


def single_thread() -> None:
    """One intra-op thread (the machines here are 2 shared cores)."""
    torch.set_num_threads(1)


def synchronize(device: torch.device | None) -> None:
    """Wait for queued CUDA work so that wall times are real."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def time_call(
    fn, repeats: int, warmup: int = 1, device: torch.device | None = None, clock: str = "wall"
) -> dict:
    """Median and min time (seconds) of ``fn()`` over ``repeats`` after ``warmup`` calls.

    ``clock="wall"`` (default) is elapsed time; ``clock="cpu"`` is this process's CPU time
    (all its threads), which time slices lost to other processes on a shared machine do not
    inflate (CPU only: GPU work is not CPU time)."""
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {sorted(CLOCKS)}, got {clock!r}")
    now = CLOCKS[clock]
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        tic = now()
        fn()
        synchronize(device)
        times.append(now() - tic)
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": repeats}


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def emit(record: dict, out=None) -> None:
    """Print one JSON record on stdout (the runner reads the last line); with ``out``, first
    write it there too (indented, atomically: :func:`alternators_ppl.runs.write_json`)."""
    if out:
        write_json(out, record)
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()
