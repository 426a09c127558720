"""`sns bench`: runs a benchmark of the repository's experiments package (bench/) from a source checkout.

The benches are not part of the installed library (they import it, never the other way round): they need the
checkout they live in. The checkout is $SNS_BENCH_DIR/.. when set, else the one this package runs from (an
editable install), else the current directory; its folder is put on sys.path so that `bench` imports as a package.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

from .errors import SnsError

MODULES = {  # `sns bench NAME` -> the module whose main(argv, prog) it runs
    "fashion": "bench.fashion.cli",
    "throughput": "bench.throughput.cli",
    "figures": "bench.figures",
    "teachers": "bench.teacher_quality.cli",
    "teacher-precision": "bench.teacher_precision",
}
SCRIPTS = tuple(MODULES)
SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the checkout's root when installed with pip -e


def checkout() -> Path:
    """The source checkout holding the experiments package bench/ (see the module docstring)."""
    env = os.environ.get("SNS_BENCH_DIR")
    candidates = [Path(env).resolve().parent] if env else []
    candidates += [SOURCE_ROOT, Path.cwd()]
    for root in candidates:
        if (root / "bench" / "__init__.py").is_file():
            return root
    raise SnsError(
        "sns bench needs a source checkout of squeezespan (its bench/ folder is not installed): run it from the "
        "repository root, install the checkout with pip install -e, or set SNS_BENCH_DIR=/path/to/repo/bench"
    )


def load(name: str) -> ModuleType:
    """The module of bench ``name`` (one of SCRIPTS), imported from the checkout's bench package."""
    if name not in MODULES:
        raise SnsError(f"sns bench {name!r} is unknown; benches: {', '.join(SCRIPTS)}")
    root = checkout()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    loaded = sys.modules.get("bench")
    if loaded is not None and Path(loaded.__file__ or "").resolve().parent != root / "bench":
        raise SnsError(
            f"another module named 'bench' ({loaded.__file__}) is imported; sns bench needs {root / 'bench'}"
        )
    return importlib.import_module(MODULES[name])


def run(name: str, argv: list[str] | None = None) -> int:
    """`sns bench NAME ARGS...`: the bench's own argument parser and main (its --help lists the flags)."""
    return int(load(name).main(list(argv or []), prog=f"sns bench {name}") or 0)
