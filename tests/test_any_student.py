"""Any student network: arch=timm:NAME (+ arch_kwargs) and arch=package.module:factory train with every method,
export, and load back (load_backbone, timm's local-dir loader) to the run's own outputs; bad arch strings are one
line each, before --out is touched."""

import json
import sys
from pathlib import Path

import pytest
import torch

from squeezespan.checks import check_pretrain_config
from squeezespan.cli import main
from squeezespan.engine.distributed import GlobalBatchNormAct, convert_batchnorm
from squeezespan.errors import SnsError
from squeezespan.export import load_backbone, read_meta, torchvision_resnet
from squeezespan.hub import export_hub
from squeezespan.models import ExternalStudent, build_student
from squeezespan.pretraining import build_run, pretrain
from squeezespan.teachers import Teacher

timm = pytest.importorskip("timm")

TEACHER = "tiny_teacher:make"
# a small ViT at 16 px: 4x4 patches of 4 pixels, two blocks
VIT = dict(arch="timm:vit_tiny_patch16_224", arch_kwargs={"patch_size": 4, "depth": 2})
METHODS = {  # method -> what it needs beyond the tiny config
    "sns": dict(teacher=TEACHER),
    "squeeze": dict(teacher=TEACHER),
    "kd": dict(teacher=TEACHER),
    "vicreg": {},
    "simsiam": {},
    "encode": dict(teacher=TEACHER),
    "supervised": {},
}


def _quiet(*a):
    return None


def _cfg(tiny_pretrain_cfg, **over):
    base = dict(width=1.0, steps=2, batch_size=8, proj_hidden=16, proj_dim=16, squeeze_hidden=16)
    return tiny_pretrain_cfg(**{**base, **over})


def _trained_student(run_dir: Path) -> torch.nn.Module:
    """The run's student as it ended, from its last checkpoint (not the export)."""
    import yaml

    from squeezespan.engine.checkpoint import list_checkpoints, load_checkpoint

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    student = build_run(cfg, torch.device("cpu")).student
    student.load_state_dict(load_checkpoint(list_checkpoints(run_dir / "checkpoints")[-1])["student"])
    return student.eval()


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_trains_a_timm_resnet(tmp_path, tiny_pretrain_cfg, method):
    cfg = _cfg(tiny_pretrain_cfg, method=method, arch="timm:resnet18", **METHODS[method])
    summary = pretrain(cfg, tmp_path, progress=False, log=_quiet)
    rows = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    meta = read_meta(summary["export"])
    assert meta["arch"] == "timm:resnet18" and meta["feature_dim"] == 512 and meta["in_channels"] == 1
    assert meta["variant"] is None and meta["width"] is None and meta["arch_kwargs"] == {}


def test_a_timm_convnext_trains_channels_last(tmp_path, tiny_pretrain_cfg):
    cfg = _cfg(
        tiny_pretrain_cfg, method="sns", arch="timm:convnext_atto", channels_last=True, teacher=TEACHER, resolution=32
    )
    pretrain(cfg, tmp_path, progress=False, log=_quiet)
    assert read_meta(tmp_path)["feature_dim"] == 320


@pytest.mark.parametrize("method", ["sns", "vicreg", "supervised"])
def test_a_small_vit_trains_at_the_data_resolution(tmp_path, tiny_pretrain_cfg, method):
    cfg = _cfg(tiny_pretrain_cfg, method=method, **VIT, **METHODS[method])
    pretrain(cfg, tmp_path, progress=False, log=_quiet)
    meta = read_meta(tmp_path)
    # timm's ViT was built for the run's 16 px images (img_size resolved and recorded), 192-d class token out
    assert meta["arch_kwargs"] == {"patch_size": 4, "depth": 2, "img_size": 16} and meta["feature_dim"] == 192


