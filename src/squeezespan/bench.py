"""`sns bench`: finds the repository's bench/ scripts (fashion, throughput, figures, teachers) and runs their main()."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from .errors import SnsError

SCRIPTS = ("fashion", "throughput", "figures", "teachers")
FILES = {"teachers": "teacher_quality"}  # bench names whose script is named otherwise


def bench_dir() -> Path:
    """The bench/ folder: $SNS_BENCH_DIR, else the source checkout this package runs from, else ./bench."""
    env = os.environ.get("SNS_BENCH_DIR")
    candidates = [Path(env)] if env else []
    candidates += [Path(__file__).resolve().parents[2] / "bench", Path.cwd() / "bench"]
    for c in candidates:
        if (c / "fashion.py").is_file():
            return c
    raise SnsError(
        "sns bench needs the repository's bench/ folder (a source checkout installed with pip -e, "
        "or run from the repository root, or set SNS_BENCH_DIR=/path/to/bench)"
    )


def run_script(main) -> None:
    """A bench script's ``__main__``: exit with main(argv)'s code, a bad input as one `error:` line (exit 2)."""
    try:
        sys.exit(main(sys.argv[1:]))
    except SnsError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def load_script(name: str, directory: Path | None = None) -> ModuleType:
    """Import bench/<name>.py as module ``squeezespan_bench_<name>`` (cached in sys.modules); ``directory``:
    the bench folder to load from (default bench_dir(); scripts pass their own folder)."""
    if name not in SCRIPTS:
        raise SnsError(f"sns bench {name!r} is unknown; benches: {', '.join(SCRIPTS)}")
    mod_name = f"squeezespan_bench_{name}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    path = Path(directory or bench_dir()) / f"{FILES.get(name, name)}.py"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[mod_name]
        raise
    return module


def run(name: str, argv: list[str] | None = None) -> int:
    """`sns bench NAME ARGS...`: the script's own argument parser and main (its --help lists the flags)."""
    return int(load_script(name).main(list(argv or []), prog=f"sns bench {name}") or 0)


def fashion(argv: list[str] | None = None) -> int:
    return run("fashion", argv)


def throughput(argv: list[str] | None = None) -> int:
    return run("throughput", argv)


def figures(argv: list[str] | None = None) -> int:
    return run("figures", argv)
