"""Item 2: free-running sampling of S trajectories x T steps, batched over samples."""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import emit, single_thread, time_call


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    single_thread()
    from alternators_ppl.models import Alternator

    device = torch.device(args.device)
    model = Alternator(10, 3, hidden=(64,)).to(device)
    timing = time_call(lambda: model.sample(args.samples, args.steps), args.repeats, 1, device)
    emit(
        {
            "item": "sampling",
            "samples": args.samples,
            "steps": args.steps,
            "device": str(device),
            **timing,
            "trajectory_steps_per_s": args.samples * args.steps / timing["median_s"],
        }
    )


if __name__ == "__main__":
    main()
