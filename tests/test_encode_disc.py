"""Table 1 baselines: latent encoding (w from an image, reconstruction through the frozen G) and D's features."""

import json
import sys
import types

import pytest
import torch
from torch import nn

from squeezespan.engine.checkpoint import load_latest
from squeezespan.errors import SnsError
from squeezespan.methods import StepInputs, build_objective
from squeezespan.methods.encode import LatentEncoding, load_lpips, reconstruct
from squeezespan.models import build_student
from squeezespan.pretraining import pretrain
from squeezespan.teachers import Teacher, build_stylegan2

TEACHER = "tiny_teacher:make"


def _quiet(*a):
    return None


def _metrics(run):
    return [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]


def _tiny_teacher():
    import tiny_teacher

    return Teacher(tiny_teacher.make(), taps="w")


def _student():
    torch.manual_seed(0)
    student = build_student("resnet18", "cifar", 0.125, in_channels=1)
    return student, (lambda x: student((x - 0.5) / 0.25))


# ---------------------------------------------------------------------------------------------- encode


@pytest.mark.parametrize("syn_ratio", [1.0, 0.5])
def test_encode_runs_on_the_engine_syn_and_syn_plus_real(tmp_path, tiny_pretrain_cfg, syn_ratio):
    cfg = tiny_pretrain_cfg(method="encode", teacher=TEACHER, tap_w=True, steps=2, syn_ratio=syn_ratio)
    pretrain(cfg, tmp_path, progress=False, log=_quiet)
    rows = _metrics(tmp_path)
    assert len(rows) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    assert {"loss_latent", "loss_rec_syn"} <= set(rows[0])
    assert ("loss_rec_real" in rows[0]) == (syn_ratio < 1)
    # the frozen G is not part of what the run trains and checkpoints
    ckpt, _ = load_latest(tmp_path / "checkpoints", warn=_quiet)
    assert set(ckpt["objective"]) == {"w_bias"} | {k for k in ckpt["objective"] if k.startswith("head.")}


def test_encode_reconstruction_improves_over_20_engine_steps(tmp_path, tiny_pretrain_cfg):
    cfg = tiny_pretrain_cfg(method="encode", teacher=TEACHER, tap_w=True, steps=20, batch_size=32, lr=0.5)
    pretrain(cfg, tmp_path, progress=False, log=_quiet)
    rec = [r["loss_rec_syn"] for r in _metrics(tmp_path)]
    # fresh teacher images every step make single steps noisy: compare the first and last five
    assert sum(rec[-5:]) < 0.9 * sum(rec[:5]), rec


def test_encode_taps_w_by_itself_and_refuses_a_run_without_teacher_images(tmp_path, tiny_pretrain_cfg):
    # the engine turns the w tap on for a method that needs it (LatentEncoding.needs_w)
    pretrain(tiny_pretrain_cfg(method="encode", teacher=TEACHER, steps=1), tmp_path / "a", progress=False, log=_quiet)
    assert (tmp_path / "a" / "backbone.safetensors").exists()
    with pytest.raises(SnsError, match="tap_w=true"):  # built by hand, the objective still checks
        from squeezespan.methods import build_objective

        build_objective(dict(method="encode", tap_w=False, taps=".*b4$", proj_hidden=32), 8, [8])
    with pytest.raises(SnsError, match="0 < syn_ratio"):
        pretrain(
            tiny_pretrain_cfg(method="encode", teacher=TEACHER, tap_w=True, syn_ratio=0.0, steps=1),
            tmp_path / "b",
            progress=False,
            log=_quiet,
        )


def test_reconstruction_at_the_true_w_is_the_teacher_image():
    """G.synthesis(w broadcast to all layers) is exactly what the teacher drew: untruncated, const noise."""
    teacher = _tiny_teacher()
    images, (w,) = teacher.sample(4, seed=7)
    rec = reconstruct(teacher.generator, w)
    assert rec.shape == images.shape
    assert torch.allclose(rec.clamp(0, 1), images, atol=1e-5)


