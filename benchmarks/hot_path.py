"""The CPU hot path: Eq. 12 loss + backward by formulation, against its matmul floor.

    python -m benchmarks.hot_path --batch 32 --steps 1000 [--threads 1] [--hidden 64]

Paths (same model, same data): ``sequential`` (the step-by-step torch loop, 2T network calls),
``logprob`` (the parallel path with the loss formed from two log-densities per factor and a
second FTN pass: the formulation before issue 17), ``parallel`` (``Alternator.loss``: the
blocked latent solve, the fully observed z-term from the drawn noise, one fused x-term) and
``compiled`` (opt-in, not in the default list: the same loss with both networks compiled by
``torch.compile`` through ``module.compile()``; ``compile_s`` is its first call). The matrix
products of one ``parallel`` step (forward and backward, batched products included) are
recorded with their shapes; ``flops`` is their arithmetic (2 M N K each) and ``floor_s`` the
time of replaying just those products on fresh tensors: ``floor_fraction`` = floor_s / path
time. ``--clock cpu`` times process CPU time instead of wall time (for a shared machine).
Prints one JSON record.
"""

from __future__ import annotations

import argparse
import copy
import os
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks.common import emit, time_call

MATMULS = {
    torch.ops.aten.mm.default,
    torch.ops.aten.addmm.default,
    torch.ops.aten.bmm.default,
}


class _RecordMatmuls(TorchDispatchMode):
    """Records (batch, M, K, N) of every matrix product that runs inside the mode (batch 1
    for 2-D products)."""

    def __init__(self):
        super().__init__()
        self.shapes: list[tuple[int, int, int, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in MATMULS:
            a, b = (args[1], args[2]) if func is torch.ops.aten.addmm.default else args[:2]
            batch = a.shape[0] if a.dim() == 3 else 1
            self.shapes.append((batch, a.shape[-2], a.shape[-1], b.shape[-1]))
        return func(*args, **(kwargs or {}))


def _logprob_loss(model, x):
    """The loss as it was formed before: log-densities of both factors, FTN run twice."""
    x, mask = model._prepare(x, None)
    z, x_ftn = model._rollout(x, mask, model.ftn_input)
    x_filled = torch.where(mask, x, x_ftn)
    return model._path_loss(x_filled, z, mask, x_ftn).sum() / x.shape[0] / x.shape[1]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--hidden", default="64", help="comma-separated hidden widths")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--paths", default="sequential,logprob,parallel")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: elapsed time; cpu: process CPU time (robust to a shared machine)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from alternators_ppl.models import Alternator

    hidden = tuple(int(h) for h in args.hidden.split(","))
    torch.manual_seed(0)
    model = Alternator(10, 3, hidden=hidden)
    x = torch.randn(args.batch, args.steps, 10)
    compiled = copy.deepcopy(model)
    losses = {
        "sequential": lambda: model.loss(x, parallel=False),
        "logprob": lambda: _logprob_loss(model, x),
        "parallel": lambda: model.loss(x),
        "compiled": lambda: compiled.loss(x),
    }
    record = {
        "item": "hot_path",
        "batch": args.batch,
        "steps": args.steps,
        "hidden": list(hidden),
        "threads": args.threads,
        "clock": args.clock,
        "load_avg_1min": os.getloadavg()[0],
    }
    for path in args.paths.split(","):

        def step(loss=losses[path]):
            model.zero_grad(set_to_none=True)
            compiled.zero_grad(set_to_none=True)
            loss().backward()

        if path == "compiled":  # first call: trace and compile both networks (wall seconds)
            compiled.otn.compile()
            compiled.ftn.compile()
            tic = time.perf_counter()
            step()
            record["compile_s"] = time.perf_counter() - tic

        timing = time_call(step, args.repeats, warmup=1, clock=args.clock)
        record[f"{path}_s"], record[f"{path}_min_s"] = timing["median_s"], timing["min_s"]

    recorder = _RecordMatmuls()
    with recorder:
        model.zero_grad(set_to_none=True)
        model.loss(x).backward()
    operands = [(torch.randn(g, m, k), torch.randn(g, k, n)) for g, m, k, n in recorder.shapes]

    def replay():
        for a, b in operands:
            if a.shape[0] == 1:
                torch.mm(a[0], b[0])
            else:
                torch.bmm(a, b)

    record["matmuls"] = len(operands)
    record["flops"] = sum(2 * g * m * k * n for g, m, k, n in recorder.shapes)
    timing = time_call(replay, args.repeats, warmup=1, clock=args.clock)
    record["floor_s"], record["floor_min_s"] = timing["median_s"], timing["min_s"]
    for path in ("parallel", "logprob", "compiled"):
        if f"{path}_s" in record:
            record[f"{path}_floor_fraction"] = record["floor_s"] / record[f"{path}_s"]
            if "sequential_s" in record:
                record[f"sequential_over_{path}"] = record["sequential_s"] / record[f"{path}_s"]
    emit(record)


if __name__ == "__main__":
    main()
