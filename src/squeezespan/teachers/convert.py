"""`sns convert`: an official StyleGAN2-ADA network pickle -> a teacher directory (safetensors + teacher.json).

The pickle is read once through the restricted unpickler (pickle_import: none of its code runs); the networks
are rebuilt from our own code and written in the format `sns train-gan` exports, so later runs load the
teacher with no pickle at all (``--teacher OUT``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..errors import SnsError
from .directory import save_teacher_dir
from .pickle_import import PersistentRecord, build_network, embedded_sources, read_stylegan2_pickle

__all__ = ["convert_stylegan2_pickle"]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _json_safe(value: Any) -> Any:
    """Plain JSON data from the pickle's training kwargs (tuples -> lists, numpy scalars -> numbers)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        try:
            return value.item()
        except (TypeError, ValueError):
            return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _network(data: dict, key: str, path: Path) -> PersistentRecord | None:
    record = data.get(key)
    if record is None:
        return None
    if not isinstance(record, PersistentRecord):
        raise SnsError(f"{path}[{key!r}] is a {type(record).__name__}, not a network")
    return record


def convert_stylegan2_pickle(
    pkl: str | os.PathLike, out: str | os.PathLike, force: bool = False, allow_unknown_source: bool = False
) -> Path:
    """Write the teacher directory ``out`` (G, G_ema, D safetensors + teacher.json) from an official pickle.

    Args:
        pkl: a StyleGAN2-ADA network pickle (network-snapshot-*.pkl, or a released one such as ffhq.pkl).
        out: the teacher directory to write; it must be absent or empty unless ``force``.
        force: write into a non-empty ``out`` (its teacher files are replaced).
        allow_unknown_source: convert even if the networks' embedded source is no official release (a fork),
            with a warning; teacher.json's ``embedded_source`` records each source and whether it was official.

    Returns:
        ``out`` as a Path. G is G_ema when the pickle has no G; a pickle without D is refused (a teacher
        directory holds all three networks).
    """
    pkl, out = Path(pkl), Path(out)
    if out.exists() and not out.is_dir():
        raise SnsError(f"OUT {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise SnsError(f"OUT {out} is not empty; pass --force to write the teacher into it anyway")
    if not pkl.is_file():
        raise SnsError(
            f"{pkl}: no such file; give the path of a StyleGAN2-ADA network pickle (e.g. network-snapshot-*.pkl)"
        )
    data = read_stylegan2_pickle(pkl)  # one-line SnsErrors for a damaged or foreign file
    records = {key: _network(data, key, pkl) for key in ("G", "G_ema", "D")}
    if records["G_ema"] is None:
        raise SnsError(f"{pkl} has no 'G_ema' network; it holds {sorted(map(str, data))}")
    if records["D"] is None:
        raise SnsError(
            f"{pkl} has no 'D' network; a teacher directory holds G, G_ema and D "
            f"(use --teacher stylegan2-pkl:{pkl} to run from the pickle directly)"
        )
    sources = embedded_sources(records, pkl, allow_unknown_source)
    G_ema = build_network(records["G_ema"], f"{pkl}['G_ema']")
    G = build_network(records["G"], f"{pkl}['G']") if records["G"] is not None else G_ema
    D = build_network(records["D"], f"{pkl}['D']")
    G_kwargs, D_kwargs = records["G_ema"].kwargs(), records["D"].kwargs()
    meta: dict[str, Any] = {
        "source": "stylegan2-ada-pickle",
        "pickle": pkl.name,
        "pickle_sha256": _sha256(pkl),
        "G_from": "G" if records["G"] is not None else "G_ema",
        "resolution": int(G_kwargs.get("img_resolution", 0)) or None,
        # which network source the pickle embedded: an official release ("official": repo/path) or, when
        # converted with allow_unknown_source, an unknown one ("official": null) whose changes were dropped
        "embedded_source": sources,
    }
    training = data.get("training_set_kwargs")
    if isinstance(training, dict):
        meta["training_set_kwargs"] = _json_safe(training)
    try:
        json.dumps({"G_kwargs": G_kwargs, "D_kwargs": D_kwargs, **meta}, allow_nan=False)
    except (TypeError, ValueError):
        G_kwargs, D_kwargs = _json_safe(G_kwargs), _json_safe(D_kwargs)
    save_teacher_dir(out, G, G_ema, D, G_kwargs, D_kwargs, meta)
    return out
