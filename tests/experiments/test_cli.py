"""The ``alternators-ppl`` command: run folders, argument errors, failures and reproducibility.

Every job here is a ``--quick`` run (seconds); one module-scoped run is shared by the tests
that only read its folder.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch

from alternators_ppl import runs
from alternators_ppl.cli import main
from alternators_ppl.experiments import lorenz as lorenz_job

NAME = "smoke"
FIGURES = (
    "attractor.png",
    "forecast_fan.png",
    "imputation.png",
    "latents.png",
    "loss_forecaster.png",
    "loss_decoder.png",
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ERROR_PREFIX = "alternators-ppl: error: "


def _quick(runs_dir, *extra, name=NAME):
    return ["lorenz", "--quick", "--runs-dir", str(runs_dir), "--name", name, *extra]


def _status(argv) -> int:
    """Exit status of ``main(argv)``, whether it returns or exits (argparse exits)."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code


def _strict_json(path: Path):
    """Load ``path`` as standard JSON (no NaN/Infinity)."""

    def reject(constant):
        raise ValueError(f"{path.name} holds the non-standard JSON constant {constant}")

    return json.loads(path.read_text(), parse_constant=reject)


def _leftovers(root: Path) -> list[Path]:
    """Staging folders, retired runs and temp files anywhere under ``root``."""
    return [p for p in root.rglob("*") if p.name.endswith((".staging", ".old", ".tmp"))]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {err!r}"
    assert lines[0].startswith(ERROR_PREFIX), lines[0]
    return lines[0]


