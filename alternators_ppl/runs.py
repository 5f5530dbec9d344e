"""Run folders: staged writes, atomic JSON, and never overwriting a finished run by accident."""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from pathlib import Path

import torch

__all__ = [
    "RunFolderExistsError",
    "resolve_device",
    "library_versions",
    "atomic_write",
    "write_json",
    "stage_run_folder",
    "publish_run_folder",
]


class RunFolderExistsError(FileExistsError):
    """The run folder exists and overwriting was not asked for."""


def resolve_device(device, name: str = "device") -> torch.device:
    """``device`` (str or torch.device) as a torch.device; ValueError if it names CUDA and
    CUDA is not available, or if it is not a device at all."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"{name} {device!r} is not a torch device") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name} {str(device)!r} requested but CUDA is not available")
    return resolved


def library_versions() -> dict[str, str]:
    """Versions of Python and the numerical libraries, for run records."""
    import numpy
    import pyro

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "numpy": numpy.__version__,
    }


def _umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path, write) -> Path:
    """Call ``write(tmp_path)`` on a temp file beside ``path``, then rename it into place.

    The one atomic writer of the library: a reader sees the old file or the new one, never a
    partial one; on failure the temp file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path, data) -> Path:
    """Write ``data`` as indented JSON atomically (temp file in the same folder, then rename)."""

    def write(tmp: Path) -> None:
        with open(tmp, "w") as handle:
            json.dump(data, handle, indent=2, sort_keys=False)
            handle.write("\n")

    return atomic_write(path, write)


def stage_run_folder(root, name: str, overwrite: bool = False) -> tuple[Path, Path]:
    """Check that ``root/name`` may be written; return (final path, fresh staging folder).

    The run is written into the staging folder (beside the final one) and moved into place by
    :func:`publish_run_folder` only when it finished, so a failed run never touches an
    existing folder. Raises :class:`RunFolderExistsError` if it exists and not ``overwrite``.
    """
    if not name or Path(name).name != name or name.startswith("."):
        raise ValueError(f"run name must be a plain folder name, got {name!r}")
    final = Path(root) / name
    if final.exists() and not overwrite:
        raise RunFolderExistsError(f"run folder {final} exists; pass --overwrite or another --name")
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".staging", dir=final.parent))
    os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700; the run gets the usual mode
    return final, staging


def publish_run_folder(staging: Path, final: Path) -> Path:
    """Move a finished staging folder to ``final``, replacing an old run only now.

    If the move fails, an old run is put back where it was and the error is raised.
    """
    if final.exists() or final.is_symlink():
        retired = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
        old = retired / final.name
        try:
            os.replace(final, old)
        except BaseException:
            retired.rmdir()
            raise
        try:
            os.replace(staging, final)
        except BaseException:
            os.replace(old, final)  # put the old run back before reporting the failure
            retired.rmdir()
            raise
        shutil.rmtree(retired)
    else:
        os.replace(staging, final)
    return final
