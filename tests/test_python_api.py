"""The Python-first API: docs/python-api.md's examples run as written (a smaller budget), Squeeze and Span trains in
a user's own loop, and ``pretrain`` takes a user's own Dataset (recorded, resumable, refused when it changed)."""

from __future__ import annotations

import ast
import importlib
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

import squeezespan as sns
from squeezespan.cli import main

PAGE = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"

# The page's budgets, made tiny: each text must occur exactly once, so an edit of the page cannot skip them silently.
SMALLER = {
    "steps, history = 300, []": "steps, history = 3, []",
    "total=200": "total=2",
    "ckpt_every=50": "ckpt_every=1",
}
# appended to the page's resolve_config calls (its own override mechanism; later keys win)
TINY = {
    "gan": ["kimg=0.032", "fd_ref_kimg=null", "sample_kimg=null", "channel_max=16", "ckpt_every=0", "precision=fp32"],
    "pretrain": ["steps=2", "batch_size=16", "knn_every=0", "ckpt_every=0", "precision=fp32", "loggers=[jsonl]"]
    + ["width=0.125", "proj_hidden=32", "proj_dim=32", "squeeze_hidden=32"],
}


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", PAGE.read_text(), flags=re.S | re.M)


def test_every_public_name_loads_on_first_use_from_a_light_package():
    # `import squeezespan` imports no torch (the sns entry point relies on it); each name of __all__ then loads
    code = "import sys, squeezespan; print('torch' in sys.modules, 'squeezespan.cli' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["False", "False"], done.stderr
    assert set(sns._EXPORTS) == set(sns.__all__) - {"__version__"}
    for name in sns.__all__:
        assert getattr(sns, name) is not None and name in dir(sns)
    assert sns.Teacher is importlib.import_module("squeezespan.teachers").Teacher
    with pytest.raises(AttributeError, match="module 'squeezespan' has no attribute 'nope'"):
        sns.nope  # noqa: B018


