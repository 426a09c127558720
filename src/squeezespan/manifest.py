"""The run manifest: what a run ran on and how it was started, written as manifest.json into its run directory.

It records the package, torch, torchvision, CUDA and driver versions, the git commit when the package runs
from a checkout, the CPU and GPU names, the command line and the start time, so a result can be traced to
its environment. ``run_manifest`` wraps a run: the manifest is written when it starts and completed (end
time, status) when it ends; a run that fails before writing anything else leaves its directory as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import torchvision

from .engine.device import cpu_name
from .errors import SnsError
from .files import atomic_write_bytes, write_json

MANIFEST_NAME = "manifest.json"
FORMAT = "squeezespan-manifest/1"

__all__ = ["MANIFEST_NAME", "environment", "git_commit", "package_version", "run_manifest", "write_manifest"]


def package_version() -> str:
    """squeezespan's version: the package's ``__version__`` (its parent package is imported before this module)."""
    root = sys.modules.get(__name__.rpartition(".")[0])
    found = getattr(root, "__version__", None)
    if found:
        return str(found)
    try:
        return metadata.version("squeezespan")
    except metadata.PackageNotFoundError:
        return "unknown"


def git_commit(path: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """{"commit", "dirty"} of the git checkout holding ``path`` (default: this package), None outside a checkout.

    Only a package imported from a source checkout (src/squeezespan inside a work tree) has one: an installed
    wheel never reports the commit of whatever repository the current directory happens to be in.
    """
    root = Path(path) if path is not None else Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head, "dirty": bool(status.strip())}


def _nvidia_driver() -> str | None:
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
    except OSError:
        return None
    for word in text.split():
        parts = word.split(".")
        if len(parts) >= 2 and all(p.isdigit() for p in parts):
            return word  # the first dotted number of "NVRM version: NVIDIA UNIX ... Kernel Module  550.54.15 ..."
    return None


def environment() -> dict[str, Any]:
    """Versions and hardware of this process: package, Python, torch, torchvision, CUDA, driver, CPU, GPUs."""
    env: dict[str, Any] = {
        "squeezespan": package_version(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if torch.version.cuda:
        env["cuda"] = torch.version.cuda
    if torch.cuda.is_available():
        env["cudnn"] = torch.backends.cudnn.version()
        env["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        driver = _nvidia_driver()
        if driver:
            env["driver"] = driver
    git = git_commit()
    if git is not None:
        env["git"] = git
    return env


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def write_manifest(
    run_dir: str | os.PathLike, argv: Sequence[str] | None = None, command: str | None = None, **extra: Any
) -> Path:
    """Write ``run_dir/manifest.json`` for a run starting now; returns its path.

    Args:
        run_dir: the run directory (it must exist).
        argv: the command line's arguments after the program name (default: this process's).
        command: the program name shown in front of them (default: ``sns``).
        extra: more entries (e.g. ``kind="pretrain"``).

    A manifest already there (a resumed run) is kept under ``previous``, so each segment of a run is recorded.
    """
    path = Path(run_dir) / MANIFEST_NAME
    args = list(sys.argv[1:] if argv is None else argv)
    doc: dict[str, Any] = {
        "format": FORMAT,
        "started": _now(),
        "command": shlex.join([command or "sns", *args]),
        "cwd": os.getcwd(),
        **extra,
        **environment(),
    }
    previous = _read(path)
    if previous is not None:
        doc["previous"] = [*previous.pop("previous", []), previous]
    write_json(path, doc)
    return path


def _read(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


@contextlib.contextmanager
def run_manifest(
    run_dir: str | os.PathLike, argv: Sequence[str] | None = None, enabled: bool = True, **extra: Any
) -> Iterator[dict[str, Any]]:
    """Write the manifest as the run starts, and its end time and status (finished, failed, interrupted) as it ends.

    Yields a dict whose entries are added to the manifest at the end (e.g. ``status="interrupted"`` for a run
    that checkpointed and returned on a signal). A run refused with a one-line error (SnsError: bad input, a
    damaged checkpoint) leaves the manifest as it found it, like the rest of the directory, and so does a run
    that fails before anything else was written; a crash later is recorded as ``failed``. ``enabled=False``
    (ranks other than 0) writes nothing.
    """
    ending: dict[str, Any] = {}
    if not enabled:
        yield ending
        return
    path = Path(run_dir) / MANIFEST_NAME
    try:
        before: bytes | None = path.read_bytes()
    except OSError:
        before = None
    write_manifest(run_dir, argv, **extra)
    status = "failed"
    try:
        yield ending
        status = "finished"
    except SnsError:
        status = "refused"
        raise
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        run = Path(run_dir)
        # hidden entries (a lock file, temporaries) are not results
        others = (
            [p for p in run.iterdir() if p.name != MANIFEST_NAME and not p.name.startswith(".")] if run.is_dir() else []
        )
        doc = _read(path)
        if status == "refused" or (status == "failed" and not others):
            if before is None:
                path.unlink(missing_ok=True)
            elif run.is_dir():
                atomic_write_bytes(path, before)
        elif doc is not None:
            write_json(path, {**doc, "ended": _now(), "status": status, **ending})
