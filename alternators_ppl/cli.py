"""Command line: ``alternators-ppl lorenz`` (the main job), ``alternators-ppl compare`` (built-in
tasks, ``nino`` or a file), ``alternators-ppl forecast`` (a file, beyond its end) and
``alternators-ppl diagnose`` (ArviZ diagnostics of a lorenz run folder)."""

from __future__ import annotations

import argparse
import sys

from alternators_ppl import distributed
from alternators_ppl.experiments.compare import (
    COMPARE_OPTIONS,
    TASKS,
    CompareConfig,
    format_comparison,
    run_comparison,
)
from alternators_ppl.experiments.decode import (
    DECODE_TASKS,
    DECODER_NAMES,
    DecodeConfig,
    format_decoding,
    run_decoding,
)
from alternators_ppl.experiments.file_task import (
    BUILTIN_SERIES,
    add_series_arguments,
    compare_file_command,
    reject_series_options,
)
from alternators_ppl.experiments.forecast import add_forecast_parser, forecast_command
from alternators_ppl.experiments.lorenz import LorenzJobConfig, format_summary, run_lorenz_job
from alternators_ppl.experiments.registry import MODEL_NAMES, VARIANTS, add_alternator_arguments
from alternators_ppl.experiments.sst import add_sst_parser, sst_command
from alternators_ppl.models.smc_moves import DIAGNOSE_SWEEPS

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


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}")
    return value