def _finite(values) -> bool:
    return all(isinstance(v, int | float) and math.isfinite(v) for v in values)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One quick run (seed 0) in a fresh runs folder: (exit status, stdout, runs folder)."""
    root = tmp_path_factory.mktemp("runs")
    stdout = io.StringIO()
    with redirect_stdout(stdout):
        status = main(_quick(root))
    return status, stdout.getvalue(), root


# ---------------------------------------------------------------------------- a finished run


def test_quick_run_prints_summary_and_writes_complete_run_folder(quick_run):
    status, out, root = quick_run
    run = root / NAME
    assert status == 0
    assert "held-out forecasts" in out
    assert "imputation of" in out and "latents from spikes" in out
    assert out.rstrip().splitlines()[-1] == f"run folder: {run}"
    assert sorted(p.name for p in root.iterdir()) == [NAME]
    assert _leftovers(root) == []

    config = _strict_json(run / "config.json")
    assert config["job"] == "lorenz"
    assert config["seed"] == 0 and config["device"] == "cpu"
    assert config["epochs"] == lorenz_job.LorenzJobConfig.quick().epochs
    assert {"python", "torch", "pyro", "numpy"} <= set(config["versions"])
    assert config["versions"]["torch"] == torch.__version__

    metrics = json.loads((run / "metrics.json").read_text())
    horizon = config["horizon"]
    forecast = metrics["forecast"]
    assert forecast["horizon"] == list(range(1, horizon + 1))
    for key in ("crps", "rmse", "coverage_50", "coverage_90", "width_90", "persistence_crps",
                "persistence_rmse", "resampled_climatology_crps", "resampled_climatology_rmse"):
        assert len(forecast[key]) == horizon, key
        assert _finite(forecast[key]), key
    assert all(0.0 <= c <= 1.0 for c in forecast["coverage_90"])
    imputation = metrics["imputation"]
    assert _finite(imputation[k] for k in ("rmse", "crps", "coverage_90",
                                            "linear_interpolation_rmse", "missing_fraction"))
    latents = metrics["latents"]
    for key in ("r2", "pearson_cc", "rmse", "coverage_50", "coverage_90", "width_90"):
        assert len(latents[key]) == 3, key
        assert _finite(latents[key]), key
    timing = metrics["timing"]
    assert timing["device"] == "cpu"
    assert timing["forecaster"]["train_s"] > 0 and timing["decoder"]["train_s"] > 0
    assert timing["total_s"] >= timing["forecaster"]["train_s"] + timing["decoder"]["train_s"]

    history = json.loads((run / "history.json").read_text())
    assert len(history["forecaster"]["train_loss"]) == config["epochs"]
    assert len(history["decoder"]["train_loss"]) == config["decoder_epochs"]

    for part in ("forecaster", "decoder"):
        for which in ("best.pt", "last.pt"):
            path = run / "checkpoints" / part / which
            assert path.is_file() and path.stat().st_size > 0, path
            assert "model" in torch.load(path, map_location="cpu", weights_only=True)

    for figure in FIGURES:
        data = (run / "figures" / figure).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 1000, figure


def test_run_folder_and_json_files_get_the_usual_permissions(quick_run):
    # mkdtemp/mkstemp create 0700/0600; a published run must be readable like any other folder
    run = quick_run[2] / NAME
    mask = _umask()
    assert run.stat().st_mode & 0o777 == 0o777 & ~mask
    for name in ("config.json", "metrics.json", "history.json"):
        assert (run / name).stat().st_mode & 0o777 == 0o666 & ~mask, name


@pytest.mark.slow
def test_same_seed_gives_identical_metrics_and_another_seed_does_not(quick_run, tmp_path):
    first = json.loads((quick_run[2] / NAME / "metrics.json").read_text())
    assert main(_quick(tmp_path)) == 0
    again = json.loads((tmp_path / NAME / "metrics.json").read_text())
    assert main(_quick(tmp_path, "--seed", "1", name="seed1")) == 0
    other = json.loads((tmp_path / "seed1" / "metrics.json").read_text())
    for metrics in (first, again, other):
        metrics.pop("timing")
    assert again == first
    assert other != first


def test_console_script_runs_and_reports_exit_status(tmp_path):
    script = Path(sys.executable).parent / "alternators-ppl"
    if not script.is_file():
        found = shutil.which("alternators-ppl")
        assert found, "the alternators-ppl console script is not installed"
        script = Path(found)
    command = [str(script), "lorenz", "--quick", "--name", NAME]  # default --runs-dir: runs

    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "held-out forecasts" in done.stdout
    assert done.stdout.rstrip().splitlines()[-1] == f"run folder: {Path('runs') / NAME}"
    assert (tmp_path / "runs" / NAME / "metrics.json").is_file()

    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2
    assert "--overwrite" in _one_error_line(again.stderr)
    assert again.stdout == ""


@pytest.mark.gpu
def test_quick_run_on_cuda(tmp_path):
    assert main(_quick(tmp_path, "--device", "cuda")) == 0
    metrics = json.loads((tmp_path / NAME / "metrics.json").read_text())
    assert metrics["timing"]["device"].startswith("cuda")
    assert _leftovers(tmp_path) == []


# ---------------------------------------------------------------------------- existing runs


def _old_run(root: Path) -> Path:
    old = root / NAME
    old.mkdir(parents=True)
    (old / "sentinel.txt").write_text("an earlier run\n")
    return old


def _assert_untouched(old: Path):
    assert sorted(p.name for p in old.iterdir()) == ["sentinel.txt"]
    assert (old / "sentinel.txt").read_text() == "an earlier run\n"


def test_existing_run_folder_needs_overwrite(tmp_path, capsys):
    old = _old_run(tmp_path)
    assert main(_quick(tmp_path)) == 2
    out, err = capsys.readouterr()
    line = _one_error_line(err)
    assert str(old) in line and "--overwrite" in line
    assert out == ""
    _assert_untouched(old)
    assert sorted(p.name for p in tmp_path.iterdir()) == [NAME]

    assert main(_quick(tmp_path, "--overwrite")) == 0
    assert not (old / "sentinel.txt").exists()
    assert (old / "metrics.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [NAME]
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("existing", [True, False], ids=["existing-folder", "fresh-name"])
def test_run_failing_midway_changes_nothing(tmp_path, capsys, monkeypatch, existing):
    old = _old_run(tmp_path) if existing else tmp_path / NAME
    staged = {}

    def fail(*args, **kwargs):  # the decoder's data: the forecaster part is written by now
        for staging in tmp_path.glob(f".{NAME}.*.staging"):
            staged[staging] = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*"))
        raise ValueError("simulated failure in the spike data")

    monkeypatch.setattr(lorenz_job, "lorenz_spikes_task", fail)
    assert main(_quick(tmp_path, "--overwrite")) == 2
    assert "simulated failure" in _one_error_line(capsys.readouterr().err)
    # it did fail midway, with a half-written run in one staging folder, now gone
    [(staging, written)] = staged.items()
    assert "checkpoints/forecaster/best.pt" in written and "figures/attractor.png" in written
    assert not staging.exists()
    if existing:
        _assert_untouched(old)
        assert sorted(p.name for p in tmp_path.iterdir()) == [NAME]
    else:
        assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- bad arguments

_NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available")
_JOB = ["lorenz", "--quick", "--runs-dir", "{runs}"]  # "{runs}": tmp_path / "runs"

BAD_ARGUMENTS = [
    pytest.param(["bogus"], "invalid choice", id="unknown-subcommand"),
    pytest.param([], "required", id="no-subcommand"),
    pytest.param([*_JOB, "--epochs", "0"], "--epochs", id="zero-epochs"),
    pytest.param([*_JOB, "--epochs", "abc"], "positive integer", id="non-integer-epochs"),
    pytest.param([*_JOB, "--decoder-epochs", "-3"], "--decoder-epochs", id="negative-epochs"),
    pytest.param([*_JOB, "--seed", "x"], "--seed", id="non-integer-seed"),
    pytest.param([*_JOB, "--bogus"], "--bogus", id="unknown-flag"),
    pytest.param(["--bogus", "lorenz"], "--bogus", id="unknown-top-level-flag"),
    pytest.param([*_JOB, "--name", ""], "--name", id="empty-name"),
    # these pass argparse; the job rejects them before it writes anything
    pytest.param([*_JOB, "--name", "../evil"], "plain folder name", id="name-escapes-runs-dir"),
    pytest.param([*_JOB, "--name", "a/b"], "plain folder name", id="name-with-slash"),
    pytest.param([*_JOB, "--name", ".hidden"], "plain folder name", id="hidden-name"),
    pytest.param([*_JOB, "--seed", "-1"], "seed", id="negative-seed"),
    pytest.param([*_JOB, "--device", "nonsense"], "nonsense", id="unknown-device"),
    pytest.param([*_JOB, "--device", "cuda"], "CUDA", id="cuda-without-cuda", marks=_NO_CUDA),
]


@pytest.mark.parametrize(("argv", "mentions"), BAD_ARGUMENTS)
def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys, monkeypatch, argv, mentions):
    monkeypatch.chdir(tmp_path)  # were an argument accepted, no run lands in the working tree
    runs_dir = tmp_path / "runs"
    argv = [str(runs_dir) if arg == "{runs}" else arg for arg in argv]
    assert _status(argv) == 2
    out, err = capsys.readouterr()
    assert mentions in _one_error_line(err)
    assert out == ""
    assert not (tmp_path / "evil").exists()
    assert not runs_dir.exists() or list(runs_dir.iterdir()) == []


def test_runs_dir_that_is_a_file_is_one_line_error(tmp_path, capsys):
    (tmp_path / "runs").write_text("not a folder\n")
    assert main(_quick(tmp_path / "runs")) == 2
    _one_error_line(capsys.readouterr().err)
    assert (tmp_path / "runs").read_text() == "not a folder\n"


# ---------------------------------------------------------------------------- runs module


@pytest.mark.parametrize("name", ["../evil", "a/b", "/abs", "..", ".", "", ".hidden", "x/.."])
def test_stage_run_folder_rejects_names_that_are_not_plain(tmp_path, name):
    with pytest.raises(ValueError, match="plain folder name"):
        runs.stage_run_folder(tmp_path / "runs", name)
    assert not (tmp_path / "runs").exists()


def test_stage_and_publish_replace_only_when_asked(tmp_path):
    old = _old_run(tmp_path)
    with pytest.raises(runs.RunFolderExistsError, match="--overwrite"):
        runs.stage_run_folder(tmp_path, NAME)
    final, staging = runs.stage_run_folder(tmp_path, NAME, overwrite=True)
    assert final == old and staging.parent == tmp_path and staging.name.startswith(".")
    _assert_untouched(old)  # staging alone does not touch the old run
    (staging / "metrics.json").write_text("{}\n")
    assert runs.publish_run_folder(staging, final) == final
    assert sorted(p.name for p in final.iterdir()) == ["metrics.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [NAME]


def test_publish_puts_the_old_run_back_when_the_move_fails(tmp_path, monkeypatch):
    old = _old_run(tmp_path)
    final, staging = runs.stage_run_folder(tmp_path, NAME, overwrite=True)
    (staging / "metrics.json").write_text("{}\n")
    real_replace = os.replace

    def replace(src, dst):
        if Path(src) == staging:
            raise OSError("simulated rename failure")
        return real_replace(src, dst)

    monkeypatch.setattr(runs.os, "replace", replace)
    with pytest.raises(OSError, match="simulated"):
        runs.publish_run_folder(staging, final)
    monkeypatch.undo()
    _assert_untouched(old)
    assert (staging / "metrics.json").is_file()  # the finished run is kept, not thrown away
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([NAME, staging.name])


def test_write_json_round_trips_without_temp_files(tmp_path):
    path = tmp_path / "sub" / "data.json"
    data = {"a": [1, 2.5, None], "b": {"c": "d"}}
    assert runs.write_json(path, data) == path
    assert json.loads(path.read_text()) == data
    assert path.read_text().endswith("\n")
    assert [p.name for p in path.parent.iterdir()] == ["data.json"]
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()


@pytest.mark.parametrize("error", [OSError("disk full (simulated)"), KeyboardInterrupt()])
def test_write_json_is_atomic(tmp_path, monkeypatch, error):
    path = tmp_path / "metrics.json"
    runs.write_json(path, {"old": [1, 2, 3]})
    before = path.read_bytes()

    def dump_halfway(obj, handle, **kwargs):
        handle.write('{\n  "new": [4, ')
        handle.flush()
        raise error

    monkeypatch.setattr(runs.json, "dump", dump_halfway)
    with pytest.raises(type(error)):
        runs.write_json(path, {"new": [4, 5, 6]})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
