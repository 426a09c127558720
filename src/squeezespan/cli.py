"""The `sns` command line: sub-commands, shared flags, and one-line errors instead of tracebacks."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from . import bench
from .cliutil import ArgumentParser
from .config import list_presets, resolve_config
from .data import dataset_info, describe_dataset, load_dataset
from .demo import DEMO_DEFAULTS, run_demo
from .engine import prepare_run_dir
from .engine.distributed import launched_rank
from .errors import SnsError
from .eval.run import EVAL_DEFAULTS, run_eval
from .gan import GAN_DEFAULTS, train_gan
from .pretraining import PRETRAIN_DEFAULTS, pretrain

DESCRIPTION = "squeezespan: distil image representations from a GAN generator (Squeeze and Span)."


def _run_flags(p: argparse.ArgumentParser, example: str, out_required: bool = True) -> None:
    """Flags every run sub-command shares (the project's CLI conventions); `example` is a key=value it accepts."""
    p.add_argument(
        "--out", required=out_required, help="run directory (a non-empty one is refused unless --resume/--force)"
    )
    p.add_argument("--config", help="YAML file of config keys")
    p.add_argument("--preset", help="named preset from configs/ (see `sns presets`)")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--device", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last good checkpoint")
    p.add_argument("--force", action="store_true", help="start over in a non-empty --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", metavar="key=value", help=f"override any config key, e.g. {example}")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="sns", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("data", help="dataset tools")
    dsub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    q = dsub.add_parser("info", help="sizes, classes, channels, resolution and statistics of a dataset")
    q.add_argument("name")
    q.add_argument("--root")
    q.add_argument("--split", default=None, help="one split (default: every split)")
    q.add_argument("--resolution", type=int, default=None)
    q.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("eval", help="kNN + linear-probe evaluation of backbones (exported, raw pixels, random init)")
    p.add_argument("--data", help="dataset name")
    p.add_argument("--root", help="dataset root")
    p.add_argument(
        "--backbone",
        action="append",
        default=None,
        help="exported backbone (.safetensors/.json or run dir), 'raw', 'random', or disc:TEACHER[:multi] "
        "(the teacher's discriminator features); repeatable "
        "(default: raw and random)",
    )
    p.add_argument(
        "--protocol",
        choices=["fast", "paper"],
        help="linear probe on frozen features (fast) or on augmented images (paper)",
    )
    _run_flags(p, "knn_k=20")

    p = sub.add_parser("pretrain", help="train a student with Squeeze and Span or a baseline")
    p.add_argument("--method", help="sns | squeeze | kd | vicreg | simsiam | encode")
    p.add_argument("--data", help="dataset name")
    p.add_argument("--root", help="dataset root")
    p.add_argument("--teacher", help="teacher: `sns train-gan` run dir, stylegan2-pkl:PATH, or module.path:factory")
    p.add_argument("--teacher-weights", help="weights for a module:factory teacher")
    _run_flags(p, "lr=0.05")

    p = sub.add_parser("train-gan", help="train a StyleGAN2 teacher on a dataset")
    p.add_argument("--data", help="dataset name")
    p.add_argument("--root", help="dataset root")
    _run_flags(p, "kimg=50")

    p = sub.add_parser("demo", help="end-to-end demo on the embedded digits data (teacher, SnS vs VICReg, report)")
    _run_flags(p, "steps=200", out_required=False)

    p = sub.add_parser(
        "bench",
        help="benchmarks: fashion (incremental table), throughput, figures, teachers "
        "(accuracy vs teacher FD-ref) (bench/ scripts)",
    )
    p.add_argument(
        "bench", choices=list(bench.SCRIPTS), help="which benchmark; `sns bench NAME --help` lists its flags"
    )
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="flags of that benchmark")

    sub.add_parser("presets", help="list the presets in configs/")
    return parser


