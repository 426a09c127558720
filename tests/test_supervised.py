"""The supervised reference (method supervised) on the one engine: labels reach the objective, it learns,
resumes exactly; and the engine's loop runs an objective it has never heard of."""

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file
from torch import nn

from squeezespan.data import load_dataset
from squeezespan.engine import MetricsLogger, RealStream, RunDir, StepInputs, World, begin, fit, read_metrics
from squeezespan.errors import SnsError
from squeezespan.methods import Objective, Supervised
from squeezespan.pretraining import pretrain, real_subset


def _quiet(*a, **k):
    return None


def _same_weights(a, b) -> bool:
    wa, wb = load_file(str(a / "backbone.safetensors")), load_file(str(b / "backbone.safetensors"))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_labels_of_the_steps_real_images_reach_the_objective(tmp_path, tiny_pretrain_cfg, monkeypatch):
    cfg = tiny_pretrain_cfg(method="supervised", steps=3, real_subset=100)
    seen = []
    forward = Supervised.forward

    def spy(self, inputs):
        seen.append(inputs.labels.clone())
        return forward(self, inputs)

    monkeypatch.setattr(Supervised, "forward", spy)
    pretrain(cfg, tmp_path, progress=False, log=_quiet)
    train = load_dataset("digits", split="train", resolution=16)
    stream = RealStream(train, 16, cfg["seed"], real_subset(cfg, len(train)))
    assert len(seen) == 3
    for step, labels in enumerate(seen):
        assert labels.dtype == torch.int64
        assert torch.equal(labels, train.labels[stream.indices(step)].long())


def test_labels_are_filled_only_for_objectives_that_ask(tmp_path, tiny_pretrain_cfg, monkeypatch):
    from squeezespan.methods import VICReg

    seen = []
    forward = VICReg.forward
    monkeypatch.setattr(VICReg, "forward", lambda self, inputs: (seen.append(inputs.labels), forward(self, inputs))[1])
    pretrain(tiny_pretrain_cfg(method="vicreg", steps=1), tmp_path, progress=False, log=_quiet)
    assert seen == [None]


def test_supervised_learns_and_exports_like_any_method(tmp_path, tiny_pretrain_cfg):
    # no augmentation: 40 steps of a 1/8-width ResNet are enough to fit 16 px digits
    cfg = tiny_pretrain_cfg(method="supervised", steps=40, batch_size=32, lr=0.5, final_eval=True, knn_bank=300)
    cfg["augment"] = dict(cfg["augment"], enabled=False)
    summary = pretrain(cfg, tmp_path, progress=False, log=_quiet)
    losses = [m["loss"] for m in read_metrics(tmp_path) if "loss" in m]
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.3 * losses[0]  # from ~ln(10) = 2.3 to ~0.25 (measured): it fits the labels
    assert summary["knn"]["top1"] > 80  # ten classes: chance is 10; measured 94
    meta = json.loads((tmp_path / "backbone.json").read_text())
    assert meta["method"] == "supervised" and (tmp_path / "backbone.safetensors").exists()
    assert not any(k.startswith("head") for k in load_file(str(tmp_path / "backbone.safetensors")))


def test_supervised_resume_equals_uninterrupted(tmp_path, tiny_pretrain_cfg):
    cfg = tiny_pretrain_cfg(method="supervised", steps=4, warmup_steps=1)
    straight, sliced = tmp_path / "straight", tmp_path / "sliced"
    pretrain(cfg, straight, progress=False, log=_quiet)
    stopped = {"interrupted": True, "step": 2, "signal": "stop_after"}
    assert pretrain(cfg, sliced, progress=False, log=_quiet, stop_after=2) == stopped
    pretrain(cfg, sliced, resume=True, progress=False, log=_quiet)
    assert _same_weights(straight, sliced)


def test_supervised_refuses_unlabelled_images_and_a_teacher_share(tmp_path, tiny_pretrain_cfg):
    from test_data import write_stl

    write_stl(tmp_path / "data", n_train=2, n_test=1, n_unlabeled=6)
    cfg = tiny_pretrain_cfg(
        method="supervised", data="stl10", data_root=str(tmp_path / "data"), train_split="train+unlabeled"
    )
    cfg.update(batch_size=8, resolution=32, variant="imagenet")
    with pytest.raises(SnsError, match="unlabelled"):
        pretrain(cfg, tmp_path / "run", progress=False, log=_quiet)
    assert not (tmp_path / "run").exists()  # refused before the run directory was touched
    with pytest.raises(SnsError, match="labelled real images only"):
        pretrain(tiny_pretrain_cfg(method="supervised", syn_ratio=0.5), tmp_path / "run2", progress=False, log=_quiet)


