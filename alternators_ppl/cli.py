"""Command line: ``alternators-ppl lorenz`` (the main job)."""

from __future__ import annotations

import argparse
import sys

from alternators_ppl.lorenz_job import LorenzJobConfig, format_summary, run_lorenz_job

__all__ = ["main", "build_parser"]

PROG = "alternators-ppl"


class _OneLineParser(argparse.ArgumentParser):
    """Argument errors print one line and exit with status 2."""

    def error(self, message):
        self.exit(2, f"{PROG}: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _run_name(text: str) -> str:
    # an empty --name would otherwise silently fall back to the timestamped default
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``alternators-ppl`` command."""
    parser = _OneLineParser(prog=PROG, description="Alternators as probabilistic programs.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    lorenz = commands.add_parser(
        "lorenz", help="train and evaluate Alternators on Lorenz-63; write runs/<name>/"
    )
    lorenz.add_argument(
        "--name", type=_run_name, help="run folder name (default: lorenz-<timestamp>)"
    )
    lorenz.add_argument("--runs-dir", default="runs", help="where run folders go (default: runs)")
    lorenz.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    lorenz.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    lorenz.add_argument("--seed", type=int, default=0, help="one seed for data, weights and noise")
    lorenz.add_argument("--epochs", type=_positive_int, help="forecaster epochs")
    lorenz.add_argument("--decoder-epochs", type=_positive_int, help="spike-decoder epochs")
    lorenz.add_argument("--quick", action="store_true", help="seconds-long smoke run (tiny data)")
    return parser


def main(argv=None) -> int:
    """Entry point; returns the exit status (0 ok, 2 bad arguments, input or file system).

    Every error is reported as one line on stderr.
    """
    args = build_parser().parse_args(argv)
    overrides = {"seed": args.seed, "device": args.device}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.decoder_epochs is not None:
        overrides["decoder_epochs"] = args.decoder_epochs
    cfg = LorenzJobConfig.quick(**overrides) if args.quick else LorenzJobConfig(**overrides)
    try:
        run, metrics = run_lorenz_job(cfg, args.runs_dir, args.name, args.overwrite)
    except (ValueError, TypeError, OSError, RuntimeError) as error:  # OSError: run folder, disk
        print(f"{PROG}: error: {error}".splitlines()[0], file=sys.stderr)
        return 2
    print(format_summary(metrics))
    print(f"run folder: {run}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
