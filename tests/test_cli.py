"""The `sns` command end to end on tiny configs: conventions, outputs, and one-line errors."""

import json
import os
import subprocess
import sys

import pytest
import tiny
import yaml

import squeezespan
from squeezespan.cli import main

TINY = [*tiny.overrides(), "--no-progress", "--device", "cpu"]


def test_python_dash_m_is_sns():
    out = subprocess.run([sys.executable, "-m", "squeezespan", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "pretrain" in out.stdout and "train-gan" in out.stdout


# Ctrl-C arriving while the command line (torch, kornia, ...) is still being imported
_CTRL_C_WHILE_LOADING = """
import builtins, os, signal, sys, time
from squeezespan import entry
sys.argv = ["sns", "presets"]  # a command (`sns` alone and --help answer without loading the command line)
real_import = builtins.__import__
def import_then_ctrl_c(name, *args, **kwargs):
    if name == "cli":  # entry's `from .cli import main`
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(30)  # a slow import: the handler must end the process without waiting for it
    return real_import(name, *args, **kwargs)
builtins.__import__ = import_then_ctrl_c
entry.main()
"""


def test_ctrl_c_while_sns_is_loading_is_one_line_and_exit_130():
    done = subprocess.run([sys.executable, "-c", _CTRL_C_WHILE_LOADING], capture_output=True, text=True, timeout=20)
    assert (done.returncode, done.stderr, done.stdout) == (130, "interrupted\n", "")


def test_sns_entry_hands_ctrl_c_back_to_the_command_line(monkeypatch, capsys):
    import signal

    from squeezespan import entry

    # the handler before: Python's default_int_handler, or SIG_IGN when the shell started pytest in the background
    before = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(sys, "argv", ["sns", "presets"])
    assert entry.main() == 0 and "fashion-cpu" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGINT) is before  # the CLI's own handling: checkpoints


# `sns`, `sns --help` and `sns --version` as the console script runs them, then the full command line's top level
_TOP_LEVEL = """
import contextlib, io, json, sys
from squeezespan import entry
seen = {}
for argv in ([], ["--help"], ["-h"], ["--version"], ["train", "--help"], ["--out", "x"]):
    sys.argv, out, err = ["sns", *argv], io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = entry.main()
        except SystemExit as e:
            code = e.code
    seen[" ".join(argv)] = [code, out.getvalue() + err.getvalue(), "torch" in sys.modules]
from squeezespan.cli import build_parser
full = {}
for argv in (["train", "--help"], ["--out", "x"]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            build_parser().parse_args(argv)
        except SystemExit as e:
            full[" ".join(argv)] = [e.code, err.getvalue(), True]
print(json.dumps({"seen": seen, "help": build_parser().format_help(), "full": full}))
"""


def test_sns_help_and_version_answer_before_torch_loads_with_the_full_command_lines_text():
    env = {**os.environ, "COLUMNS": "100"}
    done = subprocess.run([sys.executable, "-c", _TOP_LEVEL], capture_output=True, text=True, timeout=120, env=env)
    result = json.loads(done.stdout)
    seen, full = result["seen"], result["help"]
    assert "pretrain" in full and "train-gan" in full and "--version" in full
    assert seen[""] == [2, full, False]  # bare `sns`: the help, exit 2 (no command given)
    assert seen["--help"] == seen["-h"] == [0, full, False]
    assert seen["--version"] == [0, f"sns {squeezespan.__version__}\n", False]
    # an unknown command (or a flag where the command belongs) is the full command line's one-line error, at once
    assert seen["train --help"][1].startswith("error: argument COMMAND: invalid choice: 'train'")
    for argv in ("train --help", "--out x"):
        assert seen[argv] == [*result["full"][argv][:2], False]


def test_data_info_digits(capsys):
    assert main(["data", "info", "digits"]) == 0
    out = capsys.readouterr().out
    assert "1437 images" in out and "360 images" in out and "channels    1" in out


def test_pretrain_then_resume_then_eval(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", "--method", "vicreg", "--data", "digits", "--out", str(run), "--seed", "3"] + TINY) == 0
    assert (run / "backbone.safetensors").exists() and (run / "summary.json").exists()
    # a finished run directory is not overwritten without --resume/--force
    assert main(["pretrain", "--method", "vicreg", "--out", str(run)] + TINY) == 2
    assert "is not empty" in capsys.readouterr().err
    # a bare --resume continues with the run's own config (seed 3 included)
    assert main(["pretrain", "--out", str(run), "--resume", "--no-progress"]) == 0
    # overrides apply on top of the run's own config (here: train 2 more steps), not on top of the defaults
    assert main(["pretrain", "--out", str(run), "--resume", "--no-progress", "steps=4"]) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["steps"] == 4 and saved["seed"] == 3 and saved["width"] == 0.125
    assert [json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines()][-1] == 4
    ev = tmp_path / "ev"
    assert (
        main(
            [
                "eval",
                "--data",
                "digits",
                "--backbone",
                str(run),
                "--backbone",
                "raw",
                "--out",
                str(ev),
                "resolution=16",
                "--no-progress",
            ]
        )
        == 0
    )
    rows = json.loads((ev / "eval.json").read_text())["results"]
    assert [r["name"].split(" ")[0] for r in rows] == ["vicreg", "raw"]
    assert all(0 <= r["linear"]["top1"] <= 100 for r in rows)
    assert "| raw pixels | fast |" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["pretrain", "--method", "nope"], "--method 'nope' is unknown"),
        (["pretrain", "--preset", "nope"], "--preset 'nope' is unknown"),
        (["pretrain", "--data", "nope"], "nope"),
        (["pretrain", "lr=fast"], "'lr' must be float"),
        (["pretrain", "batchsize=3"], "unknown key 'batchsize'"),
        (["pretrain", "--device", "cuda:7"], "--device"),
        (["data", "info", "cifar10", "--root", "/nonexistent"], "cifar-10-batches-py"),
        (["eval", "--protocol", "fast", "--backbone", "/nonexistent/backbone.safetensors"], "nonexistent"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, argv, message):
    if argv[0] != "data":
        argv = argv + ["--out", str(tmp_path / "o"), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err, err


def test_bad_yaml_config(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("lr: [0.1\n")
    assert main(["pretrain", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert "not valid YAML at line" in capsys.readouterr().err


def test_unwritable_out(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the run directory's parent should be")
    assert main(["pretrain", "--method", "vicreg", "--out", str(blocker / "run")] + TINY) == 2
    err = capsys.readouterr().err
    assert "not writable" in err and "run" in err
    assert blocker.read_text().startswith("a file")  # nothing on disk was touched


# ------------------------------------------------------------------------------ help that teaches (issue 26)


def _sub_parsers(parser, path=()):
    """(command path, parser) of every sub-command, nested ones included (`data info`, `config show`)."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _sub_parsers(sub, (*path, name))


def test_data_help_names_every_dataset_and_the_default():
    from squeezespan.cli import build_parser
    from squeezespan.data import DATASETS
    from squeezespan.eval.run import EVAL_DEFAULTS
    from squeezespan.gan import GAN_DEFAULTS
    from squeezespan.pretraining import PRETRAIN_DEFAULTS

    defaults = {("eval",): EVAL_DEFAULTS, ("pretrain",): PRETRAIN_DEFAULTS, ("train-gan",): GAN_DEFAULTS}
    seen = set()
    for path, sub in _sub_parsers(build_parser()):
        action = next((a for a in sub._actions if "--data" in a.option_strings), None)
        if action is None:
            continue
        seen.add(path)
        assert all(name in action.help for name in DATASETS), (path, action.help)
        assert f"default: {defaults[path]['data']}" in action.help, (path, action.help)
    assert seen == set(defaults)
    info = dict(_sub_parsers(build_parser()))[("data", "info")]
    name = next(a for a in info._actions if a.dest == "name")
    assert all(n in name.help for n in DATASETS)


def test_presets_prints_each_preset_with_its_description(capsys):
    from squeezespan.config import PRESET_DIR, list_presets

    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in list_presets():
        text = yaml.safe_load((PRESET_DIR / f"{name}.yaml").read_text())["description"]
        assert 20 < len(text) <= 110 and "\n" not in text, name  # one line
        assert any(line.split() == [name, *text.split()] for line in out.splitlines()), name
    assert "pretrain presets (`sns pretrain --preset NAME`)" in out and "`sns train-gan --preset NAME`" in out
    from squeezespan.cli import build_parser

    subs = dict(_sub_parsers(build_parser()))
    for command, kind in (("pretrain", "pretrain"), ("train-gan", "gan"), ("eval", "eval"), ("demo", "demo")):
        preset = next(a for a in subs[(command,)]._actions if "--preset" in a.option_strings)
        assert all(name in preset.help for name in list_presets(kind)), (command, preset.help)


def test_every_key_value_example_in_the_help_resolves():
    """Each `key=value` shown in a `--help` goes through config resolution of its command without an error."""
    import re

    from squeezespan.cli import build_parser
    from squeezespan.config import resolve_config
    from squeezespan.demo import DEMO_DEFAULTS
    from squeezespan.eval.run import EVAL_DEFAULTS
    from squeezespan.gan import GAN_DEFAULTS
    from squeezespan.pretraining import PRETRAIN_DEFAULTS

    kinds = {
        ("eval",): (EVAL_DEFAULTS, "eval"),
        ("pretrain",): (PRETRAIN_DEFAULTS, "pretrain"),
        ("train-gan",): (GAN_DEFAULTS, "gan"),
        ("demo",): (DEMO_DEFAULTS, "demo"),
        ("config", "show"): (PRETRAIN_DEFAULTS, "pretrain"),  # its default --kind
    }
    checked = []
    for path, sub in _sub_parsers(build_parser()):
        text = " ".join(sub.format_help().split())
        examples = re.findall(r"(?<![\w.=-])([a-z_][\w.]*=[^\s,;)]+)", text)
        for example in [e for e in examples if e != "key=value"]:  # the metavar itself
            assert path in kinds, f"`sns {' '.join(path)} --help` shows {example}: add the command to this test"
            defaults, kind = kinds[path]
            resolve_config(defaults, kind, overrides=[example])
            checked.append((path, example))
    assert {p for p, _ in checked} >= {("eval",), ("pretrain",), ("train-gan",), ("demo",)}, checked


def test_sigterm_outside_the_training_loop_ends_the_command_with_143(monkeypatch, capsys):
    """During set-up, evaluation or export (the loop's own handler checkpoints during training) SIGTERM ends the
    command like Ctrl-C: one line saying nothing is lost, exit 143, and the previous handler comes back."""
    import os
    import signal
    import time

    import squeezespan.cli as cli

    def setting_up(args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
        return 0

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(cli, "cmd_pretrain", setting_up)
    assert main(["pretrain", "--out", "unused"]) == 143
    assert "interrupted by SIGTERM before or after training" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGTERM) is before