def test_export_and_load_backbone_give_the_runs_outputs(tmp_path, tiny_pretrain_cfg):
    cfg = _cfg(tiny_pretrain_cfg, method="vicreg", ckpt_every=2, **VIT)
    pretrain(cfg, tmp_path, progress=False, log=_quiet)
    student, backbone = _trained_student(tmp_path), load_backbone(tmp_path)
    assert isinstance(backbone.student, ExternalStudent) and not backbone.training
    x = torch.rand(3, 1, 16, 16)
    run = build_run(cfg, torch.device("cpu"))
    with torch.no_grad():
        want = student((x - run.mean) / run.std)
        torch.testing.assert_close(backbone(x), want, atol=1e-6, rtol=0)
        # other sizes are resized to the ViT's 16 px, as the training encoder does
        assert backbone(torch.rand(2, 1, 32, 32)).shape == (2, 192)

    # the hub folder is timm's own layout: timm.create_model("local-dir:...") rebuilds the ViT with its kwargs
    hub = export_hub(tmp_path, tmp_path / "hub")
    model = timm.create_model(f"local-dir:{hub}", pretrained=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(model((x - backbone.mean) / backbone.std), want, atol=1e-6, rtol=0)
        torch.testing.assert_close(load_backbone(hub)(x), want, atol=1e-6, rtol=0)
    config = json.loads((hub / "config.json").read_text())
    assert config["architecture"] == "vit_tiny_patch16_224" and config["squeezespan"]["timm_compatible"] is True
    assert config["model_args"] == {"in_chans": 1, "patch_size": 4, "depth": 2, "img_size": 16}

    with pytest.raises(SnsError, match="built-in resnet18, resnet34, resnet50 only; use squeezespan.load_backbone"):
        torchvision_resnet(tmp_path)
    # torch.hub from a checkout: the generic entry loads any student; the ResNet entries point to it
    repo = str(Path(__file__).resolve().parents[1])
    with torch.no_grad():
        hubbed = torch.hub.load(repo, "squeezespan_backbone", weights=str(tmp_path), source="local")
        torch.testing.assert_close(hubbed(x), want, atol=1e-6, rtol=0)
    with pytest.raises(SnsError, match="holds a timm:vit_tiny_patch16_224; load it with squeezespan_backbone"):
        torch.hub.load(repo, "squeezespan_resnet18", weights=str(tmp_path), source="local")
    assert 'torch.hub.load(REPO_DIR, "squeezespan_backbone"' in (hub / "README.md").read_text()


def test_sns_eval_random_baseline_of_a_timm_student():
    """`sns eval arch=timm:... arch_kwargs=...`: the random-init baseline is the student a run would start from."""
    from squeezespan.eval import random_init_student

    a = random_init_student(
        "timm:vit_tiny_patch16_224", in_channels=1, seed=3, arch_kwargs=VIT["arch_kwargs"], resolution=16
    )
    b = random_init_student(
        "timm:vit_tiny_patch16_224", in_channels=1, seed=3, arch_kwargs=VIT["arch_kwargs"], resolution=16
    )
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        assert a(x).shape == (2, 192) and torch.equal(a(x), b(x)) and not a.training


def test_module_factory_end_to_end_from_the_command_line(tmp_path):
    """`sns pretrain arch=tiny_student:make arch_kwargs={width: 4}` trains, exports and loads back (tests/ is on
    sys.path here, as a user's folder is on PYTHONPATH)."""
    args = [
        *("--method", "vicreg", "--data", "digits", "--device", "cpu", "--out", str(tmp_path / "run"), "-q"),
        *("arch=tiny_student:make", "arch_kwargs={width: 4}", "resolution=16", "batch_size=8", "steps=2"),
        *("proj_hidden=16", "proj_dim=16", "final_eval=false"),
    ]
    assert main(["pretrain", *args]) == 0
    meta = read_meta(tmp_path / "run")
    assert meta["arch"] == "tiny_student:make" and meta["arch_kwargs"] == {"width": 4} and meta["feature_dim"] == 8
    student, backbone = _trained_student(tmp_path / "run"), load_backbone(tmp_path / "run")
    x = torch.rand(4, 1, 16, 16)
    with torch.no_grad():
        mean, std = torch.tensor(meta["mean"]).view(1, -1, 1, 1), torch.tensor(meta["std"]).view(1, -1, 1, 1)
        torch.testing.assert_close(backbone(x), student((x - mean) / std), atol=1e-6, rtol=0)


def test_a_factory_that_no_longer_imports_is_named_when_loading(tmp_path):
    student = build_student("tiny_student:make", in_channels=3, arch_kwargs={"width": 2}, resolution=8)
    from squeezespan.export import export_backbone

    export_backbone(student, tmp_path / "b", dict(mean=[0.5], std=[0.5], resolution=8))
    doc = json.loads((tmp_path / "b.json").read_text())
    doc["arch"] = "moved_away.tiny_student:make"
    (tmp_path / "b.json").write_text(json.dumps(doc))
    with pytest.raises(SnsError, match=r"cannot import module 'moved_away.tiny_student'.*PYTHONPATH"):
        load_backbone(tmp_path / "b")


@pytest.mark.parametrize(
    "over, match",
    [
        (dict(arch="resnet19"), r"arch='resnet19' is unknown: expected one of resnet18, .*timm:NAME"),
        (dict(arch="timm:no_such_net"), r"timm has no model 'no_such_net'"),
        (dict(arch="timm:resnet18", width=0.5), "width=0.5 applies to the built-in ResNets only"),
        (dict(arch="timm:resnet18", arch_kwargs={"num_classes": 10}), "arch_kwargs sets num_classes"),
        (dict(arch="timm:resnet18", arch_kwargs=[4]), "arch_kwargs=.4. must be a mapping"),
        (dict(arch="resnet18", arch_kwargs={"depth": 2}), "resnet18 takes variant and width, not arch_kwargs"),
        (dict(arch="no_such_pkg.mod:make"), r"cannot import module 'no_such_pkg.mod' \(ModuleNotFoundError"),
        (dict(arch="tiny_student:missing"), "module 'tiny_student' has no attribute 'missing'"),
        (dict(arch="tiny_student:NOT_CALLABLE"), "'NOT_CALLABLE' is not callable"),
        (dict(arch="a b:c"), "is unknown"),
    ],
)
def test_bad_arch_is_one_line_before_anything_is_built(tiny_pretrain_cfg, over, match):
    with pytest.raises(SnsError, match=match) as e:
        check_pretrain_config(_cfg(tiny_pretrain_cfg, method="vicreg", **over))
    assert "\n" not in str(e.value)


def test_a_student_module_failing_while_it_imports_is_named_with_its_error(tiny_pretrain_cfg, tmp_path, monkeypatch):
    # the same words as a teacher factory's (one import_callable serves both)
    (tmp_path / "broken_student.py").write_text("raise RuntimeError('needs\\na GPU')\ndef make(): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(
        SnsError,
        match=r"^arch=broken_student:make: importing 'broken_student' failed: "
        r"RuntimeError: needs a GPU$",
    ):
        check_pretrain_config(_cfg(tiny_pretrain_cfg, method="vicreg", arch="broken_student:make"))
    with pytest.raises(SnsError, match=r"^teacher factory 'broken_student:make': importing 'broken_student' failed"):
        Teacher.from_factory("broken_student:make")


@pytest.mark.parametrize(
    "arch, kwargs, match",
    [
        ("timm:resnet18", {"bogus": 1}, r"timm.create_model refused \(TypeError: .*bogus"),
        ("tiny_student:unpooled", {}, r"maps images of shape \(2, 1, 16, 16\) to \(2, 4, 16, 16\); .* pooled"),
        ("tiny_student:make", {"nope": 1}, r"the factory failed when called with in_channels=1"),
        ("timm:vit_tiny_patch16_224", {"img_size": 32}, r"cannot take images of shape \(2, 1, 16, 16\)"),
    ],
)
def test_networks_that_cannot_be_students_are_one_line(arch, kwargs, match):
    with pytest.raises(SnsError, match=match) as e:
        build_student(arch, in_channels=1, arch_kwargs=kwargs, resolution=16)
    assert "\n" not in str(e.value)


def test_missing_timm_names_the_extra_before_out_is_touched(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "timm", None)  # an absent package: `import timm` raises ImportError
    assert main(["pretrain", "--data", "digits", "--out", str(tmp_path / "run"), "arch=timm:resnet18"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "arch=timm:resnet18 needs the timm package" in line and "pip install 'squeezespan[timm]'" in line
    assert not (tmp_path / "run").exists()


def test_global_batchnorm_keeps_the_activation_of_timms_fused_batchnorm():
    """EfficientNet-style BatchNormAct2d (BN + activation in one layer) keeps its activation under torchrun."""
    from timm.layers import BatchNormAct2d

    layer = torch.nn.Sequential(BatchNormAct2d(4, act_layer=torch.nn.ReLU))
    x = torch.randn(6, 4, 3, 3)
    want = layer(x)
    convert_batchnorm(layer, torch.device("cpu"))
    assert isinstance(layer[0], GlobalBatchNormAct)
    torch.testing.assert_close(layer(x), want)
    assert (layer(x) >= 0).all()


def test_a_batchnorm_subclass_with_its_own_forward_is_refused_by_name():
    class OddNorm(torch.nn.BatchNorm2d):
        def forward(self, x):
            return super().forward(x) * 2

    with pytest.raises(SnsError, match=r"layer 1 is a OddNorm, a BatchNorm with a forward of its own"):
        convert_batchnorm(torch.nn.Sequential(torch.nn.Identity(), OddNorm(3)), torch.device("cpu"))


def _timm_bn_worker(rank: int, rendezvous: str, x: torch.Tensor, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        student = build_student("timm:efficientnet_b0", in_channels=3, resolution=32)
        convert_batchnorm(student, torch.device("cpu"))
        y = student.train()(x[rank * 4 : (rank + 1) * 4])
        kinds = sorted({type(m).__name__ for m in student.modules() if "Norm" in type(m).__name__})
        torch.save(dict(y=y.detach(), state=student.state_dict(), kinds=kinds), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_two_processes_normalise_a_timm_efficientnet_with_the_global_batch(tmp_path):
    """BatchNormAct2d layers, converted, give one process's outputs and running statistics over two processes."""
    import torch.multiprocessing as mp

    x = torch.randn(8, 3, 32, 32)
    rendezvous = f"file://{tmp_path / 'rendezvous'}"
    mp.start_processes(_timm_bn_worker, args=(rendezvous, x, str(tmp_path / "res")), nprocs=2, start_method="spawn")
    r0, r1 = (torch.load(tmp_path / f"res.{r}") for r in range(2))
    assert r0["kinds"] == ["GlobalBatchNormAct"]
    torch.manual_seed(0)  # the workers' initialisation
    one = build_student("timm:efficientnet_b0", in_channels=3, resolution=32).train()
    torch.testing.assert_close(torch.cat([r0["y"], r1["y"]]), one(x).detach(), atol=1e-4, rtol=1e-4)
    for k, v in one.state_dict().items():
        if "running" in k:
            torch.testing.assert_close(r0["state"][k], v, atol=1e-4, rtol=1e-4)
