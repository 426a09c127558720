"""Turn a --teacher spec into a Teacher: a `sns train-gan` run dir, stylegan2-pkl:PATH, or module.path:factory.

An official pickle whose embedded network source matches no release is refused unless the spec opts in:
stylegan2-pkl,allow-unknown-source:PATH (recorded with the spec in the run's config).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import SnsError
from .directory import load_teacher_dir
from .pickle_import import ALLOW_UNKNOWN_SOURCE, load_stylegan2_pickle
from .teacher import Teacher

PICKLE_SCHEME = "stylegan2-pkl"


def parse_pickle_spec(spec: str) -> tuple[str, bool] | None:
    """'stylegan2-pkl[,allow-unknown-source]:PATH' -> (PATH, allow_unknown_source); None for other specs."""
    head, sep, path = str(spec).partition(":")
    scheme, *options = head.split(",")
    if scheme != PICKLE_SCHEME or not sep:
        return None
    unknown = [o for o in options if o != ALLOW_UNKNOWN_SOURCE]
    if unknown:
        raise SnsError(
            f"--teacher {spec}: unknown {PICKLE_SCHEME} option {unknown[0]!r}; the one option is "
            f"{ALLOW_UNKNOWN_SOURCE} ({PICKLE_SCHEME},{ALLOW_UNKNOWN_SOURCE}:PATH)"
        )
    if not path:
        raise SnsError(f"--teacher {spec}: give the pickle's path after the colon ({PICKLE_SCHEME}:PATH)")
    return path, ALLOW_UNKNOWN_SOURCE in options


def load_generator(spec: str, key: str = "G_ema"):
    """The network ``key`` (G_ema or D) a spec names; None for module:factory specs (frozen use is up to the caller)."""
    spec = str(spec)
    pickle_spec = parse_pickle_spec(spec)
    if pickle_spec is not None:
        path, allow_unknown_source = pickle_spec
        return load_stylegan2_pickle(path, key=key, allow_unknown_source=allow_unknown_source)
    path = Path(spec)
    if path.is_dir() or spec.endswith(".json"):
        teacher_dir = path if path.suffix != ".json" else path.parent
        if (teacher_dir / "teacher").is_dir():  # a `sns train-gan` run dir: its export lives in teacher/
            teacher_dir = teacher_dir / "teacher"
        G_ema, D, _ = load_teacher_dir(teacher_dir)
        return G_ema if key == "G_ema" else D
    if ":" in spec and not path.exists():
        return None  # module:factory, built by Teacher.from_factory
    if path.suffix == ".pkl":
        raise SnsError(f"--teacher {spec}: for an official StyleGAN2-ADA pickle write stylegan2-pkl:{spec}")
    raise SnsError(
        f"--teacher {spec!r} is neither a `sns train-gan` run directory, stylegan2-pkl:PATH, nor module.path:factory"
    )


def load_teacher(
    spec: str,
    weights: str | None = None,
    taps: str | None = None,
    tap_w: bool = False,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    compile: bool = False,
):
    """A frozen Teacher on ``device`` whose ``sample`` gives [0,1] images and the tapped features, computed in
    ``precision`` (fp32 or bf16), through torch.compile when ``compile``."""
    kw = {"tap_w": tap_w, "precision": precision, "compile": compile}
    if taps is not None:
        kw["taps"] = taps
    G = load_generator(spec)
    if G is None:
        teacher = Teacher.from_factory(spec, weights=weights, **kw)
    else:
        teacher = Teacher(G, **kw)
    return teacher.to(device)