def test_gradient_reaches_the_student_through_the_frozen_generator():
    teacher = _tiny_teacher()
    G = teacher.generator
    before = {k: v.clone() for k, v in G.state_dict().items()}
    student, encode = _student()
    objective = build_objective(
        dict(method="encode", tap_w=True, w_latent=0.0, proj_hidden=32), student.feature_dim, [G.w_dim]
    )
    assert isinstance(objective, LatentEncoding) and not any(k.startswith("G") for k in objective.state_dict())
    images, taps = teacher.sample(8, seed=1)
    loss, logs = objective(StepInputs(syn=images, taps=taps, encode=encode, teacher=teacher))
    assert torch.isclose(loss.detach(), logs["loss_rec_syn"])
    loss.backward()  # only the reconstruction term (w_latent=0): every gradient flowed through G
    assert student.conv1.weight.grad is not None and student.conv1.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in G.parameters())
    opt = torch.optim.SGD(list(student.parameters()) + list(objective.parameters()), lr=0.1)
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())


def test_reconstruction_loss_decreases_in_20_steps():
    teacher = _tiny_teacher()
    student, encode = _student()
    objective = LatentEncoding(student.feature_dim, teacher.generator.w_dim, proj_hidden=32)
    images, taps = teacher.sample(32, seed=3)
    opt = torch.optim.Adam(list(student.parameters()) + list(objective.parameters()), lr=3e-3)
    rec, latent = [], []
    for _ in range(20):
        loss, logs = objective(StepInputs(syn=images, taps=taps, encode=encode, teacher=teacher))
        opt.zero_grad()
        loss.backward()
        opt.step()
        rec.append(float(logs["loss_rec_syn"]))
        latent.append(float(logs["loss_latent"]))
    assert rec[-1] < 0.8 * rec[0], rec
    assert latent[-1] < 0.8 * latent[0], latent


def test_syn_plus_real_reconstructs_real_images_at_their_resolution():
    teacher = _tiny_teacher()  # 16 px
    student, encode = _student()
    objective = LatentEncoding(student.feature_dim, teacher.generator.w_dim, syn_ratio=0.5, proj_hidden=32)
    images, taps = teacher.sample(4, seed=0)
    real = torch.rand(4, 1, 32, 32)
    loss, logs = objective(StepInputs(syn=images, taps=taps, real=real, encode=encode, teacher=teacher))
    expected = 0.5 * (logs["loss_latent"] + logs["loss_rec_syn"]) + 0.5 * logs["loss_rec_real"]
    assert torch.isclose(loss.detach(), expected)


def test_lpips_reconstruction_loss_from_a_user_weights_file(tmp_path, monkeypatch):
    """Without `lpips` the error says what to do; with it, the net is built offline and filled from the file."""
    if "lpips" not in sys.modules:
        try:
            import lpips  # noqa: F401
        except ImportError:
            with pytest.raises(SnsError, match="pip install lpips"):
                load_lpips(str(tmp_path / "w.pt"))

    class FakeLPIPS(nn.Module):  # the lpips.LPIPS seam we rely on: constructor kwargs, state_dict, forward
        built = {}

        def __init__(self, pretrained=True, net="alex", pnet_rand=False, verbose=True):
            super().__init__()
            FakeLPIPS.built = dict(pretrained=pretrained, net=net, pnet_rand=pnet_rand)
            self.net = nn.Module()
            self.net.slice1 = nn.Sequential(nn.Conv2d(3, 2, 11 if net == "alex" else 3, padding="same"))

        def forward(self, a, b):
            assert a.min() >= -1 and a.shape[1] == 3
            return (self.net.slice1(a) - self.net.slice1(b)).abs().mean(dim=(1, 2, 3), keepdim=True)

    monkeypatch.setitem(sys.modules, "lpips", types.SimpleNamespace(LPIPS=FakeLPIPS))
    torch.save(FakeLPIPS(net="alex").state_dict(), tmp_path / "lpips_alex.pt")
    metric = load_lpips(str(tmp_path / "lpips_alex.pt"))
    assert FakeLPIPS.built == dict(pretrained=False, net="alex", pnet_rand=True)  # nothing downloaded
    assert not any(p.requires_grad for p in metric.parameters())
    objective = LatentEncoding(8, 4, lpips_weights=str(tmp_path / "lpips_alex.pt"))
    x = torch.rand(2, 1, 16, 16)
    assert float(objective.distance(x, x)) == 0 and float(objective.distance(x, 1 - x)) > 0
    assert "_lpips" not in objective.state_dict() and not list(objective._lpips[0].parameters())[0].requires_grad
    with pytest.raises(SnsError, match="lpips_weights"):
        load_lpips(str(tmp_path / "missing.pt"))


