"""The library's layers: every squeezespan import points down the order below, and no imports form a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "squeezespan"

# bottom to top: a module may import its own layer's modules and those of the layers below it, never above
LAYERS = [
    ("errors", "files", "config", "cliutil", "userimport"),
    ("data",),
    ("models",),
    ("export",),
    ("hub",),  # hub-format export (timm layout, model card) on top of export
    ("teachers",),
    ("engine",),
    ("manifest",),  # manifest.json of a run: versions, hardware (engine.device.cpu_name), command line
    ("methods",),
    ("checks",),  # the limits of pretrain's and train-gan's configs (reads the methods table)
    ("eval",),
    ("report",),  # below the training loops: GAN training writes its sample grids with report.grid
    ("pretraining",),
    ("gan",),
    ("demo",),
    ("bench",),  # squeezespan/bench.py: finds and runs the bench/ scripts for `sns bench`
    ("cli", "__main__", "entry"),  # entry: the console script, loads cli
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}
ROOT = "squeezespan"  # the package's __init__: the public API, re-exports from every layer


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    path = SRC.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(path: Path) -> set[str]:
    """The squeezespan modules ``path`` imports anywhere in its body (function-local imports too)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == ROOT)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != ROOT:
                continue
            for alias in node.names:  # `from . import x` imports the module x when there is one
                sub = f"{target}.{alias.name}"
                found.add(sub if _is_module(sub) else target)
    found.discard(name)
    return found


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path (first node repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_every_module_has_a_layer():
    unknown = sorted({_unit(m) for m in _graph()} - set(RANK) - {ROOT})
    assert not unknown, f"add {unknown} to LAYERS in tests/test_layers.py"


def test_imports_point_down_the_layers():
    upward = [
        f"{src} imports {dst} ({_unit(src)} is below {_unit(dst)})"
        for src, targets in _graph().items()
        if src != ROOT
        for dst in sorted(targets)
        if dst == ROOT or RANK.get(_unit(src), -1) < RANK.get(_unit(dst), -1)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    graph = {m: targets for m, targets in _graph().items() if m != ROOT}
    cycle = _cycle(graph)
    assert cycle is None, "module import cycle: " + " -> ".join(cycle)
    units: dict[str, set[str]] = {}
    for src, targets in graph.items():
        units.setdefault(_unit(src), set()).update(_unit(t) for t in targets if _unit(t) != _unit(src))
    cycle = _cycle(units)
    assert cycle is None, "package import cycle: " + " -> ".join(cycle)


def test_the_checker_sees_relative_and_local_imports(tmp_path):
    # the resolution the tests above rely on, on two modules of the tree that import relatively
    assert "squeezespan.errors" in _imports(PACKAGE / "data" / "pixels.py")
    assert "squeezespan.teachers.stylegan2" in _imports(PACKAGE / "teachers" / "pickle_import.py")
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