def _run_name(text: str) -> str:
    # an empty --name would otherwise silently fall back to the timestamped default
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _model_list(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in MODEL_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown model(s) {unknown or text!r}; choose from {','.join(MODEL_NAMES)}"
        )
    return names


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _add_run_arguments(parser: argparse.ArgumentParser, default_name: str) -> None:
    parser.add_argument("--name", type=_run_name, help=f"run folder name (default: {default_name})")
    parser.add_argument("--runs-dir", default="runs", help="where run folders go (default: runs)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run (tiny data)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``alternators-ppl`` command."""
    parser = _OneLineParser(prog=PROG, description="Alternators as probabilistic programs.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    lorenz = commands.add_parser(
        "lorenz", help="train and evaluate Alternators on Lorenz-63; write runs/<name>/"
    )
    _add_run_arguments(lorenz, "lorenz-<timestamp>")
    lorenz.add_argument("--seed", type=int, default=0, help="one seed for data, weights and noise")
    lorenz.add_argument(
        "--model",
        choices=sorted(VARIANTS),
        default="alternator",
        help="model variant (default: alternator)",
    )
    lorenz.add_argument("--epochs", type=_positive_int, help="forecaster epochs")
    lorenz.add_argument("--decoder-epochs", type=_positive_int, help="spike-decoder epochs")
    compare = commands.add_parser(
        "compare", help="train every model on the same data and seeds; write a comparison"
    )
    compare.add_argument(
        "task",
        help=f"built-in task ({', '.join(sorted(TASKS) + sorted(BUILTIN_SERIES))}) or a file",
    )
    _add_run_arguments(compare, "compare-<task>-<timestamp>")
    compare.add_argument("--models", type=_model_list, help=f"subset of {','.join(MODEL_NAMES)}")
    compare.add_argument("--seeds", type=_positive_int, help="number of seeds (default 3)")
    compare.add_argument(
        "--first-seed",
        type=_non_negative_int,
        help="first seed (default 0): runs seeds FIRST .. FIRST + SEEDS - 1",
    )
    compare.add_argument(
        "--budget-s",
        type=_positive_float,
        help="wall-clock safety cap on training seconds per model (the budget is --epochs)",
    )
    compare.add_argument("--epochs", type=_positive_int, help="epoch cap of trained models")
    add_alternator_arguments(compare, _positive_int)
    add_series_arguments(compare, _positive_int)
    add_forecast_parser(commands, _positive_int, _positive_float, _add_run_arguments)
    add_sst_parser(commands, _positive_int, _positive_float, _add_run_arguments)
    diagnose = commands.add_parser(
        "diagnose",
        help="ArviZ diagnostics of a lorenz run's forecaster: diagnostics.nc, .md and figures",
    )
    diagnose.add_argument("run_dir", help="run folder written by `alternators-ppl lorenz`")
    diagnose.add_argument(
        "--chains",
        type=_positive_int,
        default=4,
        help="independent particle systems (smc) or batches of draws (ancestral); default 4",
    )
    diagnose.add_argument(
        "--sampler",
        choices=("smc", "particle-gibbs", "ancestral"),
        default="smc",
        help="smoothing posterior by SMC (default) or particle Gibbs, or the ancestral "
        "conditioned recursion",
    )
    diagnose.add_argument(
        "--particles",
        type=_positive_int,
        default=500,
        help="particles per SMC system (per conditional SMC sweep with particle-gibbs)",
    )
    diagnose.add_argument(
        "--mcmc-sweeps",
        type=_non_negative_int,
        default=DIAGNOSE_SWEEPS,
        help=f"MCMC sweeps that rejuvenate the SMC draws (default {DIAGNOSE_SWEEPS})",
    )
    diagnose.add_argument(
        "--draws", type=_positive_int, default=250, help="latent paths per chain (default 250)"
    )
    diagnose.add_argument(
        "--sequences", type=_positive_int, default=8, help="test sequences used (default 8)"
    )
    diagnose.add_argument(
        "--overwrite", action="store_true", help="replace an existing diagnostics.nc"
    )
    diagnose.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    decode = commands.add_parser(
        "decode", help="decode behaviour from neural activity with several decoders"
    )
    decode.add_argument("task", choices=DECODE_TASKS, help="data set")
    decode.add_argument("--data", help="data file (glaser: a Glaser et al. 2020 pickle)")
    _add_run_arguments(decode, "decode-<task>-<timestamp>")
    decode.add_argument("--models", type=_decoder_list, help=f"subset of {','.join(DECODER_NAMES)}")
    decode.add_argument("--seeds", type=_positive_int, help="number of seeds (default 3)")
    decode.add_argument("--first-seed", type=int, default=0, help="first seed (default 0)")
    decode.add_argument("--max-bins", type=_positive_int, help="ratinabox: first bins only")
    return parser


def _decoder_list(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in DECODER_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown decoder(s) {unknown or text!r}; choose from {','.join(DECODER_NAMES)}"
        )
    return names


def _decode(args) -> tuple[str, object]:
    overrides = {"task": args.task, "device": args.device, "data": args.data,
                 "first_seed": args.first_seed}  # fmt: skip
    for key in ("models", "seeds", "max_bins"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    cfg = DecodeConfig.quick_config(**overrides) if args.quick else DecodeConfig(**overrides)
    run, results = run_decoding(cfg, args.runs_dir, args.name, args.overwrite)
    return format_decoding(results), run


def _lorenz(args) -> tuple[str, object]:
    overrides = {"seed": args.seed, "device": args.device, "model": args.model}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.decoder_epochs is not None:
        overrides["decoder_epochs"] = args.decoder_epochs
    cfg = LorenzJobConfig.quick(**overrides) if args.quick else LorenzJobConfig(**overrides)
    run, metrics = run_lorenz_job(cfg, args.runs_dir, args.name, args.overwrite)
    return ("" if metrics is None else format_summary(metrics)), run  # None: rank > 0


def _compare(args) -> tuple[str, object]:
    if args.task not in TASKS:
        return compare_file_command(args)
    reject_series_options(args)
    overrides = {"task": args.task, "device": args.device}
    for key in COMPARE_OPTIONS:
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    cfg = CompareConfig.quick(**overrides) if args.quick else CompareConfig(**overrides)
    command = " ".join([PROG, *args.argv])
    run, results = run_comparison(cfg, args.runs_dir, args.name, args.overwrite, command)
    return ("" if results is None else format_comparison(results)), run  # None: rank > 0


def _diagnose(args) -> tuple[str, object]:
    # imported here: ArviZ adds about a second to the start-up of every other command
    from alternators_ppl.experiments.diagnose import diagnose_run, format_diagnostics

    result = diagnose_run(
        args.run_dir,
        num_chains=args.chains,
        num_draws=args.draws,
        overwrite=args.overwrite,
        device=args.device,
        num_sequences=args.sequences,
        sampler=args.sampler,
        num_particles=args.particles,
        mcmc_sweeps=args.mcmc_sweeps,
    )
    return format_diagnostics(result), args.run_dir


_COMMANDS = {
    "lorenz": _lorenz,
    "compare": _compare,
    "diagnose": _diagnose,
    "forecast": forecast_command,
    "sst": sst_command,
    "decode": _decode,
}


def main(argv=None) -> int:
    """Entry point; returns the exit status (0 ok, 2 bad arguments, input or file system).

    Every error is reported as one line on stderr.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    command = _COMMANDS[args.command]
    try:
        # under torchrun: one process group for the command (gloo on CPU, nccl on CUDA)
        with distributed.process_group(args.device) as device:
            args.device = str(device)
            summary, run = command(args)
            main_process = distributed.is_main_process()
    except (ValueError, TypeError, OSError, RuntimeError) as error:  # OSError: run folder, disk
        print(f"{PROG}: error: {error}".splitlines()[0], file=sys.stderr)
        return 2
    if not main_process:  # rank 0 reports
        return 0
    print(summary)
    print(f"run folder: {run}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
