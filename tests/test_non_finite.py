"""Wrong numbers are errors, not results: NaN/Inf weights are never exported nor loaded, NaN features never reach
a probe, and a teacher that makes NaN images is named as the cause, each in one line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from squeezespan import Teacher, export_backbone, load_backbone
from squeezespan.cli import main
from squeezespan.errors import SnsError
from squeezespan.eval.features import extract_features
from squeezespan.models import build_student

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny_teacher  # noqa: E402

META = {"mean": [0.5], "std": [0.25], "resolution": 16, "method": "test", "dataset": "digits"}


def _student():
    torch.manual_seed(0)
    return build_student("resnet18", "cifar", 0.125, 1)


def test_export_refuses_non_finite_weights_and_writes_nothing(tmp_path):
    s = _student()
    with torch.no_grad():
        s.conv1.weight[0, 0, 0, 0] = float("inf")
    with pytest.raises(SnsError, match=r"weight conv1.weight holds NaN or infinite values") as e:
        export_backbone(s, tmp_path / "backbone", META)
    assert "\n" not in str(e.value) and not list(tmp_path.iterdir())


def test_a_damaged_export_is_refused_by_load_and_by_sns_eval(tmp_path, capsys):
    st, _ = export_backbone(_student(), tmp_path / "run" / "backbone", META)
    tensors = load_file(str(st))
    tensors["layer1.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    save_file(tensors, str(st))
    with pytest.raises(SnsError, match="layer1.0.conv1.weight holds NaN"):
        load_backbone(st)
    out = tmp_path / "ev"
    assert main(["eval", "--data", "digits", "--backbone", str(tmp_path / "run"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "holds NaN or infinite values" in err and not out.exists()


def test_non_finite_features_never_reach_a_probe():
    class Overflow(torch.nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :4] * float("inf")

    images = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    ds = torch.utils.data.TensorDataset(images, torch.zeros(5, dtype=torch.long))
    with pytest.raises(SnsError, match=r"features are NaN or infinite on images 0-4"):
        extract_features(Overflow(), ds, normalize=False, device="cpu")


def test_a_teacher_making_nan_images_is_named_as_the_cause(tmp_path, capsys, monkeypatch):
    teacher = Teacher(tiny_teacher.make_nan())
    with pytest.raises(SnsError, match="produced NaN or infinite images"):
        teacher.sample(2, seed=0)
    monkeypatch.syspath_prepend(str(Path(tiny_teacher.__file__).parent))
    argv = ["pretrain", "--method", "squeeze", "--data", "digits", "--teacher", "tiny_teacher:make_nan"]
    tiny = ["resolution=16", "width=0.125", "batch_size=8", "steps=2", "proj_hidden=16", "proj_dim=16"]
    tiny += ["squeeze_hidden=16", "knn_every=0", "final_eval=false", "--no-progress", "--device", "cpu"]
    assert main(argv + ["--out", str(tmp_path / "r")] + tiny) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "teacher" in err and "NaN" in err and "last good checkpoint" not in err
