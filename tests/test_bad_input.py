"""The bad-input table: every bad input ends with one `error:` line, a non-zero exit and nothing on disk changed."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tiny
import torch
from PIL import Image
from safetensors.torch import save_file

from squeezespan.cli import main
from squeezespan.config import resolve_config
from squeezespan.data.folder import decode_image
from squeezespan.engine.checkpoint import save_checkpoint
from squeezespan.export import export_backbone
from squeezespan.models import build_student
from squeezespan.pretraining import PRETRAIN_DEFAULTS

TESTS_DIR = Path(__file__).resolve().parent
# tiny settings, so that a case that stops failing trains for seconds, not hours
SMALL = {
    "pretrain": tiny.overrides(),
    "eval": ["resolution=16", "linear_epochs=2"],
    "train-gan": ["kimg=0.05", "batch_size=8", "fd_ref_kimg=null", "sample_kimg=0", "ckpt_every=0"],
}
OLD_RUN = {
    "keep.txt": b"an earlier run's notes\n",
    "config.yaml": b"method: vicreg\n",
    "metrics.jsonl": b'{"step": 1, "loss": 1.0}\n',
}


# ------------------------------------------------------------------------------------------ input builders


def _idx(path: Path, dims: tuple[int, ...], data: bytes | None = None, magic: bytes | None = None) -> None:
    header = (magic or bytes([0, 0, 8, len(dims)])) + struct.pack(">" + "I" * len(dims), *dims)
    path.write_bytes(header + (bytes(int(np.prod(dims))) if data is None else data))


def _mnist(root: Path, images: dict | None = None) -> Path:
    d = root / "mnist"
    d.mkdir(parents=True)
    _idx(d / "train-images-idx3-ubyte", (10, 28, 28), **(images or {}))
    _idx(d / "train-labels-idx1-ubyte", (10,))
    return d


def _cifar10(root: Path, first_batch: bytes) -> Path:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    good = {b"data": np.zeros((10, 3072), np.uint8), b"labels": [0] * 10}
    for i in range(1, 6):
        (d / f"data_batch_{i}").write_bytes(pickle.dumps(good, protocol=2))
    (d / "data_batch_1").write_bytes(first_batch)
    return d


class _Mkdir:
    """Unpickling this would create a directory: proof of code execution if it ever appears."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


def _pngs(d: Path, n: int = 3) -> None:
    """n RGB images whose red channel varies and whose green and blue channels are constant."""
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (20, 20), (i * 30, 90, 200)).save(d / f"img{i}.png")


def _export(path: Path, width: float = 0.125) -> Path:
    student = build_student("resnet18", "cifar", width, in_channels=1)
    st, _ = export_backbone(student, path, {"mean": [0.5], "std": [0.25], "resolution": 16})
    return st


def _run_with_truncated_checkpoint(d: Path) -> None:
    """A run directory as a killed `sns pretrain` could leave it: its config and a checkpoint cut short."""
    cfg = resolve_config(PRETRAIN_DEFAULTS, "pretrain", overrides=SMALL["pretrain"] + ["method=vicreg", "device=cpu"])
    (d / "checkpoints").mkdir(parents=True)
    (d / "config.yaml").write_text(json.dumps(cfg))  # JSON is YAML
    ckpt = save_checkpoint(d / "checkpoints" / "ckpt-00000002.pt", {"step": 2, "student": {"w": torch.ones(64)}})
    ckpt.write_bytes(ckpt.read_bytes()[:-100])


# A case writes its inputs under tmp (t) and returns (argv, fragments the one-line message must contain).
# Run commands get --out tmp/out, a directory holding an earlier run (OLD_RUN), with --force: the old run may
# be replaced only once the input is valid. A case that names its own --out keeps it; "{out}" stands for the
# earlier run's directory; "{no-out}" means no --out at all.


def case_missing_dataset_root(t):
    return ["pretrain", "--method", "vicreg", "--data", "cifar10", "--root", str(t / "nowhere")], ["nowhere"]


def case_truncated_idx(t):
    _mnist(t / "data", {"data": bytes(100)})
    return ["data", "info", "mnist", "--root", str(t / "data"), "--split", "train"], [
        "train-images-idx3-ubyte",
        "truncated",
    ]


def case_corrupt_idx_magic(t):
    _mnist(t / "data", {"magic": b"\x00\x00\x0d\x03"})
    return ["pretrain", "--method", "vicreg", "--data", "mnist", "--root", str(t / "data")], [
        "train-images-idx3-ubyte",
        "magic",
    ]