def test_the_type_checking_imports_name_the_same_modules_as_the_lazy_table():
    # type checkers and IDEs read the TYPE_CHECKING imports, the package reads _EXPORTS: the two must agree
    tree = ast.parse(Path(sns.__file__).read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING")
    imported = {a.asname or a.name: "." * n.level + (n.module or "") for n in block.body for a in n.names}
    assert imported == sns._EXPORTS


def test_the_python_face_is_importable_from_the_package():
    for name in ("SqueezeAndSpan", "VICReg", "SimSiam", "Teacher", "Augment", "StepInputs", "fit", "begin", "World"):
        assert name in sns.__all__
    for name in ("vicreg", "squeeze", "invariance", "variance", "covariance", "negative_cosine", "as_image_dataset"):
        assert name in sns.__all__ and getattr(sns, name) is not None
    assert sns.losses.vicreg is sns.vicreg and sns.GAN_DEFAULTS["kimg"] > 0
    listed = (PAGE.parent / "api.md").read_text()  # the table of public names
    missing = [n for n in sns.__all__ if not re.search(rf"[`, ]{re.escape(n)}[`(,.]", listed)]
    assert not missing, f"docs/api.md does not list {missing}"
    z = torch.randn(64, 8)
    loss, terms = sns.vicreg(z, z)
    assert float(terms["inv"]) == 0.0 and float(loss) == pytest.approx(
        25 * 2 * float(sns.variance(z)) + 2 * float(sns.covariance(z))
    )


def test_python_api_page_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = PAGE.read_text()
    blocks = python_blocks()
    assert len(blocks) == 5, "a new example on docs/python-api.md: run it here"
    code = "\n".join(blocks)
    for old, new in SMALLER.items():
        assert text.count(old) == 1, f"docs/python-api.md lost or repeated {old!r}"
        code = code.replace(old, new)
    resolve = sns.resolve_config

    def tiny_resolve(defaults, kind, *args, overrides=(), **kw):
        return resolve(defaults, kind, *args, overrides=[*overrides, *TINY[kind], "device=cpu"], **kw)

    monkeypatch.setattr(sns, "resolve_config", tiny_resolve)
    scope: dict = {"__name__": "python_api_page"}
    exec(compile(code, str(PAGE), "exec"), scope)

    # your own loop: steps ran with finite losses, and the backbone gives 512-d features
    assert len(scope["history"]) == 3 and all(math.isfinite(v) for v in scope["history"])
    assert tuple(scope["features"].shape) == (8, 512)
    # pretrain on the page's own Dataset: recorded as such, evaluated on its test split, exported
    run = tmp_path / "runs/sns-mydigits"
    recorded = yaml.safe_load((run / "config.yaml").read_text())["data"]
    assert re.fullmatch(r"custom:Digits@[0-9a-f]{16}", recorded)
    assert json.loads((run / "backbone.json").read_text())["dataset"] == recorded
    summary = scope["summary"]
    assert summary["resumed_at"] == 2 and summary["knn"]["bank"] == len(scope["Digits"]())
    assert scope["encoder"](torch.rand(2, 1, 32, 32)).shape == (2, 512 // 8)
    # sns.fit around the page's objective: both steps, a checkpoint per step
    assert scope["result"].step == 2 and (tmp_path / "runs/my-loop/checkpoints/ckpt-00000002.pt").is_file()

    # the objective really trains the user's model: on one fixed batch (no augmentation) the loss goes down
    student, objective = scope["student"], scope["objective"]
    real = scope["Digits"]().images[:16]
    syn, taps = scope["teacher"].sample(16, seed=0)
    inputs = sns.StepInputs(real=real, syn=syn, taps=taps, encode=scope["encode"])  # augment: identity
    opt = torch.optim.SGD([*student.parameters(), *objective.parameters()], lr=0.05, momentum=0.9)
    student.train()
    losses = []
    for _ in range(6):
        loss, logs = objective(inputs)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.99 * losses[0], losses
    assert {"loss_syn", "loss_real", "syn_inv", "real_var"} <= set(logs)


class Squares(torch.utils.data.Dataset):
    """A user's dataset: random grey 16 px images, float in [0, 1], four classes."""

    def __init__(self, n: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.x, self.y = torch.rand(n, 1, 16, 16, generator=g), torch.arange(n) % 4

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def _cfg(*extra: str) -> dict:
    over = ["teacher=tiny_teacher:make", "steps=3", "batch_size=8", "resolution=16", "ckpt_every=1", "device=cpu"]
    over += ["precision=fp32", "knn_k=5", "loggers=[jsonl]", "width=0.125", "proj_hidden=16", "proj_dim=16"]
    return sns.resolve_config(
        sns.PRETRAIN_DEFAULTS, "pretrain", preset="digits", overrides=over + ["squeeze_hidden=16", *extra]
    )


def test_pretrain_on_a_users_dataset_resumes_with_the_same_data_only(tmp_path, capsys):
    cfg, run = _cfg(), tmp_path / "run"
    kw = dict(progress=False, log=lambda m: None)
    first = sns.pretrain(cfg, run, dataset=Squares(32), test_dataset=Squares(16, seed=1), stop_after=1, **kw)
    assert first["interrupted"] and first["step"] == 1
    recorded = yaml.safe_load((run / "config.yaml").read_text())
    assert recorded["data"].startswith("custom:Squares@") and recorded["final_eval"] is True

    with pytest.raises(sns.SnsError, match=r"data="):  # other images: every checkpoint is skipped by name
        sns.pretrain(cfg, run, resume=True, dataset=Squares(32, seed=5), test_dataset=Squares(16, seed=1), **kw)
    # the CLI has no dataset object to load: one line saying so, exit 2
    assert main(["pretrain", "--resume", "--out", str(run), "--no-progress"]) == 2
    assert "passed from Python" in capsys.readouterr().err

    done = sns.pretrain(cfg, run, resume=True, dataset=Squares(32), test_dataset=Squares(16, seed=1), **kw)
    assert done["resumed_at"] == 1 and done["steps"] == 3
    assert done["knn"]["bank"] == 32 and 0.0 <= done["knn"]["top1"] <= 100.0
    meta = sns.read_meta(run / "backbone.safetensors")
    ref = sns.as_image_dataset(Squares(32), 16)
    assert meta["mean"] == pytest.approx(list(ref.mean)) and meta["dataset"] == recorded["data"]


def test_pretrain_without_a_test_dataset_turns_the_monitor_off(tmp_path):
    said = []
    summary = sns.pretrain(
        _cfg("steps=1", "knn_every=1"), tmp_path / "r", dataset=Squares(16), progress=False, log=said.append
    )
    assert "knn" not in summary and any("final_eval=false" in m for m in said)
    recorded = yaml.safe_load((tmp_path / "r/config.yaml").read_text())
    assert recorded["knn_every"] == 0 and recorded["final_eval"] is False


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(test_dataset=Squares(4)), "test_dataset= goes with dataset="),
        (dict(dataset=Squares(16), cfg=("test_split=train",)), "test_split=train"),
        (
            dict(dataset=[(torch.rand(1, 16, 16) * 2, 0)] * 16),
            r"dataset\[0\]: float image with values outside \[0, 1\]",
        ),
        (dict(dataset=Squares(16), test_dataset=[(torch.rand(1, 16, 16), None)] * 4), "every image needs a label"),
        (dict(dataset=[(torch.rand(1, 16, 16), None)] * 16, test_dataset=Squares(4)), "no labelled images"),
    ],
)
def test_bad_datasets_are_one_line_errors_before_the_run_directory(tmp_path, kw, match):
    cfg = _cfg(*kw.pop("cfg", ()))
    with pytest.raises(sns.SnsError, match=match):
        sns.pretrain(cfg, tmp_path / "run", progress=False, log=lambda m: None, **kw)
    assert not (tmp_path / "run").exists()


