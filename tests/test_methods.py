"""Every method runs a few steps on the one engine; Squeeze and Span resumes exactly; Table 5 row c collapses."""

import json

import pytest
import torch
from safetensors.torch import load_file

from squeezespan.errors import SnsError
from squeezespan.pretraining import pretrain

TEACHER = "tiny_teacher:make"


def _quiet(*a):
    return None


def _metrics(run):
    return [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    "method, over",
    [
        ("sns", {}),
        ("squeeze", {}),
        ("kd", {}),
        ("kd", {"augment_syn": False}),  # Table 5 row a
        ("sns", {"squeeze_depth": 0}),  # no T_phi
        ("vicreg", {"syn_ratio": 1.0}),  # VICReg on synthetic images
        ("vicreg", {"syn_ratio": 0.5}),  # ... and on mixed data
        ("simsiam", {"syn_ratio": 0.5}),
        ("sns", {"taps": "w"}),  # latent w as the target (Table 1 latent rows)
        ("sns", {"bn_pass": "shared"}),  # one student pass over syn + both real views
    ],
)
def test_each_method_runs(tmp_path, tiny_pretrain_cfg, method, over):
    cfg = tiny_pretrain_cfg(method=method, teacher=TEACHER, steps=2, **over)
    pretrain(cfg, tmp_path, progress=False, log=_quiet)
    rows = _metrics(tmp_path)
    assert len(rows) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    if cfg["method"] in ("sns",) and not over:
        assert {"loss_syn", "loss_real", "syn_inv", "real_var"} <= set(rows[0])


def test_sns_resume_equals_uninterrupted(tmp_path, tiny_pretrain_cfg):
    cfg = tiny_pretrain_cfg(method="sns", teacher=TEACHER, steps=4)
    a, b = tmp_path / "a", tmp_path / "b"
    pretrain(cfg, a, progress=False, log=_quiet)
    pretrain(cfg, b, progress=False, log=_quiet, stop_after=2)
    pretrain(cfg, b, resume=True, progress=False, log=_quiet)
    wa, wb = load_file(str(a / "backbone.safetensors")), load_file(str(b / "backbone.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_squeeze_without_var_cov_collapses_and_with_them_does_not(tmp_path, tiny_pretrain_cfg):
    """Table 5 row c: with only the MSE to T_phi's output, student and T_phi agree on a constant."""
    common = dict(method="squeeze", teacher=TEACHER, steps=40, lr=0.5, batch_size=32, warmup_steps=0)
    collapse = tiny_pretrain_cfg(w_var=0.0, w_cov=0.0, **common)
    healthy = tiny_pretrain_cfg(**common)
    pretrain(collapse, tmp_path / "c", progress=False, log=_quiet)
    pretrain(healthy, tmp_path / "e", progress=False, log=_quiet)
    std_c = _metrics(tmp_path / "c")[-1]["syn_std"]
    std_e = _metrics(tmp_path / "e")[-1]["syn_std"]
    assert std_c < 0.05, std_c
    assert std_e > 0.3, std_e


def test_teacher_with_wrong_channels_is_refused(tmp_path, tiny_pretrain_cfg):
    cfg = tiny_pretrain_cfg(method="sns", teacher="tiny_teacher:make", steps=1)
    cfg["data"] = "digits"
    import tiny_teacher

    orig = tiny_teacher.make
    tiny_teacher.make = lambda: orig(channels=3)
    try:
        with pytest.raises(SnsError, match="3-channel images but dataset digits has 1"):
            pretrain(cfg, tmp_path, progress=False, log=_quiet)
    finally:
        tiny_teacher.make = orig


def _sns_objective(bn_pass):
    from squeezespan.methods import SqueezeAndSpan

    torch.manual_seed(0)
    return SqueezeAndSpan(
        8,
        [4, 6],
        syn_ratio=0.5,
        proj_layers=2,
        proj_hidden=16,
        proj_dim=8,
        squeeze_depth=2,
        squeeze_hidden=16,
        bn_pass=bn_pass,
    )


def _sns_inputs(encode):
    from squeezespan.methods import StepInputs

    g = torch.Generator().manual_seed(1)
    return StepInputs(
        real=torch.rand(6, 1, 4, 4, generator=g),
        syn=torch.rand(6, 1, 4, 4, generator=g),
        taps=[torch.randn(6, 4, 2, 2, generator=g), torch.randn(6, 6, 4, 4, generator=g)],
        augment=lambda x: x.flip(-1),
        encode=encode,
    )


def test_shared_bn_pass_is_the_same_loss_up_to_batchnorm_statistics():
    torch.manual_seed(2)
    lin = torch.nn.Linear(16, 8)
    bn = torch.nn.BatchNorm1d(8)
    calls = []

    def encode(x):
        calls.append(len(x))
        return bn(lin(x.flatten(1)))

    sep, shared = _sns_objective("separate"), _sns_objective("shared")
    shared.load_state_dict(sep.state_dict())
    # with every BatchNorm on running statistics (eval) the two passes are the same computation
    for m in (sep, shared, bn):
        m.eval()
    l_sep, logs_sep = sep(_sns_inputs(encode))
    assert calls == [6, 6, 6]
    calls.clear()
    l_sh, logs_sh = shared(_sns_inputs(encode))
    assert calls == [18]  # one pass: 6 synthetic + 2 x 6 real views
    torch.testing.assert_close(l_sh, l_sep)
    assert set(logs_sh) == set(logs_sep)
    # in training mode BatchNorm sees one batch of 18 instead of three of 6: a different (finite) loss
    for m in (sep, shared, bn):
        m.train()
    l_sep, l_sh = sep(_sns_inputs(encode))[0].detach(), shared(_sns_inputs(encode))[0].detach()
    assert torch.isfinite(l_sh) and abs(l_sh.item() - l_sep.item()) > 1e-4


def test_bad_bn_pass_is_a_one_line_error():
    with pytest.raises(SnsError, match="bn_pass='both'.*separate.*shared"):
        _sns_objective("both")
