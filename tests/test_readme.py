"""Every README example that is meant to run on the embedded digits runs as written, in order, in a fresh folder.

The only change is the budget: each `sns` command and each `resolve_config` call of the Python example gets tiny
`key=value` overrides appended (the README's own override mechanism; later keys win), so the whole README runs in
seconds. Every other fenced block must be listed in SKIPPED with the reason it cannot run here, so a new example
cannot slip in untested.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import squeezespan
from squeezespan.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"

# Appended to the README's commands: fewer images and steps, no FD-ref or sample grids, fp32 on the CPU.
TINY_GAN = ["kimg=0.032", "fd_ref_kimg=null", "sample_kimg=null", "channel_max=16", "ckpt_every=0", "bf16=false"]
TINY_STUDENT = ["steps=2", "batch_size=16", "knn_every=0", "final_eval=false", "ckpt_every=0", "bf16=false"]
TINY = {"train-gan": TINY_GAN + ["--device", "cpu"], "pretrain": TINY_STUDENT + ["--device", "cpu"], "eval": []}
NARROW = ["width=0.125", "proj_hidden=32", "proj_dim=32", "squeeze_hidden=32"]  # shell students: width is free

SKIPPED = {  # first line of a fenced block -> why it does not run here
    "make demo": "the two set-up commands: make demo is test_demo's pipeline, make test is this suite",
    "torchrun --standalone": "CIFAR-10 and an official pickle on 4 GPUs (torchrun itself: test_distributed)",
    "#!/bin/bash": "a Slurm job script: needs a cluster",
}


def blocks(text: str) -> list[tuple[str, str]]:
    """The README's fenced blocks as (language, body)."""
    return re.findall(r"^```(\w*)\n(.*?)^```$", text, flags=re.S | re.M)


def commands(body: str) -> list[list[str]]:
    """A shell block's commands as argv lists (comments dropped, `sns` first)."""
    out = []
    for line in body.splitlines():
        argv = shlex.split(line, comments=True)
        if argv:
            assert argv[0] == "sns", f"README shell example runs {argv[0]!r}: teach test_readme.py how to run it"
            out.append(argv[1:])
    return out


def runnable() -> tuple[list[str], list[str]]:
    shell, python = [], []
    for lang, body in blocks(README.read_text()):
        first = body.splitlines()[0] if body.strip() else ""
        if any(first.startswith(k) for k in SKIPPED):
            continue
        assert lang in ("bash", "python"), f"README block in {lang or 'no language'!r} starting {first!r}"
        (shell if lang == "bash" else python).append(body)
    return shell, python


def test_every_readme_block_is_run_or_skipped_with_a_reason():
    shell, python = runnable()
    assert len(shell) == 1 and len(python) == 1, "a new README example: run it here or say in SKIPPED why not"
    found = {b.splitlines()[0] for _, b in blocks(README.read_text())}
    assert all(any(f.startswith(k) for f in found) for k in SKIPPED), "SKIPPED names a block the README lost"


def test_readme_examples_run_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    shell, python = runnable()
    for argv in commands(shell[0]):
        extra = [] if "--resume" in argv else TINY[argv[0]] + (NARROW if argv[0] == "pretrain" else [])
        assert main([*argv, "--no-progress", *extra]) == 0, f"README: sns {shlex.join(argv)}"
    assert (tmp_path / "runs/gan-digits/teacher/G_ema.safetensors").is_file()
    assert (tmp_path / "runs/sns-digits/backbone.safetensors").is_file()
    assert "raw pixels" in (tmp_path / "runs/eval-sns/eval.json").read_text()

    resolve = squeezespan.resolve_config

    def tiny_resolve(*args, overrides=(), **kw):  # the Python example's budget, as key=value overrides
        return resolve(*args, overrides=[*overrides, *TINY_STUDENT, "device=cpu"], **kw)

    monkeypatch.setattr(squeezespan, "resolve_config", tiny_resolve)
    scope: dict = {}
    exec(compile(python[0], f"{README}:python", "exec"), scope)  # its own assert checks torchvision's output
    assert tuple(scope["z"].shape) == (16, 512) and scope["summary"]["steps"] == 2
