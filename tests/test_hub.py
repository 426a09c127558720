"""Hub-format export: timm's local-dir loader, torch.hub (hubconf.py) and load_backbone give the run's outputs."""

import json
from pathlib import Path

import pytest
import tiny
import torch
import yaml

import squeezespan
from squeezespan.cli import main
from squeezespan.export import export_backbone, load_backbone
from squeezespan.models import build_student
from squeezespan.pretraining import PRETRAIN_DEFAULTS

timm = pytest.importorskip("timm")

REPO = Path(__file__).resolve().parents[1]
TINY = [*tiny.overrides(), "-q", "--device", "cpu"]


def _fake_run(run: Path, arch="resnet18", variant="imagenet", channels=3, resolution=32) -> Path:
    """A run directory as `sns pretrain` leaves it (config.yaml, summary.json, backbone export), at width 1."""
    torch.manual_seed(0)
    student = build_student(arch, variant, 1.0, channels)
    with torch.no_grad():  # non-trivial BatchNorm statistics: eval-mode outputs depend on every buffer
        for name, t in student.state_dict().items():
            if t.is_floating_point():
                t.add_(torch.rand_like(t) * 0.1 if "running_var" in name else torch.randn_like(t) * 0.05)
    meta = dict(mean=[0.5] * channels, std=[0.25] * channels, resolution=resolution, method="sns", dataset="digits")
    export_backbone(student, run / "backbone.safetensors", meta)
    cfg = dict(PRETRAIN_DEFAULTS, arch=arch, variant=variant, resolution=resolution, teacher="runs/t", steps=300)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (run / "summary.json").write_text(json.dumps({"knn": {"top1": 91.25, "top5": 99.5}}))
    return run


def _hub_load(folder: Path, arch: str = "resnet18"):
    return torch.hub.load(str(REPO), f"squeezespan_{arch}", weights=str(folder), source="local")


def test_hub_export_loads_in_timm_torch_hub_and_load_backbone(tmp_path, capsys):
    run = _fake_run(tmp_path / "run")
    hub = tmp_path / "hub"
    assert main(["export", str(run), "--format", "hub", "--out", str(hub)]) == 0
    assert sorted(p.name for p in hub.iterdir()) == ["README.md", "config.json", "model.safetensors"]

    config = json.loads((hub / "config.json").read_text())
    assert config["architecture"] == "resnet18" and config["num_features"] == 512 and config["num_classes"] == 0
    pcfg = config["pretrained_cfg"]
    assert pcfg["mean"] == [0.5] * 3 and pcfg["std"] == [0.25] * 3 and pcfg["input_size"] == [3, 32, 32]
    assert pcfg["interpolation"] == "bilinear" and pcfg["num_classes"] == 0
    assert config["squeezespan"]["timm_compatible"] is True

    reference = load_backbone(run)
    x = torch.rand(3, 3, 32, 32)
    model = timm.create_model(f"local-dir:{hub}", pretrained=True).eval()
    data_cfg = timm.data.resolve_data_config({}, model=model)
    assert tuple(data_cfg["mean"]) == (0.5,) * 3 and tuple(data_cfg["input_size"]) == (3, 32, 32)
    mean, std = torch.tensor(data_cfg["mean"]).view(1, 3, 1, 1), torch.tensor(data_cfg["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        want = reference(x)
        assert want.shape == (3, 512)
        torch.testing.assert_close(model((x - mean) / std), want, atol=1e-6, rtol=0)
        torch.testing.assert_close(squeezespan.load_backbone(hub)(x), want, atol=1e-6, rtol=0)
        torch.testing.assert_close(_hub_load(hub)(x), want, atol=1e-6, rtol=0)
        torch.testing.assert_close(_hub_load(run / "backbone.safetensors")(x), want, atol=1e-6, rtol=0)

    card = (hub / "README.md").read_text()
    for fragment in ("library_name: timm", "**sns**", "**digits**", "teacher: `runs/t`", "300 step(s)", "91.25"):
        assert fragment in card, fragment
    assert "sns pretrain --config config.yaml" in card and "Intended use and limits" in card
    assert yaml.safe_load(card.split("```yaml\n")[1].split("```")[0])["arch"] == "resnet18"
    # a non-empty --out is refused; --force rewrites it
    assert main(["export", str(run), "--format", "hub", "--out", str(hub)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["export", str(run), "--format", "hub", "--out", str(hub), "--force"]) == 0


def test_hub_export_of_a_tiny_cifar_stem_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", "--method", "vicreg", "--data", "digits", "--out", str(run), *TINY]) == 0
    hub = tmp_path / "hub"
    assert main(["export", str(run), "--out", str(hub)]) == 0  # --format hub is the default
    config = json.loads((hub / "config.json").read_text())
    assert config["squeezespan"]["timm_compatible"] is False and "cifar" in config["squeezespan"]["note"]
    assert config["model_args"]["in_chans"] == 1 and config["pretrained_cfg"]["input_size"] == [1, 16, 16]
    card = (hub / "README.md").read_text()
    assert "library_name: timm" not in card and "Not loadable by timm" in card and "cifar stem" in card
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        want = load_backbone(run)(x)
        torch.testing.assert_close(load_backbone(hub)(x), want, atol=1e-6, rtol=0)
        torch.testing.assert_close(_hub_load(hub)(x), want, atol=1e-6, rtol=0)
    # native format: the same backbone again as backbone.safetensors/.json
    native = tmp_path / "native"
    assert main(["export", str(run), "--format", "native", "--out", str(native)]) == 0
    assert sorted(p.name for p in native.iterdir()) == ["backbone.json", "backbone.safetensors"]
    with torch.no_grad():
        torch.testing.assert_close(load_backbone(native)(x), want, atol=0, rtol=0)


def test_hubconf_without_weights_and_wrong_arch(tmp_path):
    model = torch.hub.load(str(REPO), "squeezespan_resnet34", source="local", in_channels=1)
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 512)
    run = _fake_run(tmp_path / "run")
    with pytest.raises(squeezespan.SnsError, match="load it with squeezespan_resnet18"):
        _hub_load(run, "resnet50")


def test_export_errors_are_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "does not exist" in err
