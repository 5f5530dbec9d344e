"""Item 1, 4, 5: one Eq. 12 loss + backward, by path, at a given T and B.

Paths: ``trace`` (the pyro.markov program, :func:`trace_loss`), ``sequential`` (the torch
step-by-step recursion), ``parallel`` (batched networks + associative scan), ``jax`` (jitted
value-and-grad of the NumPyro/JAX interpretation). Dx=10, Dz=3, MLP with one hidden layer of 64.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import emit, peak_rss_bytes, single_thread, time_call


def torch_step(path: str, batch: int, steps: int, device: torch.device):
    from alternators_ppl.inference import trace_loss
    from alternators_ppl.models import Alternator

    model = Alternator(10, 3, hidden=(64,)).to(device)
    x = torch.randn(batch, steps, 10, device=device)

    def step():
        model.zero_grad(set_to_none=True)
        if path == "trace":
            loss = trace_loss(model, x)
        else:
            loss = model.loss(x, parallel=path == "parallel")
        loss.backward()

    return step


def jax_step(batch: int, steps: int, device: torch.device):
    import jax

    if device.type == "cpu":
        jax.config.update("jax_platforms", "cpu")

    from alternators_ppl.models import Alternator
    from alternators_ppl.models.alternator_jax import JaxAlternator, loss

    jax_model, params = JaxAlternator.from_torch(Alternator(10, 3, hidden=(64,)))
    x = jax.random.normal(jax.random.PRNGKey(0), (batch, steps, 10))
    value_and_grad = jax.jit(jax.value_and_grad(lambda p, k: loss(jax_model, p, x, k)))
    key = jax.random.PRNGKey(1)

    def step():
        value, grads = value_and_grad(params, key)
        jax.block_until_ready(grads)

    return step


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--path", choices=["trace", "sequential", "parallel", "jax"], required=True)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    single_thread()
    device = torch.device(args.device)
    base_rss = peak_rss_bytes()
    if args.path == "jax":
        step = jax_step(args.batch, args.steps, device)
    else:
        step = torch_step(args.path, args.batch, args.steps, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timing = time_call(step, args.repeats, warmup=1, device=device)
    record = {
        "item": "loss_step",
        "path": args.path,
        "steps": args.steps,
        "batch": args.batch,
        "device": str(device),
        **timing,
        "peak_rss_bytes": peak_rss_bytes(),
        "rss_before_bytes": base_rss,
    }
    if device.type == "cuda" and args.path != "jax":
        record["peak_cuda_bytes"] = torch.cuda.max_memory_allocated(device)
    emit(record)


if __name__ == "__main__":
    main()
