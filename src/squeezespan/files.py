"""Files the library writes: one atomic write (old file or new file after a crash, never half of one)."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors.torch import save

__all__ = ["atomic_write_bytes", "atomic_write_text", "safetensors_bytes", "write_json"]


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that a crash leaves either the old file or the new one, never half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # A failed write (disk full, interrupt) must never touch the previous good file.
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """``atomic_write_bytes`` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, data: Any, mkdir: bool = True) -> Path:
    """Atomically write ``data`` as indented JSON (non-JSON values through ``str``), creating parent folders."""
    path = Path(path)
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def safetensors_bytes(tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> bytes:
    """``safetensors.torch.save`` with a canonical header: the same tensors and metadata give the same bytes.

    safetensors keeps ``__metadata__`` in a hash map, so its keys come out in a different order in every
    process. The header is rewritten here: ``__metadata__`` first with sorted keys, then the tensors by name,
    compact JSON, padded with spaces to a multiple of 8 bytes as the format asks (the 8-byte little-endian length
    prefix counts the padding; data offsets are relative to the end of the header, so they stay valid).
    """
    raw = save(dict(tensors), metadata=dict(metadata) if metadata is not None else None)
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    canonical: dict[str, Any] = {}
    if "__metadata__" in header:
        canonical["__metadata__"] = dict(sorted(header.pop("__metadata__").items()))
    canonical.update(sorted(header.items()))
    text = json.dumps(canonical, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + raw[8 + n :]