def test_config_yaml_records_the_method_defaults_and_a_resume_from_it_is_exact(tmp_path, tiny_pretrain_cfg):
    cfg = tiny_pretrain_cfg(method="vicreg", steps=4, device="auto")
    assert cfg["syn_ratio"] is None and cfg["proj_layers"] is None  # "the method decides"
    straight, sliced = tmp_path / "straight", tmp_path / "sliced"
    pretrain(cfg, straight, progress=False, log=_quiet)
    pretrain(cfg, sliced, progress=False, log=_quiet, stop_after=2)
    written = yaml.safe_load((sliced / "config.yaml").read_text())
    assert (written["syn_ratio"], written["proj_layers"], written["w_var"], written["w_cov"]) == (0.0, 5, 25.0, 1.0)
    # the splits and the device that ran are named, not left to defaults ("auto" / null)
    assert (written["train_split"], written["monitor_split"], written["test_split"]) == ("train", "train", "test")
    assert written["device"] == "cpu" and written["precision"] in ("bf16", "fp32")
    pretrain(written, sliced, resume=True, progress=False, log=_quiet)  # what a bare `sns pretrain --resume` does
    assert _same_weights(straight, sliced)
    assert yaml.safe_load((sliced / "config.yaml").read_text()) == written


def test_encode_config_yaml_says_the_w_tap_is_on(tmp_path, tiny_pretrain_cfg):
    cfg = tiny_pretrain_cfg(method="encode", teacher="tiny_teacher:make", steps=1, proj_hidden=16)
    assert cfg["tap_w"] is False
    pretrain(cfg, tmp_path, progress=False, log=_quiet)
    written = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert written["tap_w"] is True and written["w_latent"] == 1.0 and written["syn_ratio"] == 1.0


class _MeanMatch(Objective):
    """An objective the engine has never heard of: pull the features' mean towards a constant."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, inputs: StepInputs):
        loss = (self.scale * inputs.encode(inputs.real).mean() - 3.0).pow(2)
        return loss, {"scale": self.scale.detach()}


def test_fit_trains_any_objective_checkpoints_and_resumes(tmp_path):
    def make():
        torch.manual_seed(0)
        student = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
        objective = _MeanMatch()
        opt = torch.optim.SGD(list(student.parameters()) + list(objective.parameters()), lr=0.05, momentum=0.9)
        return student, objective, opt

    data = torch.Generator().manual_seed(1)
    images = torch.rand(8, 3, 2, 2, generator=data)

    def run(path, resume=False, stop_after=None):
        student, objective, opt = make()
        rd = RunDir(path, World(), keep=1, log=_quiet)
        rd.prepare()
        start = begin(rd, student, objective, opt, seed=0, resume=resume)
        logger = MetricsLogger(path, tensorboard=False, resume_step=start.resume_step)
        result = fit(
            student,
            objective,
            opt,
            lambda step: StepInputs(real=images[step % 2 * 4 :][:4], encode=student),
            rd,
            logger,
            start,
            total=6,
            base_lr=0.05,
            batch_size=4,
            log_every=1,
            stop_after=stop_after,
            progress=False,
            log=_quiet,
        )
        logger.close()
        return result, student

    done, straight = run(tmp_path / "a")
    assert not done.interrupted and done.step == 6 and done.images == 24
    losses = [m["loss"] for m in read_metrics(tmp_path / "a")]
    assert len(losses) == 6 and losses[-1] < 0.1 * losses[0]
    assert run(tmp_path / "b", stop_after=3)[0].interrupted
    _, resumed = run(tmp_path / "b", resume=True)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_knn_monitor_runs_every_n_steps_without_changing_the_training(tmp_path, tiny_pretrain_cfg):
    cfg = tiny_pretrain_cfg(method="supervised", steps=4, knn_bank=200)
    pretrain(cfg, tmp_path / "plain", progress=False, log=_quiet)
    pretrain(dict(cfg, knn_every=2, final_eval=True), tmp_path / "monitored", progress=False, log=_quiet)
    knn = [m for m in read_metrics(tmp_path / "monitored") if "knn_top1" in m]
    assert [m["step"] for m in knn] == [2, 4]  # the monitor at step 2, the final evaluation at 4
    assert all(0 <= m["knn_top1"] <= 100 for m in knn)
    # the monitor draws no random numbers and hands the student back in train mode: the same weights
    assert _same_weights(tmp_path / "plain", tmp_path / "monitored")
