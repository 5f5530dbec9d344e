"""The floors of the library: imports go downward only, and no module is over 600 lines.

ground (alternators_ppl/*.py) < data < models < inference < evaluation < experiments < cli.
Every import is read from the source (lazy ones inside functions too), so the test needs no
import to succeed and fails on the first upward edge it finds.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "alternators_ppl"
FLOORS = ["ground", "data", "models", "inference", "evaluation", "experiments", "cli"]
MAX_LINES = 600


def _sources() -> dict[str, Path]:
    """Module name -> file, for the package and the installed-as-subpackage folders."""
    found = {}
    folders = {
        PACKAGE: ROOT / PACKAGE,
        f"{PACKAGE}.models": ROOT / "models",
        f"{PACKAGE}.inference": ROOT / "inference",
    }
    for prefix, folder in folders.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((prefix, *parts))] = path
    return found


def floor_of(module: str) -> str:
    """The floor of a dotted module name inside the package."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__main__":
        return "cli"
    sub = parts[1]
    if sub in FLOORS:
        return sub
    return "ground"


def imported_modules(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, dotted name) of every import in the file, lazy ones included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise AssertionError(f"{path}:{node.lineno}: use absolute imports")
            name = node.module
            if name != PACKAGE:  # `from alternators_ppl import x` is judged by x alone
                found.append((node.lineno, name))
            found += [(node.lineno, f"{name}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] == PACKAGE]


def upward_imports(sources: dict[str, Path]) -> list[str]:
    """Every import of a higher floor, as 'file:line module (floor) imports target (floor)'."""
    bad = []
    for module, path in sorted(sources.items()):
        here = FLOORS.index(floor_of(module))
        for line, target in imported_modules(path, module):
            there = FLOORS.index(floor_of(target))
            if there > here:
                bad.append(f"{path.name}:{line} {module} ({FLOORS[here]}) imports {target}")
    return bad


def test_imports_go_downward_only():
    sources = _sources()
    assert len(sources) > 40
    assert upward_imports(sources) == []


def test_the_check_catches_a_lazy_upward_import(tmp_path):
    """A models module whose function imports the training loop is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\n\n\ndef f():\n    from alternators_ppl.inference import fit\n")
    report = upward_imports({f"{PACKAGE}.models.bad": bad})
    assert report == [
        f"bad.py:5 {PACKAGE}.models.bad (models) imports {PACKAGE}.inference",
        f"bad.py:5 {PACKAGE}.models.bad (models) imports {PACKAGE}.inference.fit",
    ]


@pytest.mark.parametrize(
    "module, floor",
    [
        ("alternators_ppl.validation", "ground"),
        ("alternators_ppl.data.tasks", "data"),
        ("alternators_ppl.models.kalman", "models"),
        ("alternators_ppl.inference.loop", "inference"),
        ("alternators_ppl.evaluation.scoring", "evaluation"),
        ("alternators_ppl.experiments.compare", "experiments"),
        ("alternators_ppl.cli", "cli"),
        ("alternators_ppl.__main__", "cli"),
    ],
)
def test_floor_of(module, floor):
    assert floor_of(module) == floor


def test_no_module_is_over_600_lines():
    long = {
        str(path.relative_to(ROOT)): n
        for path in _sources().values()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}