def test_as_image_dataset_reads_what_users_have(tmp_path):
    grey = [(Image.fromarray((torch.arange(64).view(8, 8) * 4).byte().numpy()), 1)] * 3
    ds = sns.as_image_dataset(grey, 16)
    assert ds.images.shape == (3, 1, 16, 16) and ds.images.dtype == torch.uint8 and ds.labels.tolist() == [1, 1, 1]
    assert ds.classes == ["0", "1"] and ds.name == "list"
    rgb = sns.as_image_dataset([torch.full((3, 8, 8), 255, dtype=torch.uint8)] * 2, 8)  # images alone: unlabelled
    assert rgb.channels == 3 and rgb.labels.tolist() == [-1, -1] and rgb.mean == pytest.approx((1.0, 1.0, 1.0))
    test = sns.as_image_dataset(Squares(4), 8, channels=3, mean=(0.5,) * 3, std=(0.2,) * 3, split="test")
    assert test.images.shape == (4, 3, 8, 8) and test.mean == (0.5,) * 3 and test.split == "test"
    assert (
        sns.as_image_dataset(Squares(4), 16).images[0].float().div(255).sub(Squares(4)[0][0]).abs().max() <= 0.5 / 255
    )
    digits = sns.load_dataset("digits", split="test")
    assert sns.as_image_dataset(digits, 32) is digits  # already an ImageDataset at that size
    from squeezespan.data import dataset_fingerprint

    assert dataset_fingerprint(sns.as_image_dataset(Squares(8), 16)) == dataset_fingerprint(
        sns.as_image_dataset(Squares(8), 16)
    )
    assert dataset_fingerprint(sns.as_image_dataset(Squares(8), 16)) != dataset_fingerprint(
        sns.as_image_dataset(Squares(8, 1), 16)
    )
    for bad, match in [
        ([torch.rand(1, 8, 6)], "images must be square"),
        ([torch.rand(1, 8, 8), torch.rand(1, 4, 4)], r"dataset\[1\]: image of shape \(1, 4, 4\)"),
        ([torch.rand(8, 8, 3)], "channels last"),
        ([(torch.rand(1, 8, 8), 1.5)], "expected an integer class index"),
        ([torch.zeros(1, 8, 8, dtype=torch.int32)], "dtype torch.int32"),
        ([], "is empty"),
        (iter([torch.rand(1, 8, 8)]), "map-style"),
    ]:
        with pytest.raises(sns.SnsError, match=match):
            sns.as_image_dataset(bad, 8)
    (tmp_path / "a").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "a" / "x.png")
    with pytest.raises(sns.SnsError, match="data=folder"):
        sns.as_image_dataset(sns.load_dataset("folder", root=tmp_path), 8)
