"""The CPU hot path: Eq. 12 loss + backward by formulation, against its matmul floor.

    python -m benchmarks.hot_path --batch 32 --steps 1000 [--threads 1] [--hidden 64]

Paths (same model, same data): ``sequential`` (the step-by-step torch loop, 2T network calls),
``logprob`` (the parallel path with the loss formed from two log-densities per factor and a
second FTN pass: the formulation before issue 17), ``parallel`` (``Alternator.loss``: the
blocked latent solve, the fully observed z-term from the drawn noise, one fused x-term) and
``chunked`` (what ``fit`` runs on the CPU: the same loss, its gradient accumulated over the
fewest equal chunks of at most ``CPU_CHUNK_STEPS`` sequence-steps (``gradient_chunk``), so
the working set stays in cache; ``chunked_floor`` replays that path's own, smaller matrix
products) and
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
import statistics
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from alternators_ppl.inference.loop import backward_in_chunks, gradient_chunk
from alternators_ppl.models import linear_recurrence
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


def _before_loss(model, x):
    """``Alternator.loss`` as it was before the blocked solve (main at 7cecb53), fully observed
    x: Hillis-Steele scan, the FTN output reused, the z-term formed from the path, the OTN
    run on the strided z_{0:T-1}, the x-term masked. Same draws, same value."""
    x, mask = model._prepare(x, None)
    batch, steps, _ = x.shape
    alpha = model.alpha_schedule(steps)
    z0 = torch.randn(batch, model.latent_dim, dtype=x.dtype)
    torch.randn_like(x)  # the x noise (unused when x is observed)
    eps_z = model.sigma_z * torch.randn(batch, steps, model.latent_dim, dtype=x.dtype)
    decay = torch.sqrt(1 - alpha - model.sigma_z**2)
    (~mask).any(dim=2).any(dim=0).tolist()  # the host sync of the rollout
    ftn_part = torch.sqrt(alpha).unsqueeze(-1) * model.ftn(x)
    segment = linear_recurrence(z0, decay, ftn_part + eps_z, method="scan")[:, 1:]
    z = torch.cat([z0.unsqueeze(1), segment], dim=1)
    x_filled = torch.where(mask, x, torch.cat([x[:, :steps]], dim=1))
    x_err = (x_filled - model.x_loc(z[:, :-1])).square()
    z_mean = ftn_part + torch.sqrt(1 - alpha - model.sigma_z**2).unsqueeze(-1) * z[:, :-1]
    z_err = (z[:, 1:] - z_mean).square().sum()
    eq12 = model.sigma_z**2 * (x_err * mask).sum() + model.sigma_x**2 * z_err
    return eq12 / batch / steps


def _interleaved(steps: dict, repeats: int, clock: str) -> dict:
    """Time every step once per round, ``repeats`` rounds (after one warm-up round): load
    changes on a shared machine then hit every path alike. {path: (median_s, min_s)}."""
    for step in steps.values():
        step()
    times = {path: [] for path in steps}
    for _ in range(repeats):
        for path, step in steps.items():
            times[path].append(time_call(step, 1, warmup=0, clock=clock)["median_s"])
    return {path: (statistics.median(t), min(t)) for path, t in times.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--hidden", default="64", help="comma-separated hidden widths")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--paths", default="sequential,logprob,parallel,chunked")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: elapsed time; cpu: process CPU time (robust to a shared machine)",
    )
    parser.add_argument(
        "--interleave", action="store_true", help="time the paths in rounds, one call each"
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
        "before": lambda: _before_loss(model, x),
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
    index = torch.arange(args.batch)
    chunk = gradient_chunk(args.batch, args.steps, "cpu")

    def chunked_step():
        model.zero_grad(set_to_none=True)
        backward_in_chunks(lambda part: model.loss(x[part]), index, chunk)

    steps = {}
    for path in args.paths.split(","):
        if path == "chunked":  # what fit runs on the CPU
            steps[path] = chunked_step
            continue

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
        steps[path] = step
    if args.interleave:
        for path, (median, least) in _interleaved(steps, args.repeats, args.clock).items():
            record[f"{path}_s"], record[f"{path}_min_s"] = median, least
    else:
        for path, step in steps.items():
            timing = time_call(step, args.repeats, warmup=1, clock=args.clock)
            record[f"{path}_s"], record[f"{path}_min_s"] = timing["median_s"], timing["min_s"]

    record["chunk_sequences"] = chunk
    for name, whole in (("floor", True), ("chunked_floor", False)):
        recorder = _RecordMatmuls()
        with recorder:
            model.zero_grad(set_to_none=True)
            model.loss(x).backward() if whole else chunked_step()
        operands = [(torch.randn(g, m, k), torch.randn(g, k, n)) for g, m, k, n in recorder.shapes]

        def replay(operands=operands):
            for a, b in operands:
                if a.shape[0] == 1:
                    torch.mm(a[0], b[0])
                else:
                    torch.bmm(a, b)

        if whole:
            record["matmuls"] = len(operands)
            record["flops"] = sum(2 * g * m * k * n for g, m, k, n in recorder.shapes)
        timing = time_call(replay, args.repeats, warmup=1, clock=args.clock)
        record[f"{name}_s"], record[f"{name}_min_s"] = timing["median_s"], timing["min_s"]
    if "chunked_s" in record:
        record["chunked_floor_fraction"] = record["chunked_floor_s"] / record["chunked_s"]
        if "sequential_s" in record:
            record["sequential_over_chunked"] = record["sequential_s"] / record["chunked_s"]
    for path in ("parallel", "logprob", "compiled", "before"):
        if f"{path}_s" in record:
            record[f"{path}_floor_fraction"] = record["floor_s"] / record[f"{path}_s"]
            if "sequential_s" in record:
                record[f"sequential_over_{path}"] = record["sequential_s"] / record[f"{path}_s"]
    emit(record)


if __name__ == "__main__":
    main()