def _prepare(args, defaults: dict[str, Any], kind: str, extra: dict[str, Any]):
    extra = dict(extra, seed=getattr(args, "seed", None), device=getattr(args, "device", None))
    extra = {k: v for k, v in extra.items() if k in defaults}
    cfg = resolve_config(defaults, kind, args.preset, args.config, args.overrides, extra)
    run_dir = Path(args.out)
    if args.resume and (run_dir / "config.yaml").exists():
        # --resume continues the run with the config it was started with; flags and key=value apply on top
        if args.preset or args.config:
            raise SnsError(
                f"--resume continues {run_dir} with its own config.yaml; change it with key=value "
                "overrides, not --preset/--config"
            )
        cfg = resolve_config(defaults, kind, None, str(run_dir / "config.yaml"), args.overrides, extra)
    if launched_rank() != 0:
        return cfg, run_dir  # under torchrun rank 0 alone checks/creates --out; the engine sends its config
    run_dir = prepare_run_dir(run_dir, resume=args.resume, force=args.force)
    return cfg, run_dir


def cmd_data_info(args) -> int:
    kw = {"resolution": args.resolution} if args.resolution is not None else {}
    if args.json:
        splits = [args.split] if args.split else ["train", "test"]
        print(
            json.dumps([dataset_info(load_dataset(args.name, root=args.root, split=s, **kw)) for s in splits], indent=2)
        )
    else:
        print(describe_dataset(args.name, root=args.root, split=args.split, **kw))
    return 0


def cmd_eval(args) -> int:
    extra = {"data": args.data, "data_root": args.root, "backbones": args.backbone, "protocol": args.protocol}
    cfg, run_dir = _prepare(args, EVAL_DEFAULTS, "eval", extra)
    run_eval(cfg, run_dir, progress=not args.no_progress)
    return 0


def cmd_pretrain(args) -> int:
    extra = {
        "method": args.method,
        "data": args.data,
        "data_root": args.root,
        "teacher": args.teacher,
        "teacher_weights": args.teacher_weights,
    }
    cfg, run_dir = _prepare(args, PRETRAIN_DEFAULTS, "pretrain", extra)
    summary = pretrain(cfg, run_dir, resume=args.resume, progress=not args.no_progress)
    if launched_rank() == 0:
        print(json.dumps(summary, indent=2))
    return 0


def cmd_train_gan(args) -> int:
    extra = {"data": args.data, "data_root": args.root}
    cfg, run_dir = _prepare(args, GAN_DEFAULTS, "gan", extra)
    summary = train_gan(cfg, run_dir, resume=args.resume, progress=not args.no_progress)
    if launched_rank() == 0:
        print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_demo(args) -> int:
    if args.out is None:
        args.out = "runs/demo"
        if Path(args.out).exists() and not args.force:
            args.resume = True  # `make demo` twice reuses the finished pieces
    cfg, run_dir = _prepare(args, DEMO_DEFAULTS, "demo", {})
    run_demo(cfg, run_dir, progress=not args.no_progress)
    return 0


def cmd_bench(args) -> int:
    return bench.run(args.bench, args.bench_args)


def cmd_presets(args) -> int:
    for kind in ("pretrain", "gan", "eval", "demo"):
        names = list_presets(kind)
        if names:
            print(f"{kind:<9} {', '.join(names)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    # key=value overrides may also follow later flags: argparse alone takes only the first run of positionals
    late = [a for a in unknown if "=" in a and not a.startswith("-")]
    if late and hasattr(args, "overrides"):
        args.overrides = list(args.overrides) + late
        unknown = [a for a in unknown if a not in late]
    if unknown:
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    handlers = {
        "eval": cmd_eval,
        "pretrain": cmd_pretrain,
        "train-gan": cmd_train_gan,
        "demo": cmd_demo,
        "bench": cmd_bench,
        "presets": cmd_presets,
    }
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "data":
        if args.data_command != "info":
            args.command_parser.error("missing sub-command: info")
        handler = cmd_data_info
    else:
        handler = handlers[args.command]
    try:
        return handler(args)
    except SnsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as e:
        if os.environ.get("SNS_DEBUG"):
            raise
        # disk full, permission denied, ...: name the file, keep it to one line
        print(f"error: {e.strerror or e} ({e.filename})" if e.filename else f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
