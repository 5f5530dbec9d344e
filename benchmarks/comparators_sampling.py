"""Free-running sampling throughput of the paper's comparators against the Alternator.

    python -m benchmarks.comparators_sampling --all [--quick] [--device cpu] [--out PATH]
    python -m benchmarks.comparators_sampling --model mamba --samples 1000 --steps 1000

Each model is the one ``compare`` builds (``build_model(name, 3)``, Lorenz-sized, untrained:
the cost of ``sample`` does not depend on the weights). ``--all`` times every model in a fresh
process and writes one JSON record with trajectory-steps per second and the ratio of each
model's rate to the Alternator's. The diffusion sampler runs 50 denoiser passes over the whole
(S, T) array; it gets 100 x 1000 draws by default (``--diffusion-samples``), its rate is per
trajectory-step all the same.
"""

from __future__ import annotations

import argparse
import datetime
import platform

import torch

from benchmarks.common import emit, peak_rss_bytes, single_thread, time_call

MODELS = ("alternator", "mamba", "neural-ode", "diffusion")


def measure(name: str, samples: int, steps: int, repeats: int, device: str) -> dict:
    """Median wall time of ``build_model(name, 3).sample(samples, steps)`` in this process."""
    from alternators_ppl.experiments.registry import build_model

    torch.manual_seed(0)
    dev = torch.device(device)
    model = build_model(name, 3, device=dev)
    warmup = 1 if samples * steps <= 200_000 else 0
    timing = time_call(lambda: model.sample(samples, steps), repeats, warmup, dev)
    return {
        "item": "comparators_sampling",
        "model": name,
        "samples": samples,
        "steps": steps,
        "device": str(dev),
        **timing,
        "trajectory_steps_per_s": samples * steps / timing["median_s"],
        "peak_rss_bytes": peak_rss_bytes(),
    }


def ratios(records: list[dict]) -> dict:
    """Each model's trajectory-steps/s divided by the Alternator's (from one run)."""
    rates = {r["model"]: r["trajectory_steps_per_s"] for r in records if "error" not in r}
    base = rates.get("alternator")
    return {m: (None if base is None else rate / base) for m, rate in rates.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS)
    parser.add_argument("--all", action="store_true", help="every model, each in a new process")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--diffusion-samples", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="20 x 50 draws, one repeat")
    parser.add_argument("--out", help="JSON file for --all (default: print only)")
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.steps, args.diffusion_samples, args.repeats = 20, 50, 20, 1
    single_thread()
    if not args.all:
        if args.model is None:
            parser.error("give --model NAME or --all")
        emit(measure(args.model, args.samples, args.steps, args.repeats, args.device))
        return
    from benchmarks.run import run_one

    records = []
    for name in MODELS:
        samples = args.diffusion_samples if name == "diffusion" else args.samples
        flags = {"samples": samples, "steps": args.steps, "repeats": args.repeats}
        arguments = [part for key, value in flags.items() for part in (f"--{key}", value)]
        records.append(
            run_one("comparators_sampling", "--model", name, *arguments, "--device", args.device)
        )
    result = {
        "item": "comparators_sampling",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "records": records,
        "rate_ratio_to_alternator": ratios(records),
    }
    if args.out:
        from alternators_ppl.runs import write_json

        write_json(args.out, result)
    emit(result)


if __name__ == "__main__":
    main()
