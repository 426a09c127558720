"""Pretraining a student from a config: every knob with its default (PRETRAIN_DEFAULTS), validation, the run's
data, teacher, student and objective (``build_run`` -> ``Run``), the kNN monitor, the exported backbone, and
``pretrain``, which puts them into the engine's one loop (``engine.fit``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_pretrain_config
from .config import apply_aliases
from .data import CUSTOM_PREFIX, Augment, AugmentConfig, as_image_dataset, dataset_fingerprint, load_dataset
from .data.pixels import STD_FLOOR
from .engine.bank import TeacherBank, check_bank_size, prepare_bank
from .engine.device import decide_precision, resolve_teacher_precision
from .engine.distributed import World, setup
from .engine.fit import begin, fit
from .engine.logging import MetricsLogger
from .engine.run import RunDir, tensors_sha256
from .engine.step import RealStream, step_inputs
from .errors import SnsError
from .eval import KNN_CAP_FRACTION, extract_features, knn_eval, knn_settings
from .export import export_backbone
from .methods import METHODS, Objective, build_objective, method_settings, resolve_method
from .models import build_student
from .teachers.load import load_teacher

__all__ = [
    "PRETRAIN_DEFAULTS",
    "RESUME_FREE_KEYS",
    "KnnMonitor",
    "Run",
    "build_run",
    "export_run_backbone",
    "pretrain",
    "real_subset",
]

# Every knob of `sns pretrain`, with its default, in one place (nanoGPT style). null = "the method decides";
# the config.yaml of a run records the resolved values (methods.resolve_method).
PRETRAIN_DEFAULTS: dict[str, Any] = {
    "method": "sns",  # sns | squeeze | kd | vicreg | simsiam | encode | supervised
    "data": "digits",  # dataset name (see `sns data info`)
    "data_root": None,
    "train_split": None,  # pretraining split (null = train; STL-10: train+unlabeled)
    "monitor_split": None,  # labelled split for the kNN memory bank (null = train)
    "test_split": None,  # kNN queries (null = test)
    "resolution": 32,
    "real_subset": 0,  # >0: pretraining sees only this many real images (fixed, seeded choice)
    "teacher": None,  # teacher dir from `sns train-gan`, stylegan2-pkl:PATH, or module:factory
    "teacher_weights": None,  # weights file for a module:factory teacher
    "taps": r".*synthesis\.b(\d+)$",  # regex over the generator's module names
    "tap_w": False,  # tap the latent w instead (latent-target rows of Table 1)
    "teacher_bank": 0,  # 0 = run the teacher live every step; N > 0 = sample N images + pooled taps once
    "arch": "resnet18",  # resnet18 | resnet34 | resnet50 | timm:NAME (squeezespan[timm]) | package.module:factory
    "arch_kwargs": None,  # timm:NAME / factory keyword arguments, e.g. {patch_size: 4} (models/student.py)
    "variant": "cifar",  # built-in ResNets: cifar (3x3 conv1, no max-pool) | imagenet
    "width": 1.0,  # built-in ResNets: width multiplier
    "syn_ratio": None,  # share of the batch that is synthetic (sns 0.5, squeeze/kd 1.0, ssl and supervised 0.0)
    "proj_layers": None,
    "proj_hidden": 512,
    "proj_dim": 2048,
    "squeeze_depth": None,  # T_phi depth; 0 = vanilla (concatenated pooled features)
    "squeeze_hidden": 2048,
    "w_mse": 25.0,
    "w_var": None,
    "w_cov": None,
    "augment_syn": True,  # Table 5 row a: false
    "augment_real": True,
    "bn_pass": None,  # sns: separate (default) | shared: one student pass over syn + both real views
    "w_latent": None,  # encode: weight of MSE(w_hat, w)
    "w_rec": None,  # encode: weight of the reconstruction distance through G
    "lpips_weights": None,  # encode: lpips.LPIPS state dict for the reconstruction (else L1)
    "batch_size": 512,
    "epochs": 800.0,  # epochs of the real train set (steps = epochs * N / batch_size)
    "steps": 0,  # >0 overrides epochs
    "lr": 0.03,  # base lr, scaled by batch_size / 256
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "warmup_steps": 0,
    "grad_clip": 0.0,  # 0 = off
    "augment": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(AugmentConfig()).items()},
    # auto | bf16 | fp16 | fp32 (auto: bf16 where the hardware computes it, fp16 + loss scaling on other CUDA GPUs,
    # else fp32; config.yaml records the choice). bf16=true/false/auto is the old spelling of bf16/fp32/auto
    "precision": "fp32",
    # the frozen teacher's forward: fp32 | bf16 | auto (bf16 where the hardware computes it); config.yaml records
    # the choice. bf16 changes the targets, so a resumed run keeps it (docs/teacher-cost.md)
    "teacher_precision": "fp32",
    # the frozen teacher's forward through torch.compile: equal outputs to float rounding, x1.2-1.4 on a CPU for the
    # paper-size teacher after a one-time compilation of tens of seconds (docs/teacher-cost.md)
    "teacher_compile": False,
    "channels_last": False,
    "compile": False,
    "knn_every": 0,  # steps between kNN monitor evaluations (0 = only at the end)
    "knn_k": 200,
    "knn_t": 0.1,
    "knn_cap": KNN_CAP_FRACTION,  # k <= floor(knn_cap x the bank's smallest class); 0 = no cap (eval/knn.py)
    "knn_bank": 10000,  # at most this many train images in the kNN memory bank
    "final_eval": True,  # kNN of the final backbone (the run summary); linear probes: `sns eval`
    "log_every": 10,
    "loggers": ["tensorboard", "jsonl"],  # + mlflow, wandb (extras `squeezespan[mlflow]`, `[wandb]`): docs/tracking.md
    "ckpt_every": 500,
    "keep_ckpts": 2,
    "num_workers": 2,  # only for streamed (folder) datasets
    "seed": 0,
    "device": "auto",
}


# ---- validation: every value is checked before the run directory is touched


def _check_split(cfg: dict[str, Any], n_syn: int) -> None:
    """Each part of the batch a method uses needs 2+ images: BatchNorm and the var/cov terms are batch statistics."""
    B, syn_ratio = cfg["batch_size"], cfg["syn_ratio"]
    for part, n, used in (("synthetic", n_syn, syn_ratio > 0), ("real", B - n_syn, syn_ratio < 1)):
        if used and n < 2:
            raise SnsError(
                f"batch_size={B} with syn_ratio={syn_ratio} gives {n} {part} image(s) per step; "
                "the batch statistics need at least 2: raise batch_size"
            )
    if cfg.get("teacher_bank", 0) and syn_ratio > 0:  # refused here, before minutes of sampling the bank
        check_bank_size(cfg["teacher_bank"], n_syn)


# What a resumed run may change (key=value on --resume; the rest decides what the run trains and is refused):
# the budget, logging and checkpoints, evaluation, the hardware and precision, where data and teacher are found
# (the teacher is compared by its weights' checksum instead).
RESUME_FREE_KEYS = frozenset(
    {
        "steps",
        "epochs",
        "log_every",
        "ckpt_every",
        "keep_ckpts",
        "knn_every",
        "knn_k",
        "knn_t",
        "knn_cap",
        "knn_bank",
        "final_eval",
        "monitor_split",
        "test_split",
        "num_workers",
        "device",
        "bf16",
        "precision",
        "channels_last",
        "compile",
        "teacher_compile",
        "loggers",
        "data_root",
        "teacher",
        "teacher_weights",
    }
)


def resume_free_keys(cfg: dict[str, Any]) -> frozenset[str]:
    """What a resumed run of ``cfg`` may change: RESUME_FREE_KEYS, but teacher_compile only with an fp32 teacher.

    Compiled and plain fp32 teachers differ by float rounding (images 6e-06, taps 2e-06 relative on the paper-size
    teacher); in bf16 by bf16 rounding (taps 0.3-0.9% relative, about 60% of what bf16 changes against fp32), and
    teacher_precision is not resumable for that reason (docs/teacher-cost.md).
    """
    if cfg.get("teacher_precision") == "bf16":
        return RESUME_FREE_KEYS - {"teacher_compile"}
    return RESUME_FREE_KEYS


def check_divisible(batch: int, n_syn: int, n_real: int, world_size: int) -> None:
    """Refuse a global batch whose synthetic and real parts do not split evenly over ``world_size`` ranks."""
    for what, n in (("batch_size", batch), ("synthetic images per step", n_syn), ("real images per step", n_real)):
        if n % world_size:
            raise SnsError(
                f"{what} = {n} does not split evenly over WORLD_SIZE={world_size} processes; pick a "
                f"batch_size whose synthetic and real parts (syn_ratio) are multiples of {world_size}"
            )


def _check_labelled(cfg: dict[str, Any], train, subset: torch.Tensor | None) -> None:
    """A method that trains on labels refuses unlabelled images (STL-10's unlabeled split: label -1)."""
    labels = train.labels if subset is None else train.labels[subset]
    unlabelled = int((labels < 0).sum())
    if unlabelled:
        raise SnsError(
            f"method {cfg['method']} trains on labels but {unlabelled} of the {len(labels)} images of "
            f"train_split={cfg['train_split'] or 'train'} are unlabelled; pick a labelled split"
        )


def real_subset(cfg: dict[str, Any], n: int) -> torch.Tensor | None:
    """The sorted indices of the ``cfg['real_subset']`` real images a run may see, None for all ``n``.

    The choice is fixed across seeds (the scarce set is one set of images), a pure function of ``n``.
    """
    if not cfg["real_subset"] or cfg["real_subset"] >= n:
        return None
    g = torch.Generator().manual_seed(12345)
    return torch.randperm(n, generator=g)[: cfg["real_subset"]].sort().values


# ---- the run: data, teacher, student, objective, optimizer


@dataclass
class Run:
    """Everything a pretraining run trains with, built from its config by ``build_run``."""

    cfg: dict[str, Any]  # the resolved config (method defaults filled in): what config.yaml records
    train: Any  # the pretraining dataset (ImageDataset or FolderDataset)
    teacher: Any  # the Teacher, None when the method uses no synthetic images (syn_ratio 0)
    student: nn.Module
    objective: Objective
    augment: Augment
    optimizer: torch.optim.Optimizer
    base_lr: float  # lr * batch_size / 256
    mean: torch.Tensor  # (1, C, 1, 1) on the device: the student normalises with these
    std: torch.Tensor
    settings: dict[str, Any]  # the objective's resolved keyword arguments (syn_ratio, proj_layers, ...)
    n_syn: int  # synthetic images per step (global batch)
    n_real: int  # real images per step (global batch)
    stream: RealStream | None  # the real images (and labels) of each step; None when n_real is 0
    total_steps: int

    def encoder(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The student on [0, 1] images: resized to the run's resolution, normalised, channels_last and compiled
        as the config asks (compiling the forward only: the state_dict keeps its plain names)."""
        cfg, mean, std = self.cfg, self.mean, self.std
        res = cfg["resolution"]
        forward = torch.compile(self.student) if cfg["compile"] else self.student

        def encode(x: torch.Tensor) -> torch.Tensor:
            if x.shape[-1] != res:
                x = F.interpolate(x, size=(res, res), mode="bilinear", align_corners=False, antialias=True)
            x = (x - mean) / std
            if cfg["channels_last"]:
                x = x.contiguous(memory_format=torch.channels_last)
            return forward(x)

        return encode


def _load_train(cfg: dict[str, Any], dataset=None):
    """The pretraining images and ``cfg`` as it records them: a dataset passed from Python becomes an ImageDataset
    at the run's resolution, and ``data`` names it ``custom:<name>@<fingerprint>`` (what a resumed run compares)."""
    if dataset is None:
        split = cfg["train_split"] or "train"
        return cfg, load_dataset(cfg["data"], root=cfg["data_root"], split=split, resolution=cfg["resolution"])
    for key, named in (("train_split", "train"), ("monitor_split", "train"), ("test_split", "test")):
        if cfg[key] not in (None, named):
            raise SnsError(
                f"{key}={cfg[key]}: splits name parts of a registered dataset; with dataset= the pretraining "
                "images are that dataset and the kNN queries are test_dataset="
            )
    train = as_image_dataset(dataset, cfg["resolution"])
    return dict(cfg, data=f"{CUSTOM_PREFIX}{train.name}@{dataset_fingerprint(train)}"), train


def _load_teacher(cfg: dict[str, Any], train, device: torch.device):
    if not cfg["teacher"]:
        raise SnsError(
            f"method {cfg['method']} (syn_ratio={cfg['syn_ratio']}) needs --teacher "
            "(a `sns train-gan` run dir, stylegan2-pkl:PATH or module:factory)"
        )
    teacher = load_teacher(
        cfg["teacher"],
        weights=cfg["teacher_weights"],
        taps=cfg["taps"],
        tap_w=cfg["tap_w"],
        device=device,
        precision=resolve_teacher_precision(cfg["teacher_precision"], device),
        compile=cfg.get("teacher_compile", False),
    )
    if teacher.image_shape[0] != train.channels:
        raise SnsError(
            f"--teacher makes {teacher.image_shape[0]}-channel images but dataset {cfg['data']} has "
            f"{train.channels} channels; train the teacher on the same data"
        )
    return teacher  # a teacher at another resolution is fine: the encoder resizes its images for the student


def _resolve_splits(cfg: dict[str, Any]) -> dict[str, Any]:
    """The dataset splits a run uses, named: null train/monitor splits are "train", a null test split "test"."""
    return dict(
        cfg,
        train_split=cfg["train_split"] or "train",
        monitor_split=cfg["monitor_split"] or "train",
        test_split=cfg["test_split"] or "test",
    )


def build_run(cfg: dict[str, Any], device: torch.device, dataset=None) -> Run:
    """Data, teacher, student, objective and optimizer of a run (shared by ``pretrain``, tests and benchmarks).

    Args:
        cfg: a config over PRETRAIN_DEFAULTS' keys (not modified; ``Run.cfg`` is its resolved copy).
        device: the training device.
        dataset: the pretraining images instead of ``cfg['data']``: a map-style torch Dataset of (image, label)
            or an ImageDataset (``data.as_image_dataset``); ``Run.cfg['data']`` records ``custom:<name>@<sha>``.

    Returns:
        The Run. The student and objective are initialised from ``torch.manual_seed(cfg['seed'])``, student first.
    """
    cfg = apply_aliases(cfg, PRETRAIN_DEFAULTS, "pretrain config")  # bf16=true from a Python caller: precision
    cfg = resolve_method(cfg)  # refuses an unknown method or bad method settings
    cfg = _resolve_splits(cfg)
    settings = method_settings(cfg)
    check_pretrain_config(cfg)  # `sns pretrain` also runs it before it takes the run directory
    cfg, train = _load_train(cfg, dataset)
    B = cfg["batch_size"]
    n_syn = int(round(cfg["syn_ratio"] * B))
    _check_split(cfg, n_syn)
    subset = real_subset(cfg, len(train))
    cls = METHODS[cfg["method"]][0]
    if cls.needs_labels:
        _check_labelled(cfg, train, subset)
    teacher = _load_teacher(cfg, train, device) if cfg["syn_ratio"] > 0 else None
    stream = RealStream(train, B - n_syn, cfg["seed"], subset) if B - n_syn > 0 else None
    n_pool = len(subset) if subset is not None else len(train)
    total = cfg["steps"] or max(1, int(round(cfg["epochs"] * max(1, n_pool // B))))

    torch.manual_seed(cfg["seed"])
    student = build_student(
        cfg["arch"],
        cfg["variant"],
        cfg["width"],
        in_channels=train.channels,
        arch_kwargs=cfg.get("arch_kwargs"),
        resolution=cfg["resolution"],
    ).to(device)
    tap_channels = teacher.feature_channels if teacher is not None else []
    objective = build_objective(cfg, student.feature_dim, tap_channels, num_classes=train.num_classes).to(device)
    if cfg["channels_last"]:
        student = student.to(memory_format=torch.channels_last)
    augment = Augment(AugmentConfig.from_dict(cfg["augment"]), channels=train.channels, resolution=cfg["resolution"])
    lr = cfg["lr"] * B / 256
    params = list(student.parameters()) + list(objective.parameters())
    optimizer = torch.optim.SGD(params, lr=lr, momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
    mean = torch.tensor(train.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(train.std, device=device).clamp_min(STD_FLOOR).view(1, -1, 1, 1)  # constant channel: std 0
    return Run(
        cfg=cfg,
        train=train,
        teacher=teacher,
        student=student,
        objective=objective,
        augment=augment.to(device),
        optimizer=optimizer,
        base_lr=lr,
        mean=mean,
        std=std,
        settings=settings,
        n_syn=n_syn,
        n_real=B - n_syn,
        stream=stream,
        total_steps=total,
    )


# ---- monitor and export


class KnnMonitor:
    """The kNN monitor of a pretraining run: weighted kNN top-1/top-5 (knn_k, knn_t) of the student's features.

    The memory bank is the labelled monitor split (at most ``knn_bank`` images, a fixed seeded choice), the
    queries the test split; both are loaded on first use. For a dataset passed from Python the queries are ``test``
    and the bank the labelled images of ``train``. As an ``engine.fit`` callback it evaluates every
    ``knn_every`` steps before the last (the last is the run's final evaluation, done after export).
    k is capped by the bank's smallest class as in `sns eval` (``knn_cap``, default KNN_CAP_FRACTION, see
    eval/knn.py). In-training points extract features in bf16 where the run trains in bf16 (fp32 for fp16 and
    fp32 runs); the final evaluation in fp32, the precision of `sns eval`, so that a curve ends at the value
    `sns eval` gives for the same bank. Each result names its k, t, bank and precision (``bf16``).

    Args:
        cfg: the run config.
        train: the pretraining dataset (reused as the bank when the monitor split is the train split).
        student: the backbone to evaluate (left in eval mode; fit puts it back into train mode).
        device: where features are extracted.
        test: the kNN queries of a run on a dataset passed from Python (an ImageDataset), else None.
    """

    def __init__(self, cfg: dict[str, Any], train, student: nn.Module, device: torch.device, test=None):
        self.cfg, self.train, self.student, self.device = cfg, train, student, device
        self.bank = self.test = None
        self.custom_test = test
        self.history: list[dict[str, float]] = []

    def _load(self) -> None:
        cfg = self.cfg
        if self.custom_test is not None:
            self.test = self.custom_test
            labelled = self.train.labels >= 0
            bank = self.train if bool(labelled.all()) else self.train.subset(torch.nonzero(labelled).flatten())
        else:
            self.test = load_dataset(
                cfg["data"], root=cfg["data_root"], split=cfg["test_split"] or "test", resolution=cfg["resolution"]
            )
            monitor = cfg["monitor_split"] or "train"
            bank = (
                self.train
                if monitor == (cfg["train_split"] or "train")
                else load_dataset(cfg["data"], root=cfg["data_root"], split=monitor, resolution=cfg["resolution"])
            )
        if len(bank) > cfg["knn_bank"] and hasattr(bank, "subset"):  # a fixed subset, chosen once per run
            g = torch.Generator().manual_seed(0)
            bank = bank.subset(torch.randperm(len(bank), generator=g)[: cfg["knn_bank"]])
        self.bank = bank

    @torch.no_grad()
    def evaluate(self, bf16: bool = False) -> dict[str, Any]:
        """kNN accuracy of the student now, in percent, and how it was made.

        Returns:
            ``{"top1", "top5", "k" (used), "t", "knn_k", "cap", "rule", "bank", "smallest_class", "bf16"}``.
            ``bf16=False`` (the default: the final evaluation) is the precision of `sns eval`.
        """
        if self.test is None:
            self._load()
        cfg = self.cfg
        cap = cfg["knn_cap"]
        f_tr, y_tr = extract_features(self.student, self.bank, device=self.device, bf16=bf16)
        f_te, y_te = extract_features(self.student, self.test, device=self.device, bf16=bf16)
        acc = knn_eval(f_tr, y_tr, f_te, y_te, k=cfg["knn_k"], t=cfg["knn_t"], cap=cap)
        acc = dict(acc, **knn_settings(cfg["knn_k"], cfg["knn_t"], y_tr, cap), bf16=bool(bf16))
        self.history.append(acc)
        return acc

    def __call__(self, done: int, total: int) -> dict[str, float] | None:
        every = self.cfg["knn_every"]
        if not every or done % every or done == total:
            return None
        acc = self.evaluate(bf16=self.cfg["precision"] == "bf16")  # in training: the run's bf16
        return {"knn_top1": acc["top1"], "knn_top5": acc["top5"], "knn_k": acc["k"]}


def export_run_backbone(cfg: dict[str, Any], student: nn.Module, train, run_dir: str | Path) -> Path:
    """Write ``run_dir/backbone.safetensors`` (+ .json): the student with what it expects (input, mean/std).

    Returns:
        The path of the safetensors file.
    """
    meta = dict(  # arch, arch_kwargs, variant and width: the student's own (export_backbone)
        in_channels=train.channels,
        resolution=cfg["resolution"],
        mean=list(train.mean),
        std=[max(s, STD_FLOOR) for s in train.std],
        feature_dim=student.feature_dim,
        method=cfg["method"],
        dataset=cfg["data"],
    )
    return export_backbone(student, Path(run_dir) / "backbone.safetensors", meta)[0]


# ---- pretrain


def pretrain(
    cfg: dict[str, Any],
    run_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], Any] = print,
    stop_after: int | None = None,
    dataset=None,
    test_dataset=None,
) -> dict[str, Any]:
    """Train a student with ``cfg['method']`` into ``run_dir``; returns a summary (steps, time, final metrics).

    Under torchrun every process calls it; rank 0 alone writes, logs, evaluates and exports.

    Args:
        cfg: a config over PRETRAIN_DEFAULTS' keys (``resolve_config(PRETRAIN_DEFAULTS, "pretrain", ...)``).
        run_dir: the run directory (config.yaml, metrics.jsonl, tb/, checkpoints/, backbone.safetensors).
        resume: continue from the newest good checkpoint in run_dir (bit-identical to an uninterrupted run).
        progress: a progress bar.
        log: rank 0's messages.
        stop_after: checkpoint and return after that many steps as if interrupted (time-sliced runs, tests).
        dataset: your own pretraining images instead of ``cfg['data']`` (docs/python-api.md): a map-style torch
            Dataset of (image, label), image a (C, H, W) tensor, uint8 or float in [0, 1], or a PIL image; or an
            ImageDataset. Held in memory at ``cfg['resolution']``; mean/std are computed from it; config.yaml
            records ``data: custom:<name>@<fingerprint>``, and ``resume`` needs the same images passed again.
        test_dataset: the kNN monitor's queries for ``dataset`` (same kind; the bank is the labelled images of
            ``dataset``). Without it the kNN monitor and final evaluation are off (knn_every=0, final_eval=false).

    Returns:
        The summary also written to summary.json; ``{"interrupted": True, "step": s}`` when stopped early.
    """
    cfg = apply_aliases(cfg, PRETRAIN_DEFAULTS, "pretrain config")
    if test_dataset is not None and dataset is None:
        raise SnsError("test_dataset= goes with dataset=; a registered dataset's kNN queries are its test_split")
    world = setup(cfg["device"])
    opened: list[MetricsLogger] = []  # a run that raises ends its tracker runs as failed
    try:
        data = (dataset, test_dataset)
        return _pretrain(cfg, Path(run_dir), resume, progress, log, stop_after, world, opened, data)
    except BaseException:
        for logger in opened:
            logger.close("failed")
        raise
    finally:
        world.close()


def _pretrain(
    cfg, run_dir: Path, resume: bool, progress: bool, log, stop_after, world: World, opened: list, data=(None, None)
) -> dict[str, Any]:
    if not world.is_main:
        log = _silent  # one voice: rank 0 reports for the whole run
    if data[0] is not None and data[1] is None and (cfg["knn_every"] or cfg["final_eval"]):
        log("dataset= without test_dataset=: no kNN queries, so knn_every=0 and final_eval=false")
        cfg = dict(cfg, knn_every=0, final_eval=False)
    # rank 0's config is the run's config (a bare --resume reads config.yaml, which only rank 0's disk may hold)
    # what runs is what config.yaml records: this process's device (cuda:LOCAL_RANK under torchrun) and precision
    run = build_run(decide_precision(dict(cfg, device=str(world.device)), world, log), world.device, data[0])
    test = _custom_test(run, data[1])
    cfg = run.cfg
    if world.size > 1:
        check_divisible(cfg["batch_size"], run.n_syn, run.n_real, world.size)
    identity = dict(cfg, teacher_sha256=tensors_sha256(run.teacher.generator) if run.teacher is not None else None)
    run_files = RunDir(run_dir, world, keep=cfg["keep_ckpts"], log=log, identity=identity, free=resume_free_keys(cfg))
    run_files.prepare()
    start = begin(run_files, run.student, run.objective, run.optimizer, cfg["seed"], resume)
    if start.path is not None:
        log(f"resumed from {start.path} at step {start.step}/{run.total_steps}")
    run_files.write_config(cfg)
    logger = MetricsLogger(
        run_dir, world.is_main, resume_step=start.resume_step, loggers=cfg["loggers"], config=cfg, kind="pretrain"
    )
    opened.append(logger)
    bank = _teacher_bank(run, run_dir, world, log)
    inputs = partial(_inputs, run, run.encoder(), world, bank, labels=run.objective.needs_labels)
    monitor = KnnMonitor(cfg, run.train, run.student, world.device, test)
    result = fit(
        run.student,
        run.objective,
        run.optimizer,
        inputs,
        run_files,
        logger,
        start,
        total=run.total_steps,
        base_lr=run.base_lr,
        batch_size=cfg["batch_size"],
        warmup_steps=cfg["warmup_steps"],
        grad_clip=cfg["grad_clip"],
        precision=cfg["precision"],
        log_every=cfg["log_every"],
        ckpt_every=cfg["ckpt_every"],
        stop_after=stop_after,
        callbacks=[monitor],
        progress=progress,
        desc=cfg["method"],
        log=log,
    )
    if result.interrupted or not world.is_main:
        logger.close("interrupted")
        if result.interrupted:
            return {"interrupted": True, "step": result.step, "signal": result.reason}
        return {"method": cfg["method"], "steps": run.total_steps, "rank": world.rank}
    return _finish(run, run_dir, start, result, monitor, logger)


def _custom_test(run: Run, test_dataset):
    """The kNN queries of a run on a Python dataset: ``test_dataset`` at the run's resolution and channels,
    normalised with the train images' mean/std; refused before the run directory is touched."""
    if test_dataset is None:
        return None
    train = run.train
    if not bool((train.labels >= 0).any()) and (run.cfg["knn_every"] or run.cfg["final_eval"]):
        raise SnsError(
            "dataset= has no labelled images, so the kNN monitor has no memory bank: give it labels, or "
            "drop test_dataset= (or set knn_every=0 final_eval=false)"
        )
    res = run.cfg["resolution"]
    test = as_image_dataset(test_dataset, res, train.channels, train.mean, train.std, split="test", what="test_dataset")
    if not bool((test.labels >= 0).all()):
        raise SnsError("test_dataset: every image needs a label (the kNN monitor scores its predictions)")
    return test


def _inputs(run: Run, encode, world: World, bank: TeacherBank | None, step: int, labels: bool = False):
    return step_inputs(
        run.cfg, step, run.stream, run.teacher, run.n_syn, world.device, run.augment, encode, world, bank, labels
    )


def _teacher_bank(run: Run, run_dir: Path, world: World, log) -> TeacherBank | None:
    n = run.cfg.get("teacher_bank", 0)
    if n and run.n_syn:
        return prepare_bank(run.cfg, run.teacher, run_dir, world, log)
    if n:
        log(f"teacher_bank={n} ignored: method {run.cfg['method']} uses no teacher images (syn_ratio=0)")
    return None


def _finish(run: Run, run_dir: Path, start, result, monitor: KnnMonitor, logger: MetricsLogger) -> dict[str, Any]:
    """Rank 0 after the last step: export, the final kNN evaluation, summary.json."""
    cfg = run.cfg
    # train_time_s sums every segment of a resumed run; img_per_s is this segment's rate. Millisecond
    # resolution: a segment of a few tiny steps is not "0.0 s"
    summary: dict[str, Any] = {
        "method": cfg["method"],
        "steps": run.total_steps,
        "train_time_s": round(result.train_time_s, 3),
        "segment_time_s": round(result.segment_s, 3),
        "resumed_at": start.step,
        "img_per_s": round(result.images / max(1e-9, result.segment_s), 1),
    }
    summary["export"] = str(export_run_backbone(cfg, run.student, run.train, run_dir))
    if cfg["final_eval"]:
        acc = monitor.evaluate()
        logger.log(run.total_steps, {"knn_top1": acc["top1"], "knn_top5": acc["top5"]})
        summary["knn"] = acc
    exported = Path(summary["export"])
    logger.log_artifact("backbone", [exported, exported.with_suffix(".json")])
    logger.close()
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _silent(*args, **kwargs) -> None:
    return None
