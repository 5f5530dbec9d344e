"""Packaging: the top-level ``models/`` and ``inference/`` folders ship as
``alternators_ppl.models`` and ``alternators_ppl.inference``, never as top-level packages."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DIST = "alternators_ppl-0.1.0.dist-info"  # checked against the wheel's own name below

# what pip prints when it cannot fetch the build requirements (setuptools, wheel)
_OFFLINE_MARKERS = (
    "Could not find a version that satisfies the requirement",
    "No matching distribution found",
    "NewConnectionError",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "ProxyError",
    "ConnectTimeoutError",
)


def _env() -> dict:
    """This environment, with the repo root taken out of PYTHONPATH."""
    env = dict(os.environ)
    keep = [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
            if p and Path(p).resolve() != REPO]
    env["PYTHONPATH"] = os.pathsep.join(keep)
    if not keep:
        del env["PYTHONPATH"]
    return env


def _python(code: str, cwd: Path, extra_path: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter in ``cwd`` (not the repo root)."""
    env = _env()
    prelude = "" if extra_path is None else f"import sys; sys.path.insert(0, {str(extra_path)!r})\n"
    return subprocess.run([sys.executable, "-c", prelude + code], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_subpackages_import_from_their_folders_and_not_as_top_level(tmp_path):
    code = """
import json, sys
import alternators_ppl, alternators_ppl.inference, alternators_ppl.models
result = {name: sys.modules[name].__file__
          for name in ("alternators_ppl", "alternators_ppl.models", "alternators_ppl.inference")}
for name in ("models", "inference"):
    try:
        __import__(name)
    except ModuleNotFoundError as error:
        result[name] = "ModuleNotFoundError: " + str(error)
    else:
        result[name] = "imported from " + str(sys.modules[name].__file__)
result["path"] = sys.path
print(json.dumps(result))
"""
    done = _python(code, tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert str(REPO) not in result["path"]  # "" is the cwd: tmp_path
    package = Path(result["alternators_ppl"]).parent
    # editable install (this repo's setup): the subpackages are the repo's top-level folders;
    # a regular install: they sit inside the installed alternators_ppl package
    root = REPO if package == REPO / "alternators_ppl" else package
    assert Path(result["alternators_ppl.models"]) == root / "models" / "__init__.py"
    assert Path(result["alternators_ppl.inference"]) == root / "inference" / "__init__.py"
    assert result["models"].startswith("ModuleNotFoundError"), result["models"]
    assert result["inference"].startswith("ModuleNotFoundError"), result["inference"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built (isolated, non-editable) from a clean copy of the source tree.

    The copy keeps the build from writing ``build/`` into the working tree and keeps stale
    ``build/lib`` files of earlier builds out of the wheel.
    """
    pytest.importorskip("build")
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
        ".ruff_cache", ".hypothesis", "runs", ".whl",
    ))
    out = work / "dist"
    done = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(source)],
        cwd=work, env=_env(), capture_output=True, text=True, timeout=600,
    )
    log = done.stdout + done.stderr
    if done.returncode != 0:
        if any(marker in log for marker in _OFFLINE_MARKERS):
            pytest.skip(f"cannot fetch the isolated build requirements (no network?): "
                        f"{log.strip().splitlines()[-1]}")
        pytest.fail(f"python -m build --wheel failed:\n{log[-4000:]}")
    [built] = out.glob("*.whl")
    return built


def test_wheel_ships_subpackages_inside_alternators_ppl(wheel):
    assert wheel.name.startswith("alternators_ppl-0.1.0-")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = archive.read(f"{DIST}/entry_points.txt").decode()
    for required in ("alternators_ppl/__init__.py", "alternators_ppl/cli.py",
                     "alternators_ppl/models/__init__.py", "alternators_ppl/models/alternator.py",
                     "alternators_ppl/inference/__init__.py",
                     "alternators_ppl/inference/training.py"):
        assert required in names, required
    assert not [n for n in names if n.startswith(("models/", "inference/"))]
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"alternators_ppl", DIST}, tops  # no tests/, benchmarks/, docs/ either
    lines = [line.strip() for line in entry_points.splitlines()]
    section = lines.index("[console_scripts]")
    assert "alternators-ppl = alternators_ppl.cli:main" in lines[section + 1:]


def test_wheel_imports_on_its_own(wheel, tmp_path):
    # the wheel's code first on sys.path: its subpackages load from inside the wheel
    code = """
import sys
import alternators_ppl.cli, alternators_ppl.inference.training, alternators_ppl.models.alternator
for name in ("alternators_ppl.cli", "alternators_ppl.models.alternator",
             "alternators_ppl.inference.training"):
    print(sys.modules[name].__file__)
"""
    done = _python(code, tmp_path, extra_path=wheel)
    assert done.returncode == 0, done.stderr
    files = done.stdout.split()
    assert len(files) == 3
    for file, inside in zip(files, ("alternators_ppl/cli.py",
                                    "alternators_ppl/models/alternator.py",
                                    "alternators_ppl/inference/training.py"), strict=True):
        assert file == str(wheel / inside), file
