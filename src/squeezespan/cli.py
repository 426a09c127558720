"""The `sns` command line: sub-commands, shared flags, and one-line errors instead of tracebacks."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import yaml

from . import bench
from .checks import check_eval_config, check_pretrain_config
from .cliutil import sns_parser
from .config import list_presets, preset_description, resolve_config
from .data import DATASETS, dataset_info, describe_dataset, load_dataset
from .demo import DEMO_DEFAULTS, run_demo
from .engine import prepare_run_dir
from .engine.distributed import launched_rank
from .engine.run import config_diff, describe_diff, release_run_dirs
from .errors import SnsError
from .eval.run import EVAL_DEFAULTS, run_eval
from .export import export_backbone, load_backbone
from .gan import GAN_DEFAULTS, train_gan
from .gan.config import GAN_RESUME_FREE_KEYS
from .gan.config import check_config as check_gan_config
from .hub import HUB_FILES, export_hub, resolve_export
from .manifest import package_version, run_manifest
from .methods import METHODS, resolve_method
from .pretraining import PRETRAIN_DEFAULTS, RESUME_FREE_KEYS, pretrain, resume_free_keys
from .teachers.convert import convert_stylegan2_pickle

# the defaults `sns config show --kind K` resolves over
CONFIG_KINDS = {"pretrain": PRETRAIN_DEFAULTS, "gan": GAN_DEFAULTS, "eval": EVAL_DEFAULTS, "demo": DEMO_DEFAULTS}


def _run_flags(p: argparse.ArgumentParser, example: str, out_required: bool = True, kind: str = "") -> None:
    """Flags every run sub-command shares (the project's CLI conventions); `example` is a key=value it accepts,
    `kind` the kind of run whose presets --preset names."""
    p.add_argument(
        "--out", required=out_required, help="run directory (a non-empty one is refused unless --resume/--force)"
    )
    p.add_argument("--config", help="YAML file of config keys")
    names = ", ".join(list_presets(kind)) if kind else ""
    p.add_argument("--preset", help=f"named preset from configs/: {names or 'none yet'} (`sns presets` describes them)")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--device", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last good checkpoint")
    p.add_argument("--force", action="store_true", help="start over in a non-empty --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bars and no progress messages (warnings stay)"
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help=f"override any config key, e.g. {example}")


def _data_flags(p: argparse.ArgumentParser, defaults: dict[str, Any]) -> None:
    """--data (the registry's dataset names and this command's default) and --root."""
    p.add_argument("--data", help=f"dataset: {', '.join(DATASETS)} (default: {defaults['data']}; see `sns data info`)")
    p.add_argument("--root", help="dataset root (default: $SNS_DATA_ROOT or ./data; folder: the image folder)")


def build_parser() -> argparse.ArgumentParser:
    parser, commands = sns_parser(package_version())

    p = commands["data"]
    dsub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    q = dsub.add_parser("info", help="sizes, classes, channels, resolution and statistics of a dataset")
    q.add_argument("name", help=f"dataset: {', '.join(DATASETS)}")
    q.add_argument("--root", help="dataset root (default: $SNS_DATA_ROOT or ./data)")
    q.add_argument("--split", default=None, help="one split (default: every split)")
    q.add_argument("--resolution", type=int, default=None)
    q.add_argument("--json", action="store_true", help="print JSON")

    p = commands["eval"]
    _data_flags(p, EVAL_DEFAULTS)
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
    _run_flags(p, "knn_k=20", kind="eval")

    p = commands["pretrain"]
    p.add_argument("--method", help=f"{' | '.join(METHODS)} (default: {PRETRAIN_DEFAULTS['method']})")
    _data_flags(p, PRETRAIN_DEFAULTS)
    p.add_argument("--teacher", help="teacher: `sns train-gan` run dir, stylegan2-pkl:PATH, or module.path:factory")
    p.add_argument("--teacher-weights", help="weights for a module:factory teacher")
    _run_flags(p, "lr=0.05", kind="pretrain")

    p = commands["train-gan"]
    _data_flags(p, GAN_DEFAULTS)
    _run_flags(p, "kimg=50", kind="gan")

    p = commands["demo"]
    _run_flags(p, "steps=200", out_required=False, kind="demo")

    p = commands["bench"]
    p.add_argument(
        "bench", choices=list(bench.SCRIPTS), help="which benchmark; `sns bench NAME --help` lists its flags"
    )
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="flags of that benchmark")

    p = commands["config"]
    csub = p.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    q = csub.add_parser("show", help="print the resolved config (defaults < preset < --config < flags < key=value)")
    q.add_argument(
        "--kind", choices=list(CONFIG_KINDS), help="which run's config (default: the preset's kind, else pretrain)"
    )
    q.add_argument("--preset", help="named preset from configs/ (see `sns presets`)")
    q.add_argument("--config", help="YAML file of config keys")
    q.add_argument("--method", help="pretrain method (its defaults fill the keys left at null)")
    q.add_argument("overrides", nargs="*", metavar="key=value", help="override any config key, e.g. lr=0.05")

    p = commands["convert"]
    p.add_argument(
        "pickle", metavar="PATH.pkl", help="StyleGAN2-ADA network pickle (read safely: none of its code runs)"
    )
    p.add_argument("out", metavar="OUT", help="teacher directory to write (use it as --teacher OUT)")
    p.add_argument("--force", action="store_true", help="write into a non-empty OUT")
    p.add_argument(
        "--allow-unknown-source",
        action="store_true",
        help="convert even if the pickle's embedded network source is no official release (a fork): a warning, "
        "recorded in teacher.json; the fork's code changes are dropped, only its weights are used",
    )

    p = commands["export"]
    p.add_argument("run", metavar="RUN_DIR", help="`sns pretrain` run directory (or an exported backbone)")
    p.add_argument(
        "--format",
        choices=["native", "hub"],
        default="hub",
        help="native: backbone.safetensors/.json; "
        "hub: model.safetensors, timm config.json, README.md model card (default)",
    )
    p.add_argument("--out", required=True, help="folder to write (a non-empty one is refused unless --force)")
    p.add_argument("--force", action="store_true", help="write into a non-empty --out")
    return parser


RESUME_FREE = {"pretrain": RESUME_FREE_KEYS, "gan": GAN_RESUME_FREE_KEYS}  # what --resume may change


def _prepare(args, defaults: dict[str, Any], kind: str, extra: dict[str, Any]):
    extra = dict(extra, seed=getattr(args, "seed", None), device=getattr(args, "device", None))
    extra = {k: v for k, v in extra.items() if k in defaults}
    cfg = resolve_config(defaults, kind, args.preset, args.config, args.overrides, extra)
    run_dir = Path(args.out)
    if args.resume and (run_dir / "config.yaml").exists():
        cfg = _resume_config(args, defaults, kind, extra, cfg, run_dir)
    # limits (types, ranges, finiteness, seeds) are refused before --out is touched (--force moves the old run aside)
    if kind == "pretrain":
        check_pretrain_config(resolve_method(cfg))
    elif kind == "gan":
        check_gan_config(cfg)
    elif kind == "eval":
        check_eval_config(cfg)
    if launched_rank() != 0:
        return cfg, run_dir  # under torchrun rank 0 alone checks/creates --out; the engine sends its config
    run_dir = prepare_run_dir(run_dir, resume=args.resume, force=args.force)
    return cfg, run_dir


def _resume_config(args, defaults, kind: str, extra: dict[str, Any], given: dict[str, Any], run_dir: Path):
    """The config a --resume continues with: the run's config.yaml, with flags and key=value on top. A --preset or
    --config (the same command resubmitted, as by the README's Slurm script) must describe that same run; its
    null keys (decided at run time: splits, channels) keep what config.yaml recorded. Only the keys in
    RESUME_FREE may change; any other difference is refused before --out is touched."""
    saved = resolve_config(defaults, kind, None, str(run_dir / "config.yaml"), [], {})
    if not (args.preset or args.config):
        given = resolve_config(defaults, kind, None, str(run_dir / "config.yaml"), args.overrides, extra)
    cfg = {**saved, **{k: v for k, v in given.items() if v is not None}}
    free = resume_free_keys(saved) if kind == "pretrain" else RESUME_FREE.get(kind)
    if free is None:
        return cfg
    same = resolve_method if kind == "pretrain" else dict  # method defaults filled in on both sides
    diff = config_diff(same(saved), same(cfg), free)
    if diff:
        raise SnsError(
            f"--resume continues {run_dir} as it was started, but {describe_diff(diff)} would change what "
            f"it trains; on --resume only {', '.join(sorted(k for k in free if k in defaults))} may change "
            "(start a new run with another --out, or --force)"
        )
    return cfg


def _progress(args) -> bool:
    return not (args.no_progress or args.quiet)


def _log(args):
    """print, or under -q/--quiet only the warnings."""
    if not args.quiet:
        return print
    return lambda msg="", *a, **kw: print(msg, *a, **kw) if str(msg).lstrip().startswith("warning") else None


def _manifest(args, run_dir: Path, kind: str):
    """manifest.json of this run (rank 0 only): environment, command line, start/end time, status."""
    return run_manifest(run_dir, getattr(args, "argv", None), enabled=launched_rank() == 0, kind=kind)


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
    with _manifest(args, run_dir, "eval"):
        run_eval(cfg, run_dir, progress=_progress(args), log=_log(args))
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
    with _manifest(args, run_dir, "pretrain") as ending:
        summary = pretrain(cfg, run_dir, resume=args.resume, progress=_progress(args), log=_log(args))
        if summary.get("interrupted"):
            ending["status"] = "interrupted"
    if launched_rank() == 0:
        print(json.dumps(summary, indent=2))
    return _exit_status(summary)


def _exit_status(summary: Any) -> int:
    """0, or 128 + the signal's number when SIGINT/SIGTERM stopped the run (after its checkpoint, which the run
    said in a line): shells and schedulers see that it did not finish (130 for Ctrl-C, 143 for SIGTERM)."""
    sig = summary.get("signal") if isinstance(summary, dict) and summary.get("interrupted") else None
    return 128 + signal.Signals[sig].value if sig in ("SIGINT", "SIGTERM") else 0


def cmd_train_gan(args) -> int:
    extra = {"data": args.data, "data_root": args.root}
    cfg, run_dir = _prepare(args, GAN_DEFAULTS, "gan", extra)
    with _manifest(args, run_dir, "train-gan") as ending:
        summary = train_gan(cfg, run_dir, resume=args.resume, progress=_progress(args), log=_log(args))
        if isinstance(summary, dict) and summary.get("interrupted"):
            ending["status"] = "interrupted"
    if launched_rank() == 0:
        print(json.dumps(summary, indent=2, default=str))
    return _exit_status(summary)


def cmd_demo(args) -> int:
    if args.out is None:
        args.out = "runs/demo"
        if Path(args.out).exists() and not args.force:
            args.resume = True  # `make demo` twice reuses the finished pieces
    cfg, run_dir = _prepare(args, DEMO_DEFAULTS, "demo", {})
    with _manifest(args, run_dir, "demo"):
        run_demo(cfg, run_dir, progress=_progress(args), log=_log(args))
    return 0


def cmd_bench(args) -> int:
    return bench.run(args.bench, args.bench_args)


def cmd_config_show(args) -> int:
    kind = args.kind
    if kind is None:
        kind = next((k for k in CONFIG_KINDS if args.preset and args.preset in list_presets(k)), "pretrain")
    if args.method and kind != "pretrain":
        raise SnsError(f"--method is a pretrain key; drop it or use --kind pretrain (not --kind {kind})")
    extra = {"method": args.method} if args.method else {}
    cfg = resolve_config(CONFIG_KINDS[kind], kind, args.preset, args.config, args.overrides, extra)
    if kind == "pretrain":
        cfg = resolve_method(cfg)  # what config.yaml of the run would record
        check_pretrain_config(cfg)  # a config the run would refuse is refused here, with the same line
    elif kind == "gan":
        check_gan_config(cfg)
    elif kind == "eval":
        check_eval_config(cfg)
    print(yaml.safe_dump(cfg, sort_keys=False), end="")
    return 0


def cmd_convert(args) -> int:
    out = convert_stylegan2_pickle(
        args.pickle, args.out, force=args.force, allow_unknown_source=args.allow_unknown_source
    )
    print(f"wrote teacher directory {out} (use --teacher {out})")
    return 0


def cmd_export(args) -> int:
    if args.format == "hub":
        out = export_hub(args.run, args.out, force=args.force)
        print(f"wrote {out}: {', '.join(HUB_FILES)}")
        return 0
    out = Path(args.out)
    if out.is_dir() and any(out.iterdir()) and not args.force:
        raise SnsError(f"--out {out} is not empty; pass --force to write the backbone into it")
    src = resolve_export(args.run)
    backbone = load_backbone(src)
    meta = {k: v for k, v in backbone.meta.items() if k not in ("format", "weights", "input", "torchvision_compat")}
    st, js = export_backbone(backbone.student, out / "backbone.safetensors", meta)
    print(f"wrote {st} and {js}")
    return 0


def cmd_presets(args) -> int:
    commands = {"pretrain": "pretrain", "gan": "train-gan", "eval": "eval", "demo": "demo"}
    for kind, command in commands.items():
        names = list_presets(kind)
        if names:
            print(f"{kind} presets (`sns {command} --preset NAME`):")
            width = max(len(n) for n in names)
            for name in names:
                print(f"  {name:<{width}}  {preset_description(name)}")
    return 0


class Terminated(BaseException):
    """SIGTERM outside the training loop (set-up, evaluation, export): ends the command like Ctrl-C does."""


def _raise_on_sigterm():
    """SIGTERM raises Terminated from here on (the loop's StopSignal takes over while it trains); the previous
    handler, or None where handlers cannot be set (not the main thread)."""

    def handler(signum, frame):
        raise Terminated()

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for the run's manifest.json
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
        "convert": cmd_convert,
        "export": cmd_export,
    }
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "data":
        if args.data_command != "info":
            args.command_parser.error("missing sub-command: info")
        handler = cmd_data_info
    elif args.command == "config":
        if args.config_command != "show":
            args.command_parser.error("missing sub-command: show")
        handler = cmd_config_show
    else:
        handler = handlers[args.command]
    previous = _raise_on_sigterm()
    try:
        return handler(args)
    except SnsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Terminated) as e:
        # outside the training loop (which checkpoints and exits itself): nothing half-written stays, since every
        # file is written atomically; the run directory keeps its last checkpoint
        name = "SIGTERM" if isinstance(e, Terminated) else "SIGINT"
        print(f"interrupted by {name} before or after training; nothing to save (files are written atomically)")
        return 143 if isinstance(e, Terminated) else 130
    except BrokenPipeError:
        return 0
    except OSError as e:
        if os.environ.get("SNS_DEBUG"):
            raise
        # disk full, permission denied, ...: name the file, keep it to one line
        print(f"error: {e.strerror or e} ({e.filename})" if e.filename else f"error: {e}", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        release_run_dirs()  # the run directory's lock (engine.run.RunLock) ends with the command


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
