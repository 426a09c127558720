"""Exported backbones: safetensors + JSON round trip, no pickle, torchvision loading, clear errors."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from squeezespan.errors import SnsError
from squeezespan.export import (
    export_backbone,
    load_backbone,
    read_meta,
    torchvision_resnet,
)
from squeezespan.models import build_student

MEAN, STD = [0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]
META = {"mean": MEAN, "std": STD, "resolution": 32, "method": "sns", "dataset": "cifar10"}


def _trained_looking(student: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN statistics, so a loader that dropped buffers would give different features."""
    g = torch.Generator().manual_seed(seed)
    for m in student.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.num_batches_tracked.fill_(7)
    return student.eval()


def _expected(student: nn.Module, x01: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    with torch.no_grad():
        return student((x01 - m) / s)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return _trained_looking(build_student("resnet18", "cifar", width=0.25, in_channels=3))


@pytest.fixture
def exported(tiny, tmp_path):
    export_backbone(tiny, tmp_path / "bb", {**META, "epoch": 12, "knn_top1": 0.5})
    return tmp_path


@pytest.mark.parametrize("name", ["bb", "bb.safetensors", "bb.json", ""])
def test_round_trip_gives_the_same_features(tiny, exported, name):
    bb = load_backbone(exported / name)
    assert not bb.training
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        out = bb(x)
    assert out.shape == (3, tiny.feature_dim) == (3, bb.feature_dim)
    torch.testing.assert_close(out, _expected(tiny, x, MEAN, STD), rtol=0, atol=1e-6)


def test_metadata_says_what_the_backbone_expects(tiny, exported):
    meta = json.loads((exported / "bb.json").read_text())
    for key, value in {
        "arch": "resnet18",
        "variant": "cifar",
        "width": 0.25,
        "in_channels": 3,
        "feature_dim": 128,
        "resolution": 32,
        "method": "sns",
        "dataset": "cifar10",
        "epoch": 12,
        "knn_top1": 0.5,
    }.items():
        assert meta[key] == value, key
    assert meta["mean"] == pytest.approx(MEAN) and meta["std"] == pytest.approx(STD)
    assert meta["squeezespan_version"] and "torchvision" in meta["torchvision_compat"]
    assert load_backbone(exported / "bb").meta["epoch"] == 12


def test_export_holds_only_safetensors_and_json(exported):
    assert sorted(p.name for p in exported.iterdir()) == ["bb.json", "bb.safetensors"]
    raw = (exported / "bb.safetensors").read_bytes()
    assert not raw.startswith(b"\x80") and not raw.startswith(b"PK")  # pickle protocol / torch zip
    # safetensors layout: u64 header length, a JSON header, then raw tensor bytes and nothing else.
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"]
    assert 8 + n + max(ends) == len(raw)
    assert json.loads(header["__metadata__"]["squeezespan"])["arch"] == "resnet18"
    assert "num_batches_tracked" in " ".join(header)  # torchvision's strict load needs the BN counters


def test_safetensors_alone_still_loads_from_embedded_metadata(tiny, exported):
    (exported / "bb.json").unlink()
    assert read_meta(exported / "bb.safetensors")["feature_dim"] == 128
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(load_backbone(exported / "bb")(x), _expected(tiny, x, MEAN, STD))


def test_grey_student_and_wrapped_student(tmp_path):
    student = _trained_looking(build_student("resnet34", "imagenet", width=0.125, in_channels=1))
    # Like DDP, the wrapper keeps the student in .module; the export must not carry a "module." prefix.
    wrapper = nn.Module()
    wrapper.module = student
    export_backbone(wrapper, tmp_path / "grey.safetensors", {**META, "mean": [0.5], "std": [0.25]})
    bb = load_backbone(tmp_path / "grey")
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(bb(x), _expected(student, x, [0.5], [0.25]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("variant,in_channels,size", [("cifar", 3, 8), ("imagenet", 1, 32)])
def test_torchvision_resnet_gives_our_features(tmp_path, variant, in_channels, size):
    torch.manual_seed(1)
    student = _trained_looking(build_student("resnet18", variant, in_channels=in_channels))
    mean, std = [0.5] * in_channels, [0.25] * in_channels
    export_backbone(student, tmp_path / "bb", {**META, "mean": mean, "std": std})
    tv = torchvision_resnet(tmp_path / "bb")
    assert type(tv).__module__ == "torchvision.models.resnet" and not tv.training
    x = torch.rand(2, in_channels, size, size)
    m, s = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(tv((x - m) / s), load_backbone(tmp_path / "bb")(x))


def test_torchvision_resnet_refuses_width_multiplier(exported):
    with pytest.raises(SnsError, match="width 0.25"):
        torchvision_resnet(exported / "bb")


def test_call_with_wrong_channels_or_dtype_says_what_was_expected(exported):
    bb = load_backbone(exported / "bb")
    with pytest.raises(SnsError, match=r"\(N, 3, H, W\), got \(2, 1, 8, 8\)"):
        bb(torch.rand(2, 1, 8, 8))
    with pytest.raises(SnsError, match=r"got \(3, 8, 8\)"):
        bb(torch.rand(3, 8, 8))
    with pytest.raises(SnsError, match="float images"):
        bb(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))


def test_missing_files_are_named(exported, tmp_path):
    with pytest.raises(SnsError, match="no exported backbone"):
        load_backbone(tmp_path / "nothing")
    (exported / "bb.safetensors").unlink()
    with pytest.raises(SnsError, match=r"bb\.safetensors is missing"):
        load_backbone(exported / "bb.json")


def test_safetensors_without_metadata_and_without_json(tmp_path):
    save_file({"conv1.weight": torch.zeros(1)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(SnsError, match=r"foreign\.json is missing"):
        load_backbone(tmp_path / "foreign.safetensors")


@pytest.mark.parametrize("key,value", [("arch", "resnet34"), ("width", 0.5), ("in_channels", 1)])
def test_checkpoint_of_another_architecture(exported, key, value):
    path = exported / "bb.json"
    meta = json.loads(path.read_text())
    meta[key] = value
    path.write_text(json.dumps(meta))
    with pytest.raises(SnsError, match="another architecture"):
        load_backbone(exported / "bb")


def test_corrupt_or_foreign_files(exported):
    (exported / "bb.safetensors").write_bytes(b"\x80\x04not a safetensors file")
    with pytest.raises(SnsError, match="not a readable safetensors file"):
        load_backbone(exported / "bb")
    (exported / "bb.json").write_text('{"hello": 1}')
    with pytest.raises(SnsError, match="not a squeezespan backbone export"):
        load_backbone(exported / "bb")
    (exported / "bb.json").write_text("{oops")
    with pytest.raises(SnsError, match="not valid JSON"):
        load_backbone(exported / "bb")


def test_bad_export_meta(tiny, tmp_path):
    with pytest.raises(SnsError, match="lacks 'std'"):
        export_backbone(tiny, tmp_path / "a", {"mean": MEAN})
    with pytest.raises(SnsError, match="mean has 2 values but the student takes 3"):
        export_backbone(tiny, tmp_path / "a", {**META, "mean": [0.5, 0.5]})
    with pytest.raises(SnsError, match="arch='resnet50'"):
        export_backbone(tiny, tmp_path / "a", {**META, "arch": "resnet50"})
    with pytest.raises(SnsError, match="not JSON-serialisable"):
        export_backbone(tiny, tmp_path / "a", {**META, "optimizer": object()})
    with pytest.raises(SnsError, match="squeezespan student"):
        export_backbone(nn.Linear(2, 2), tmp_path / "a", META)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


_EXPORT_SCRIPT = """
import torch
from squeezespan.export import export_backbone
from squeezespan.models import build_student
torch.manual_seed(0)
student = build_student("resnet18", "cifar", width=0.125, in_channels=1)
meta = {"mean": [0.5], "std": [0.25], "resolution": 32, "method": "sns", "dataset": "digits", "extra": {"b": 1, "a": 2}}
export_backbone(student, OUT + "/backbone.safetensors", meta)
"""


def test_export_is_byte_reproducible_across_processes(tmp_path):
    """safetensors writes its metadata from a hash map (another order per process and per call): the
    exported files must still be the same bytes in a separate process and in this one."""
    import subprocess
    import sys

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", f"OUT = {str(a)!r}" + _EXPORT_SCRIPT], stderr=subprocess.PIPE)
    exec(_EXPORT_SCRIPT, {"OUT": str(b)})  # meanwhile the same export in this process
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    for name in ("backbone.safetensors", "backbone.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert load_backbone(a / "backbone.safetensors").meta["extra"] == {"b": 1, "a": 2}


def test_safetensors_header_is_canonical():
    from safetensors.torch import load

    from squeezespan.files import safetensors_bytes

    tensors = {"w": torch.arange(5.0), "B": torch.ones(2, 3, dtype=torch.int64)}
    many = {f"k{i}": str(i) for i in range(20)}
    outs = {safetensors_bytes(tensors, many) for _ in range(5)}
    assert len(outs) == 1
    raw = outs.pop()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0 and list(json.loads(raw[8 : 8 + n])) == ["__metadata__", "B", "w"]
    back = load(raw)
    assert torch.equal(back["w"], tensors["w"]) and torch.equal(back["B"], tensors["B"])
