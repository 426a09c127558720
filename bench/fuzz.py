"""Fuzz every `sns` sub-command with generated bad input: count how many end cleanly.

Each case is generated from one seeded random stream: `key=value` overrides (numbers past every limit, non-finite,
huge, wrong types, broken YAML), config files (random text and bytes, YAML of the wrong shape), teacher specs
(random strings, garbage pickles and safetensors, teacher directories with damaged JSON, factories that fail),
backbones for `sns eval` (garbage and truncated exports), datasets (unknown names, roots with garbage IDX files,
folders without images) and run directories (fresh, or holding an earlier run's files, with --resume or --force).
Every case runs `sns` in-process with tiny budgets appended, so an input that turns out valid trains for seconds.

A case is clean when `sns` exits 0, or exits 1 or 2 with exactly one `error: ...` line on stderr and every file
that was in --out before is unchanged. Anything else (an exception escaping `sns`, a second line, a changed file)
is counted with its input. Writes bench/results/fuzz.json.

Usage: python bench/fuzz.py [--cases 300] [--seed 0] [--out PATH]
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import platform
import random
import shutil
import struct
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from squeezespan.cli import CONFIG_KINDS, main
from squeezespan.cliutil import ArgumentParser

TINY = {
    "pretrain": "resolution=16 width=0.125 batch_size=16 steps=1 proj_hidden=16 proj_dim=16 squeeze_hidden=16 "
    "final_eval=false knn_every=0 ckpt_every=0 --no-progress --device cpu".split(),
    "train-gan": "resolution=16 channel_base=128 channel_max=16 z_dim=8 w_dim=8 mapping_layers=1 batch_size=8 "
    "kimg=0.016 fd_ref_kimg=null sample_kimg=null ckpt_every=0 --no-progress --device cpu".split(),
    "eval": "resolution=16 linear_epochs=2 --no-progress --device cpu".split(),
}
OLD_RUN = {"notes.txt": b"an earlier run's notes\n", "config.yaml": b"method: vicreg\n"}
SCALARS = [
    "nan", ".nan", "inf", "-.inf", "1e309", "-0", "0", "1", "-1", "0.5", "1e-320", "2**40", "true", "false",
    "null", "~", "", "''", "[]", "{}", "[1, 2, 3]", "{a: 1}", "[", "{", "]", "auto", "cpu", "cuda:7", "fp16",
    "resnet18", "timm:", "timm:no_such_model", "x:y", "os:system", "../../etc", "a" * 300, "\u00e9\u00e8", "- 1",
]  # fmt: skip


def value(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.35:
        return rng.choice(SCALARS)
    if r < 0.55:
        return str(rng.choice([-1, 1]) * rng.randint(0, 2 ** rng.randint(1, 80)))
    if r < 0.7:
        return repr(rng.choice([-1, 1]) * 10 ** rng.uniform(-300, 300))
    if r < 0.85:
        return "[" + ", ".join(rng.choice(SCALARS[:20]) for _ in range(rng.randint(0, 4))) + "]"
    return "".join(rng.choice("abc:{}[]-_=.,'\"#!&*%@ \t0123456789") for _ in range(rng.randint(0, 12)))


def overrides(rng: random.Random, kind: str) -> list[str]:
    keys = sorted(CONFIG_KINDS["gan" if kind == "train-gan" else kind])
    keys += ["augment.crop_scale", "augment.nope", "batch", "snapshot_kimg", "not_a_key", "lr.x"]
    return [f"{rng.choice(keys)}={value(rng)}" for _ in range(rng.randint(1, 3))]


def garbage(rng: random.Random, n: int | None = None) -> bytes:
    return bytes(rng.randrange(256) for _ in range(n if n is not None else rng.randint(0, 600)))


def config_file(rng: random.Random, d: Path) -> Path:
    p = d / f"cfg{rng.randrange(10**6)}.yaml"
    r = rng.random()
    if r < 0.3:
        p.write_bytes(garbage(rng))
    elif r < 0.6:
        p.write_text("\n".join(o.replace("=", ": ", 1) for o in overrides(rng, "pretrain")) + "\n")
    else:
        p.write_text(rng.choice(["- 1\n- 2\n", "42\n", "'text'\n", "a: [\n", "kind: gan\n", "augment: 3\n", ""]))
    return p


def teacher_spec(rng: random.Random, d: Path) -> str:
    r = rng.randrange(9)
    p = d / f"t{rng.randrange(10**6)}"
    if r == 0:
        return value(rng) or "x"
    if r == 1:
        p.with_suffix(".pkl").write_bytes(garbage(rng))
        return f"stylegan2-pkl:{p.with_suffix('.pkl')}"
    if r == 2:
        obj = rng.choice([{"G_ema": 3}, [1, 2], {"G_ema": {"a": 1}}, "text", {}])
        p.with_suffix(".pkl").write_bytes(pickle.dumps(obj))
        return f"stylegan2-pkl:{p.with_suffix('.pkl')}"
    if r == 3:
        return f"stylegan2-pkl,{value(rng)}:{p}.pkl"
    if r == 4:  # a teacher directory with damaged files
        p.mkdir()
        (p / "teacher.json").write_bytes(rng.choice([garbage(rng), b"{}", b'{"G_kwargs": 3}', b"[1]"]))
        (p / "G_ema.safetensors").write_bytes(garbage(rng))
        return str(p)
    if r == 5:
        p.mkdir()
        return str(p)
    if r == 6:
        return rng.choice(["no_such_module:make", "os:getcwd", "json:dumps", "math:pi", "fuzz_factories:raises"])
    if r == 7:
        return rng.choice(["fuzz_factories:returns_tensor", "fuzz_factories:returns_none", "fuzz_factories:linear"])
    return str(d / "missing" / "teacher")


FACTORIES = '''"""Generator factories that go wrong, for bench/fuzz.py."""
import torch


def raises():
    raise RuntimeError("this factory fails")


def returns_tensor():
    return torch.zeros(3)


def returns_none():
    return None


def linear():
    return torch.nn.Linear(4, 4)
'''


def backbone_spec(rng: random.Random, d: Path) -> str:
    r = rng.randrange(7)
    p = d / f"b{rng.randrange(10**6)}"
    if r == 0:
        return value(rng) or "x"
    if r == 1:
        p.with_suffix(".safetensors").write_bytes(garbage(rng))
        p.with_suffix(".json").write_bytes(rng.choice([garbage(rng), b"{}", b'{"arch": "resnet18"}']))
        return str(p)
    if r == 2:  # a valid header declaring more data than the file holds
        header = json.dumps({"w": {"dtype": "F32", "shape": [2**20], "data_offsets": [0, 4 * 2**20]}}).encode()
        p.with_suffix(".safetensors").write_bytes(struct.pack("<Q", len(header)) + header + garbage(rng, 16))
        p.with_suffix(".json").write_text(json.dumps({"arch": "resnet18", "width": value(rng), "in_channels": 1}))
        return str(p)
    if r == 3:
        return rng.choice(["raw", "random:resnet18", "random:nope", "disc:" + teacher_spec(rng, d), "random:"])
    if r == 4:
        p.mkdir()
        return str(p)
    if r == 5:
        return teacher_spec(rng, d)
    return str(d / "no" / "such" / "backbone")


def data_args(rng: random.Random, d: Path) -> list[str]:
    r = rng.randrange(6)
    if r == 0:
        return ["--data", rng.choice(["digits", "mnist", "fashion-mnist", "cifar10", "stl10", "folder", value(rng)])]
    root = d / f"root{rng.randrange(10**6)}"
    root.mkdir()
    if r == 1:  # IDX files of the wrong size, type or magic
        for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"):
            (root / name).write_bytes(rng.choice([garbage(rng), struct.pack(">IIII", 2051, 10, 28, 28) + b"\0" * 50]))
        return ["--data", rng.choice(["mnist", "fashion-mnist"]), "--root", str(root)]
    if r == 2:  # a folder of non-images and empty class folders
        (root / "cls").mkdir()
        (root / "cls" / "a.png").write_bytes(garbage(rng))
        (root / "empty").mkdir()
        return ["--data", "folder", "--root", str(root)]
    if r == 3:
        (root / "cifar-10-batches-py").mkdir()
        (root / "cifar-10-batches-py" / "data_batch_1").write_bytes(garbage(rng))
        return ["--data", "cifar10", "--root", str(root)]
    return ["--data", "digits", "--root", str(root / "nowhere")]


def out_dir(rng: random.Random, d: Path) -> tuple[Path, list[str]]:
    out = d / f"out{rng.randrange(10**6)}"
    r = rng.randrange(4)
    if r == 0:
        return out, []
    out.mkdir()
    for name, data in OLD_RUN.items():
        (out / name).write_bytes(data)
    return out, [[], ["--resume"], ["--force"]][r - 1]


def case(rng: random.Random, d: Path) -> list[str]:
    """One generated command line."""
    sub = rng.choice(["pretrain", "pretrain", "train-gan", "eval", "config", "export", "convert", "data"])
    if sub == "config":
        kind = rng.choice(["pretrain", "gan", "eval", "demo"])
        argv = ["config", "show", "--kind", kind, *overrides(rng, "train-gan" if kind == "gan" else kind)]
        return argv + (["--config", str(config_file(rng, d))] if rng.random() < 0.3 else [])
    if sub == "export":
        return [
            "export",
            backbone_spec(rng, d),
            "--out",
            str(out_dir(rng, d)[0]),
            "--format",
            rng.choice(["hub", "native"]),
        ]
    if sub == "convert":
        return ["convert", teacher_spec(rng, d).split(":", 1)[-1], str(d / f"conv{rng.randrange(10**6)}")]
    if sub == "data":
        return ["data", "info", rng.choice(["digits", "mnist", "folder", value(rng) or "x"])] + data_args(rng, d)[2:]
    # one bad ingredient per case, the rest valid, so that every layer of checks is reached (not only the first)
    out, flags = out_dir(rng, d)
    argv = [sub, "--out", str(out), *flags]
    base = {"pretrain": ["--method", "vicreg", "--data", "digits"], "train-gan": ["--data", "digits"]}
    base["eval"] = ["--data", "digits", "--backbone", "raw"]
    ingredients = ["overrides", "config", "data", "seed", "none"]
    ingredients += {"pretrain": ["teacher", "teacher", "method"], "eval": ["backbone", "backbone"]}.get(sub, [])
    bad = rng.choice(ingredients)
    argv += base[sub]
    if bad == "teacher":
        argv += ["--method", rng.choice(["sns", "squeeze", "kd", "encode"]), "--teacher", teacher_spec(rng, d)]
    elif bad == "method":
        argv += ["--method", value(rng) or "x"]
    elif bad == "backbone":
        argv += ["--backbone", backbone_spec(rng, d)]
    elif bad == "data":
        argv += data_args(rng, d)
    elif bad == "config":
        argv += ["--config", str(config_file(rng, d))]
    elif bad == "seed":
        argv += ["--seed", value(rng) or "1"]
    argv += TINY[sub]
    if bad == "overrides":
        argv += overrides(rng, sub)
    return argv


def snapshot(argv: list[str]) -> dict[str, bytes]:
    """The files of --out before the case runs (only existing ones count)."""
    if "--out" not in argv:
        return {}
    out = Path(argv[argv.index("--out") + 1])
    if not out.is_dir():
        return {}
    return {str(p): p.read_bytes() for p in out.rglob("*") if p.is_file()}


def run_case(argv: list[str]) -> dict[str, Any]:
    before = snapshot(argv)
    err, out = io.StringIO(), io.StringIO()
    t0 = time.time()
    escaped = None
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(list(argv))
        except SystemExit as e:  # argparse: usage + one error line, exit 2
            code = e.code if isinstance(e.code, int) else 2
        except BaseException as e:  # noqa: BLE001 - anything escaping sns is what we count
            code, escaped = None, "".join(traceback.format_exception_only(type(e), e)).strip()[-500:]
    lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ") or ": error: " in ln]
    warnings_ok = all(ln.startswith(("warning", "usage:", "  ", "sns ")) or ln in errors for ln in lines)
    changed = [k for k, v in before.items() if not Path(k).is_file() or Path(k).read_bytes() != v]
    if code == 0:
        clean = escaped is None
    else:
        clean = code in (1, 2) and len(errors) == 1 and warnings_ok and not changed and escaped is None
    return {
        "argv": argv,
        "exit": code,
        "clean": clean,
        "error": errors[-1][:300] if errors else None,
        "escaped": escaped,
        "stderr_lines": len(lines),
        "changed_files": changed,
        "seconds": round(time.time() - t0, 2),
    }


def main_fuzz(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "fuzz.json"))
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="sns-fuzz-"))
    (work / "fuzz_factories.py").write_text(FACTORIES)
    sys.path.insert(0, str(work))
    cwd = os.getcwd()
    os.chdir(work)  # relative paths a case may write (./data, runs/) stay in the scratch folder
    results = []
    t0 = time.time()
    try:
        for i in range(args.cases):
            d = work / f"case{i:04d}"
            d.mkdir()
            rec = run_case(case(rng, d))
            results.append(rec)
            mark = "ok " if rec["clean"] else "BAD"
            print(f"{i:4d} {mark} exit={rec['exit']} {rec['seconds']:6.2f}s {' '.join(rec['argv'])[:150]}", flush=True)
            shutil.rmtree(d, ignore_errors=True)
    finally:
        os.chdir(cwd)
        shutil.rmtree(work, ignore_errors=True)
    import torch

    by_command: dict[str, dict[str, int]] = {}
    for r in results:
        c = by_command.setdefault(r["argv"][0], {"tried": 0, "clean": 0, "accepted": 0})
        c["tried"] += 1
        c["clean"] += r["clean"]
        c["accepted"] += r["exit"] == 0
    summary = {
        "what": "generated bad input across every sns sub-command, run in-process with tiny budgets; clean = exit 0, "
        "or exit 1/2 with exactly one error line and every earlier file in --out unchanged",
        "command": f"python bench/fuzz.py --cases {args.cases} --seed {args.seed}",
        "seed": args.seed,
        "tried": len(results),
        "clean": sum(r["clean"] for r in results),
        "accepted": sum(r["exit"] == 0 for r in results),
        "refused_cleanly": sum(r["clean"] and r["exit"] != 0 for r in results),
        "by_command": by_command,
        "wall_s": round(time.time() - t0, 1),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "not_clean": [r for r in results if not r["clean"]],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{summary['clean']}/{summary['tried']} clean ({summary['accepted']} accepted); wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main_fuzz())
