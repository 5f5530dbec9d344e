"""The JAX twin's latent recurrence: ``jax.lax.associative_scan`` against ``lax.scan``.

    python -m benchmarks.jax_scan [--steps 100,1000,10000] [--batch 32] [--out PATH]

For each T and each solver (``parallel``: ``linear_recurrence(..., parallel=True)``, the
associative scan; ``sequential``: ``parallel=False``, ``lax.scan``) it times, on one XLA CPU
thread (``benchmarks.common`` sets the flag before JAX starts), two jitted functions of
z0 (B, Dz), decay (T,), drive (B, T, Dz) with Dz = 3: ``value`` (the path) and ``grad``
(value and gradient of a weighted sum of the path with respect to z0, decay and drive).
``compile_s`` (wall) and ``compile_cpu_s`` are the first call (trace + compile + run);
``median_s`` / ``min_s`` (``--clock``, default CPU time) are over ``--repeats`` later calls.
``loss_grad`` does the same for the whole Eq. 12 loss and its gradient
(``alternator_jax.loss``, 64-unit MLPs, Dx = 10) with either solver. Writes one JSON file
(default ``benchmarks/results/jax-scan-<platform>.json``) and prints it.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

# isort: off
from benchmarks.common import emit, time_call  # sets the one-thread XLA flag before JAX starts

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from alternators_ppl.runs import write_json  # noqa: E402

# isort: on


def _block(tree):
    return jax.tree_util.tree_map(lambda a: a.block_until_ready(), tree)


def _timed(fn, args, repeats: int, clock: str) -> dict:
    """First call (trace + compile + run; wall and CPU seconds), then the steady state."""
    wall, cpu = time.perf_counter(), time.process_time()
    _block(fn(*args))
    compile_s, compile_cpu_s = time.perf_counter() - wall, time.process_time() - cpu
    timing = time_call(lambda: _block(fn(*args)), repeats, warmup=1, clock=clock)
    return {
        "compile_s": compile_s,
        "compile_cpu_s": compile_cpu_s,
        "median_s": timing["median_s"],
        "min_s": timing["min_s"],
    }


def recurrence_functions(parallel: bool):
    """Jitted (value, grad) functions of the recurrence with the given solver."""
    from alternators_ppl.models.alternator_jax import linear_recurrence

    def value(z0, decay, drive):
        return linear_recurrence(z0, decay, drive, parallel=parallel)

    def objective(z0, decay, drive, weights):
        return (value(z0, decay, drive) * weights).sum()

    return jax.jit(value), jax.jit(jax.value_and_grad(objective, argnums=(0, 1, 2)))


def loss_function(parallel: bool, steps: int, batch: int):
    """Jitted value-and-grad of Eq. 12 (``alternator_jax.loss``) using the given solver."""
    import torch

    from alternators_ppl.models import Alternator
    from alternators_ppl.models import alternator_jax as aj

    torch.manual_seed(0)
    jax_model, params = aj.JaxAlternator.from_torch(Alternator(10, 3, hidden=(64,)))
    solver = aj.linear_recurrence

    def loss(params, x, key):
        aj.linear_recurrence = lambda z0, a, u: solver(z0, a, u, parallel=parallel)
        try:  # swapped only while tracing: the jitted function keeps the chosen solver
            return aj.loss(jax_model, params, x, key)
        finally:
            aj.linear_recurrence = solver

    x = jax.random.normal(jax.random.PRNGKey(1), (batch, steps, 10))
    return jax.jit(jax.value_and_grad(loss)), (params, x, jax.random.PRNGKey(2))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", default="100,1000,10000", help="comma-separated T values")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="cpu")
    parser.add_argument("--no-loss", action="store_true", help="skip the Eq. 12 loss timing")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/)")
    args = parser.parse_args(argv)
    device = jax.devices()[0]
    rows = []
    for steps in (int(s) for s in args.steps.split(",")):
        keys = jax.random.split(jax.random.PRNGKey(steps), 4)
        z0 = jax.random.normal(keys[0], (args.batch, 3))
        decay = 0.5 + 0.49 * jax.random.uniform(keys[1], (steps,))
        drive = jax.random.normal(keys[2], (args.batch, steps, 3))
        weights = jax.random.normal(keys[3], (args.batch, steps + 1, 3))
        paths = {}
        for parallel in (True, False):
            value, grad = recurrence_functions(parallel)
            name = "parallel" if parallel else "sequential"
            row = {"steps": steps, "batch": args.batch, "solver": name}
            row["value"] = _timed(value, (z0, decay, drive), args.repeats, args.clock)
            paths[parallel] = value(z0, decay, drive)
            row["grad"] = _timed(grad, (z0, decay, drive, weights), args.repeats, args.clock)
            if not args.no_loss:
                fn, fn_args = loss_function(parallel, steps, args.batch)
                row["loss_grad"] = _timed(fn, fn_args, max(3, args.repeats // 4), args.clock)
            rows.append(row)
        scale = float(jnp.abs(paths[False]).max())
        rows[-1]["max_abs_diff_vs_parallel"] = float(jnp.abs(paths[True] - paths[False]).max())
        rows[-1]["max_abs_path"] = scale
    record = {
        "item": "jax_scan",
        "device": str(device),
        "platform": device.platform,
        "jax": jax.__version__,
        "machine": platform.processor() or platform.machine(),
        "clock": args.clock,
        "load_avg_1min": os.getloadavg()[0],
        "rows": rows,
    }
    out = args.out or Path(__file__).parent / "results" / f"jax-scan-{device.platform}.json"
    write_json(out, record)
    emit(record)
    return record


if __name__ == "__main__":
    main()