# ------------------------------------------------------------------------------------------------ disc


def _tiny_d(resolution=16, channels=1):
    torch.manual_seed(5)
    _, D = build_stylegan2(
        resolution=resolution,
        img_channels=channels,
        channel_base=256,
        channel_max=16,
        z_dim=16,
        w_dim=16,
        mapping_layers=1,
    )
    return D


def test_disc_features_are_the_pooled_block_outputs_of_d():
    from squeezespan.eval.disc import DiscriminatorFeatures

    D = _tiny_d(resolution=32, channels=3)
    seen = {}
    hooks = [
        getattr(D, f"b{r}").register_forward_hook(lambda m, i, o, r=r: seen.__setitem__(r, o[0]))
        for r in D.block_resolutions
    ]
    x = torch.rand(4, 3, 32, 32)
    D(x * 2 - 1)  # D's own forward pass on [-1, 1] images
    for h in hooks:
        h.remove()
    single, multi = DiscriminatorFeatures(D, "single"), DiscriminatorFeatures(D, "multi")
    widths = [seen[r].shape[1] for r in D.block_resolutions]  # b32, b16, b8
    assert single.feature_dim == widths[-1] and multi.feature_dim == sum(widths)
    assert torch.allclose(single(x), seen[8].mean(dim=(2, 3)), atol=1e-5)
    assert torch.allclose(multi(x), torch.cat([seen[r].mean(dim=(2, 3)) for r in D.block_resolutions], 1), atol=1e-5)
    # per-sample features: no minibatch statistics leak in (unlike the epilogue's mbstd)
    assert torch.allclose(multi(x[:1]), multi(x)[:1], atol=1e-5)
    # other resolutions are resized, grey images repeated to RGB
    assert multi(torch.rand(2, 3, 16, 16)).shape == (2, sum(widths))
    assert multi(torch.rand(2, 1, 32, 32)).shape == (2, sum(widths))
    with pytest.raises(SnsError, match="mode"):
        DiscriminatorFeatures(D, "fc")


def test_disc_backbone_specs_and_errors(tmp_path):
    from squeezespan.eval.disc import parse_disc_spec

    assert parse_disc_spec("disc:runs/gan") == ("runs/gan", "single")
    assert parse_disc_spec("disc:stylegan2-pkl:c10.pkl:multi") == ("stylegan2-pkl:c10.pkl", "multi")
    with pytest.raises(SnsError, match="name the teacher"):
        parse_disc_spec("disc::multi")


def test_sns_eval_scores_a_teacher_discriminator_single_and_multi(tmp_path):
    from squeezespan.config import resolve_config
    from squeezespan.eval.run import EVAL_DEFAULTS, run_eval
    from squeezespan.gan import GAN_DEFAULTS
    from squeezespan.teachers.directory import build_networks, network_kwargs, save_teacher_dir

    gan_cfg = dict(GAN_DEFAULTS, resolution=16, channel_base=256, channel_max=16, z_dim=16, w_dim=16, mapping_layers=1)
    G_kwargs, D_kwargs = network_kwargs(gan_cfg, img_channels=1)
    torch.manual_seed(0)
    G, D = build_networks(G_kwargs, D_kwargs)
    save_teacher_dir(tmp_path / "gan" / "teacher", G, G, D, G_kwargs, D_kwargs, {})
    gan = str(tmp_path / "gan")
    cfg = resolve_config(
        EVAL_DEFAULTS,
        "eval",
        extra=dict(
            data="digits", resolution=16, backbones=[f"disc:{gan}", f"disc:{gan}:multi"], device="cpu", linear_epochs=20
        ),
    )
    (tmp_path / "ev").mkdir()
    rows = run_eval(cfg, tmp_path / "ev", progress=False, log=_quiet)
    assert [r["name"].split(" ")[0] for r in rows] == ["disc-single", "disc-multi"]
    assert rows[0]["feature_dim"] == 16 and rows[1]["feature_dim"] == 32
    # even an untrained D's features separate the digits far above chance (10 %)
    assert all(r["knn"]["top1"] > 30 and r["linear"]["top1"] > 30 for r in rows), rows
    cfg["backbones"] = ["disc:tiny_teacher:make"]
    with pytest.raises(SnsError, match="not from a module:factory"):
        run_eval(cfg, tmp_path / "ev", progress=False, log=_quiet)