def case_corrupt_idx_gzip(t):
    d = t / "data" / "mnist"
    d.mkdir(parents=True)
    (d / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with gzip.open(d / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + struct.pack(">I", 1) + b"\0")
    return ["data", "info", "mnist", "--root", str(t / "data")], ["train-images-idx3-ubyte.gz", "cannot read"]


def case_cifar_wrong_sizes(t):
    _cifar10(t / "data", pickle.dumps({b"data": np.zeros((10, 1000), np.uint8), b"labels": [0] * 10}))
    return ["pretrain", "--method", "vicreg", "--data", "cifar10", "--root", str(t / "data")], [
        "data_batch_1",
        "(10, 1000)",
    ]


def case_cifar_malicious_pickle(t):
    _cifar10(t / "data", pickle.dumps(_Mkdir(str(t / "pwned"))))
    return ["data", "info", "cifar10", "--root", str(t / "data")], ["data_batch_1", "unsafe pickle"]


def case_stl10_truncated(t):
    d = t / "data" / "stl10_binary"
    d.mkdir(parents=True)
    (d / "train_X.bin").write_bytes(bytes(3 * 96 * 96 + 5))
    (d / "train_y.bin").write_bytes(bytes([1]))
    return ["data", "info", "stl10", "--root", str(t / "data"), "--split", "train"], ["train_X.bin", "truncated"]


def case_empty_image_folder(t):
    (t / "imgs").mkdir()
    return ["pretrain", "--method", "vicreg", "--data", "folder", "--root", str(t / "imgs")], [
        "imgs",
        "no images found",
    ]


def case_corrupt_image_in_folder(t):
    _pngs(t / "imgs" / "cats")
    (t / "imgs" / "cats" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return ["pretrain", "--method", "vicreg", "--data", "folder", "--root", str(t / "imgs")], [
        "broken.png",
        "cannot decode",
    ]


def case_float_image_in_folder(t):
    _pngs(t / "imgs")
    Image.fromarray(np.full((20, 20), 0.5, np.float32)).save(t / "imgs" / "depth.tif")
    return ["data", "info", "folder", "--root", str(t / "imgs")], ["depth.tif", "floating-point"]


def case_malformed_yaml(t):
    (t / "c.yaml").write_text("lr: [0.1\n")
    return ["pretrain", "--config", str(t / "c.yaml")], ["c.yaml", "not valid YAML at line"]


def case_yaml_is_a_list(t):
    (t / "c.yaml").write_text("- lr: 0.1\n- batch_size: 64\n")
    return ["pretrain", "--config", str(t / "c.yaml")], ["c.yaml", "mapping", "list"]


def case_yaml_unknown_nested_key(t):
    (t / "c.yaml").write_text("augment:\n  blurr_p: 0\n")
    return ["pretrain", "--config", str(t / "c.yaml")], ["c.yaml", "augment.blurr_p"]


def case_missing_config_file(t):
    return ["pretrain", "--config", str(t / "nope.yaml")], ["--config", "nope.yaml", "does not exist"]


def case_unknown_method(t):
    return ["pretrain", "--method", "byol"], ["--method 'byol' is unknown", "sns"]


def case_unknown_preset(t):
    return ["pretrain", "--preset", "imagenet"], ["--preset 'imagenet' is unknown", "cifar10"]


def case_unknown_dataset(t):
    return ["pretrain", "--method", "vicreg", "--data", "svhn"], ["'svhn'", "cifar10"]


def case_unknown_flag(t):
    return ["pretrain", "--method", "vicreg", "--bogus"], ["--bogus", "sns pretrain --help"]


def case_missing_subcommand(t):
    return ["data"], ["sns data", "info"]


def case_unknown_config_key(t):
    return ["pretrain", "batchsize=64"], ["'batchsize'", "batch_size"]


def case_not_key_value(t):
    return ["pretrain", "lr"], ["'lr'", "key=value"]


def case_wrong_type(t):
    return ["pretrain", "lr=fast"], ["'lr'", "float", "fast"]


def case_syn_ratio_outside_0_1(t):
    return ["pretrain", "--method", "sns", "syn_ratio=1.5"], ["syn_ratio=1.5", "[0, 1]"]


def case_batch_too_small(t):
    return ["pretrain", "--method", "vicreg", "batch_size=2"], ["batch_size=2", "too small"]


def case_bad_resolution(t):
    return ["pretrain", "--method", "vicreg", "resolution=0"], ["resolution=0"]


def case_negative_lr(t):
    return ["pretrain", "--method", "vicreg", "lr=-0.1"], ["lr=-0.1", "positive"]


def case_tap_regex_matches_nothing(t):
    return ["pretrain", "--method", "sns", "--teacher", "tiny_teacher:make", "taps=nope.*"], [
        "'nope.*'",
        "matches no module",
        "synthesis.b4",
    ]


def case_generator_not_an_image(t):
    (t / "flat_generator.py").write_text(
        "import torch\n\n"
        "class Flat(torch.nn.Module):\n"
        "    z_dim = 8\n\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.body = torch.nn.Linear(8, 10)\n\n"
        "    def forward(self, z):\n"
        "        return self.body(z)\n\n"
        "def make():\n"
        "    return Flat()\n"
    )
    return ["pretrain", "--method", "sns", "--teacher", "flat_generator:make", "taps=body"], [
        "Flat returned shape (2, 10)",
        "(N, C, H, W)",
    ]


def case_teacher_weights_corrupt(t):
    (t / "g.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    return [
        "pretrain",
        "--method",
        "sns",
        "--teacher",
        "tiny_teacher:make",
        "--teacher-weights",
        str(t / "g.safetensors"),
    ], ["g.safetensors", "cannot read"]


def case_teacher_json_not_an_object(t):  # found by bench/fuzz.py: was an AttributeError traceback
    (t / "tdir").mkdir()
    (t / "tdir" / "teacher.json").write_text("[1]\n")
    return ["pretrain", "--method", "sns", "--teacher", str(t / "tdir")], ["teacher.json", "JSON list"]


def case_teacher_json_kwargs_of_another_network(t):
    (t / "tdir").mkdir()
    doc = {"format": "squeezespan-teacher/1", "G_kwargs": {"bogus": 1}, "D_kwargs": {}}
    (t / "tdir" / "teacher.json").write_text(json.dumps(doc))
    return ["pretrain", "--method", "sns", "--teacher", str(t / "tdir")], ["teacher.json", "do not build"]


def case_teacher_factory_raises(t):  # found by bench/fuzz.py
    return ["pretrain", "--method", "sns", "--teacher", "tiny_teacher:make_failing"], [
        "tiny_teacher:make_failing",
        "raised RuntimeError: this factory fails on two lines",
    ]


def case_eval_value_refused_before_features(t):  # was refused only after feature extraction, --out touched
    return ["eval", "--data", "digits", "--backbone", "raw", "linear_epochs=-1"], ["linear_epochs=-1", ">= 1"]


def case_eval_seed_out_of_range(t):
    return ["eval", "--data", "digits", "--backbone", "raw", "seed=99999999999999999999"], ["seed=", "2**32"]


def case_teacher_spec_unknown_kind(t):
    (t / "teacher.txt").write_text("a teacher?\n")
    return ["pretrain", "--method", "sns", "--teacher", str(t / "teacher.txt")], [
        "teacher.txt",
        "stylegan2-pkl:PATH",
        "module.path:factory",
    ]


def case_stylegan2_pkl_not_a_pickle(t):
    (t / "G.pkl").write_text("<html>404 not found</html>\n")
    return ["pretrain", "--method", "sns", "--teacher", f"stylegan2-pkl:{t / 'G.pkl'}"], [
        "G.pkl",
        "not a binary pickle",
    ]


def case_backbone_of_another_architecture(t):
    st = _export(t / "bb" / "backbone")
    meta = json.loads(st.with_suffix(".json").read_text())
    meta["width"] = 0.25  # the weights are width 0.125
    st.with_suffix(".json").write_text(json.dumps(meta))
    return ["eval", "--data", "digits", "--backbone", str(st), "resolution=16"], [
        "backbone.safetensors",
        "does not fit",
        "another architecture",
    ]


def case_backbone_foreign_safetensors(t):
    save_file(torch.nn.Linear(4, 2).state_dict(), str(t / "G_ema.safetensors"))
    return ["eval", "--data", "digits", "--backbone", str(t / "G_ema.safetensors"), "resolution=16"], [
        "G_ema",
        "no squeezespan metadata",
    ]


def case_backbone_corrupt_safetensors(t):
    st = _export(t / "bb" / "backbone")
    st.write_bytes(st.read_bytes()[:200])
    return ["eval", "--data", "digits", "--backbone", str(st), "resolution=16"], [
        "backbone.safetensors",
        "not a readable safetensors file",
    ]


def case_out_is_a_file(t):
    (t / "out.txt").write_text("not a directory\n")
    return ["pretrain", "--method", "vicreg", "--out", str(t / "out.txt")], ["--out", "out.txt", "not a directory"]


def case_out_blocked_by_a_file(t):
    (t / "blocker").write_text("a file where a folder should be\n")
    return ["pretrain", "--method", "vicreg", "--out", str(t / "blocker" / "run")], ["--out", "blocker", "not writable"]


def case_out_not_empty(t):
    return ["pretrain", "--method", "vicreg", "--out", "{out}"], ["--out", "is not empty", "--resume", "--force"]


def case_resume_empty_dir(t):
    (t / "empty").mkdir()
    return ["pretrain", "--method", "vicreg", "--out", str(t / "empty"), "--resume"], [
        "--resume",
        "empty",
        "no run to resume",
    ]


def case_resume_truncated_checkpoint(t):
    _run_with_truncated_checkpoint(t / "run")
    return ["pretrain", "--out", str(t / "run"), "--resume"], ["--resume", "checkpoints", "no usable checkpoint"]


def case_cuda_on_cpu_machine(t):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    return ["pretrain", "--method", "vicreg", "--device", "cuda"], ["--device cuda", "no CUDA GPU"]


def case_eval_missing_backbone(t):
    return ["eval", "--data", "digits", "--backbone", str(t / "gone.safetensors")], ["gone"]


def case_train_gan_bad_resolution(t):
    return ["train-gan", "--data", "digits", "resolution=12"], ["resolution=12", "power of two"]


def case_data_info_resolution_zero(t):
    return ["data", "info", "digits", "--resolution", "0"], ["resolution=0"]


def case_unknown_split(t):
    return ["data", "info", "digits", "--split", "val"], ["'val'", "train, test"]


def case_bad_choice(t):
    return ["eval", "--protocol", "linear"], ["--protocol", "'linear'", "sns eval --help"]


def case_flag_of_another_command(t):
    return ["data", "info", "digits", "--json", "--force"], ["--force", "sns data info --help"]


def case_missing_required_out(t):
    return ["eval", "--data", "digits", "{no-out}"], ["--out", "required", "sns eval --help"]


def case_teacher_channels_mismatch(t):
    _pngs(t / "imgs", n=4)
    return [
        "pretrain",
        "--method",
        "sns",
        "--teacher",
        "tiny_teacher:make",
        "--data",
        "folder",
        "--root",
        str(t / "imgs"),
    ], ["--teacher", "1-channel", "3 channels"]


def case_backbone_channels_mismatch(t):
    st = _export(t / "bb" / "backbone")  # a 1-channel (grey) backbone
    _pngs(t / "imgs", n=4)
    return ["eval", "--data", "folder", "--root", str(t / "imgs"), "--backbone", str(st)], [
        "--backbone",
        "1-channel",
        "3",
    ]


# Bad numbers that still end in a traceback or are silently accepted (see XFAIL); strict, so once they are
# checked the XPASS fails and the mark must go.
def case_real_branch_batch_of_one(t):
    return ["pretrain", "--method", "sns", "--teacher", "tiny_teacher:make", "batch_size=4", "syn_ratio=0.75"], [
        "batch_size=4",
        "syn_ratio=0.75",
    ]


def case_no_real_images_but_syn_ratio_below_1(t):
    return ["pretrain", "--method", "sns", "--teacher", "tiny_teacher:make", "batch_size=4", "syn_ratio=0.9"], [
        "batch_size=4",
        "syn_ratio=0.9",
    ]


def case_log_every_zero(t):
    return ["pretrain", "--method", "vicreg", "log_every=0"], ["log_every=0"]


def case_negative_momentum(t):
    return ["pretrain", "--method", "vicreg", "momentum=-1"], ["momentum=-1"]


def case_negative_grad_clip(t):
    return ["pretrain", "--method", "vicreg", "grad_clip=-1"], ["grad_clip=-1"]


def case_train_gan_negative_lr(t):
    return ["train-gan", "--data", "digits", "resolution=8", "lr=-1"], ["lr=-1"]


XFAIL = {}
CASES = {name[len("case_") :]: fn for name, fn in dict(globals()).items() if name.startswith("case_")}
PARAMS = [
    pytest.param(name, id=name, marks=[pytest.mark.xfail(strict=True, reason=XFAIL[name])] if name in XFAIL else [])
    for name in CASES
]


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def _runnable(argv: list[str], out: Path) -> list[str]:
    """argv with the sentinel run directory as --out (plus --force), --no-progress and the tiny settings.

    Overrides go last and the case's own after the tiny ones, so the case's value wins.
    """
    if argv[0] not in SMALL:
        return argv
    argv = [str(out) if a == "{out}" else a for a in argv]
    if "{no-out}" in argv:
        argv.remove("{no-out}")
    elif "--out" not in argv:
        argv += ["--out", str(out), "--force"]  # the earlier run may be replaced only once the input is valid
    if "--device" not in argv:
        argv += ["--device", "cpu"]
    overrides = [a for a in argv[1:] if "=" in a and not a.startswith("-")]
    flags = [a for a in argv if a not in overrides]
    if "--resume" in flags and not overrides:
        return flags + ["--no-progress"]  # a bare --resume reads the run's own config
    return flags + ["--no-progress"] + SMALL[argv[0]] + overrides


def _run(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as e:  # argparse exits by itself
        code = e.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", PARAMS)
def test_bad_input(case, tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS_DIR))  # tiny_teacher:make
    monkeypatch.syspath_prepend(str(tmp_path))  # factories a case writes
    monkeypatch.delenv("SNS_DEBUG", raising=False)
    out = tmp_path / "out"
    out.mkdir()
    for name, data in OLD_RUN.items():
        (out / name).write_bytes(data)
    argv, fragments = CASES[case](tmp_path)
    argv = _runnable(argv, out)
    before = _snapshot(tmp_path)

    code, err = _run(argv, capsys)

    assert code not in (0, None), f"exit code {code}; stderr: {err}"
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    after = _snapshot(tmp_path)
    changed = sorted(p for p in before if after.get(p) != before[p])
    created = sorted(set(after) - set(before))
    assert not changed and not created, f"changed {changed}, created {created}"
    assert not (tmp_path / "pwned").exists()


def test_the_table_is_big_enough():
    assert len(set(CASES) - set(XFAIL)) >= 24


def test_constant_channel_trains(tmp_path, capsys):
    """Images whose green and blue channels never change are valid data: normalisation must stay finite."""
    _pngs(tmp_path / "imgs", n=8)
    code, err = _run(
        [
            "pretrain",
            "--method",
            "vicreg",
            "--data",
            "folder",
            "--root",
            str(tmp_path / "imgs"),
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
        ]
        + SMALL["pretrain"]
        + ["batch_size=8"],
        capsys,
    )
    assert code == 0, err


def test_overrides_after_flags_are_read(tmp_path, capsys):
    """`--out run steps=abc` after other flags: the override is read (and refused by name), not 'unrecognized'."""
    code, err = _run(["pretrain", "lr=0.05", "--out", str(tmp_path / "o"), "steps=abc", "--no-progress"], capsys)
    assert code == 2 and err.startswith("error: config key 'steps' must be int"), err


def _sns(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SNS_DEBUG"}
    return subprocess.run(
        [sys.executable, "-m", "squeezespan", *argv], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["pretrain", "--method", "byol", "--out", "run"], "--method 'byol' is unknown"),
        (["pretrain", "--bogus", "--out", "run"], "--bogus"),
    ],
    ids=["unknown-method", "unknown-flag"],
)
def test_subprocess_exit_code_and_no_traceback(tmp_path, argv, fragment):
    done = _sns(*argv, cwd=tmp_path)
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1 and fragment in done.stderr
    run = tmp_path / "run"
    assert not run.exists() or not any(run.iterdir())  # at most an empty run directory is left


def _palette_image(grey: int) -> Image.Image:
    img = Image.new("P", (8, 8), 1)
    img.putpalette([0, 0, 0, grey, grey, grey] + [0, 0, 0] * 254)
    return img


@pytest.mark.parametrize(
    "mode, make",
    [
        ("I;16", lambda: Image.fromarray(np.full((8, 8), 40000, np.uint16))),
        ("P", lambda: _palette_image(155)),
        ("CMYK", lambda: Image.new("CMYK", (8, 8), (100, 100, 100, 0))),
        ("LA", lambda: Image.new("LA", (8, 8), (155, 255))),
        ("1", lambda: Image.new("1", (8, 8), 1)),
    ],
    ids=["16-bit-grey", "palette", "cmyk", "grey-alpha", "1-bit"],
)
def test_image_modes_that_convert(tmp_path, mode, make):
    """Every integer image mode decodes to the 8-bit picture it shows; 16 bits scale down instead of clipping."""
    img = make()
    assert img.mode == mode
    path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    img.save(path)
    expected = {"I;16": round(40000 / 257), "P": 155, "CMYK": 155, "LA": 155, "1": 255}[mode]
    for channels in (1, 3):
        x = decode_image(path, 4, channels)
        assert x.shape == (channels, 4, 4) and x.dtype == torch.uint8
        assert int(x.min()) == int(x.max()) and abs(int(x[0, 0, 0]) - expected) <= 1, (channels, x[0, 0, 0])
