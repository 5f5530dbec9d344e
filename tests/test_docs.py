"""Documentation true as written: every Python block of README.md and docs/*.md runs, every
documented command-line flag exists, and every keyword in an inline call of a library function
or method is one that function takes.

Blocks of one page run in order in one namespace, seeded with the names the prose assumes
(``model``: a small trained Alternator, ``x_train``, ``x_context``, ...). The README's first
block prints what the README says it prints.
"""

import contextlib
import importlib
import inspect
import io
import pkgutil
import re
from pathlib import Path

import pytest
import torch

import alternators_ppl.inference as inference_api
import alternators_ppl.models as models_api
from alternators_ppl.cli import build_parser
from alternators_ppl.models import Alternator

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def _namespace() -> dict:
    """Names the documentation's snippets take as given (small, so every block is fast)."""
    torch.manual_seed(0)
    model = Alternator(3, 4, hidden=(16,))
    x_train = torch.randn(8, 30, 3)
    return {
        "torch": torch,
        "model": model,
        "x_train": x_train,
        "x_val": torch.randn(4, 30, 3),
        "x_context": torch.randn(2, 20, 3),
        "x": torch.randn(2, 30, 3),
        "mask": torch.rand(2, 30) > 0.3,
        "x_gappy": torch.where(torch.rand(2, 30, 1) > 0.3, torch.randn(2, 30, 3), torch.nan),
    }


def _shrunk(code: str) -> str:
    """Documented epoch counts, shrunk to 2 so the suite stays fast (the code is unchanged)."""
    return re.sub(r"\bepochs=\d+", "epochs=2", code)


@pytest.mark.parametrize("page", [p for p in PAGES if BLOCK.search(p.read_text())], ids=str)
def test_every_python_block_runs(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = _namespace()
    out = io.StringIO()
    for number, code in enumerate(BLOCK.findall(page.read_text()), start=1):
        with contextlib.redirect_stdout(out):
            if page.name != "README.md":  # the README's example runs exactly as written
                code = _shrunk(code)
            exec(compile(code, f"{page.name} block {number}", "exec"), namespace)
    if page.name == "README.md":
        printed = re.search(r"prints `(.*?)`", page.read_text()).group(1)
        assert out.getvalue().strip().splitlines()[0] == printed


def _subcommands() -> dict[str, set[str]]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict))
    return {
        name: {opt for a in sub._actions for opt in a.option_strings}
        for name, sub in action.choices.items()
    }


def documented_commands(text: str) -> list[tuple[str, list[str]]]:
    """(subcommand, flags) of every `alternators-ppl SUB ...` in a page (continuations too)."""
    found = []
    joined = re.sub(r"\n\s{10,}(?=\[)", " ", text)  # usage lines wrapped under the first
    for match in re.finditer(r"alternators-ppl (\w[\w-]*)([^\n`]*)", joined):
        found.append((match.group(1), re.findall(r"(?<![\w-])(--[a-z][\w-]*)", match.group(2))))
    return found


def test_every_documented_flag_exists():
    known = _subcommands()
    bad = []
    for page in PAGES:
        for sub, flags in documented_commands(page.read_text()):
            if sub not in known:
                bad.append(f"{page.name}: unknown command {sub!r}")
                continue
            bad += [f"{page.name}: {sub} {f}" for f in flags if f not in known[sub]]
    assert bad == []


def _signatures() -> dict[str, set[str] | None]:
    """Public function and method name -> its keywords (None: takes **kwargs)."""
    found: dict[str, set[str] | None] = {}
    owners = []
    for package in (inference_api, models_api):
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            owners.append(module)
            owners += [getattr(module, n) for n in getattr(module, "__all__", [])]
    for owner in owners:
        for name, member in inspect.getmembers(owner):
            if name.startswith("_") or not callable(member):
                continue
            try:
                params = inspect.signature(member).parameters.values()
            except (TypeError, ValueError):
                continue
            if any(p.kind is p.VAR_KEYWORD for p in params):
                found[name] = None
            elif found.get(name, set()) is not None:
                found[name] = found.get(name, set()) | {p.name for p in params}
    return found


def documented_keywords(text: str) -> list[tuple[str, str]]:
    """(callable name, keyword) of every `name(..., kw=...)` inside inline code or blocks."""
    pairs = []
    for call in re.finditer(r"\b(\w+)\(([^()`]*)\)", text):
        pairs += [(call.group(1), kw) for kw in re.findall(r"\b(\w+)=", call.group(2))]
    return pairs


def test_every_documented_keyword_exists():
    signatures = _signatures()
    bad = []
    for page in PAGES:
        for name, kw in documented_keywords(page.read_text()):
            keywords = signatures.get(name, None)
            if name in signatures and keywords is not None and kw not in keywords:
                bad.append(f"{page.name}: {name}(..., {kw}=)")
    assert sorted(set(bad)) == []


def test_the_keyword_check_catches_a_wrong_keyword():
    signatures = _signatures()
    wrong = documented_keywords("`m.infer_latents(x, mask=None, S=1)`")
    assert [kw for name, kw in wrong if kw not in signatures[name]] == ["S"]
    flags = documented_commands("alternators-ppl compare lorenz --no-such-flag")
    assert flags == [("compare", ["--no-such-flag"])]
