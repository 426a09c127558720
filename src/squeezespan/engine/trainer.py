"""The one training loop: real-data iterator and teacher sampling in the same step, every method on top."""
from __future__ import annotations

import json
import math
import signal
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..errors import SnsError
from .checkpoint import checkpoint_path, load_latest, prune_checkpoints, rng_state, save_checkpoint, set_rng_state
from .logging import MetricsLogger
from .rundir import autocast, resolve_device, save_config

# Every knob of `sns pretrain`, with its default, in one place (nanoGPT style). null = "the method decides".
PRETRAIN_DEFAULTS: dict[str, Any] = {
    "method": "sns",                 # sns | squeeze | kd | vicreg | simsiam
    "data": "digits",                # dataset name (see `sns data info`)
    "data_root": None,
    "resolution": 32,
    "real_subset": 0,                # >0: pretraining sees only this many real images (fixed, seeded choice)
    "teacher": None,                 # teacher dir from `sns train-gan`, stylegan2-pkl:PATH, or module:factory
    "teacher_weights": None,         # weights file for a module:factory teacher
    "taps": r".*synthesis\.b(\d+)$",  # regex over the generator's module names
    "tap_w": False,                  # tap the latent w instead (latent-target rows of Table 1)
    "arch": "resnet18",
    "variant": "cifar",              # cifar (3x3 conv1, no max-pool) | imagenet
    "width": 1.0,
    "syn_ratio": None,               # share of the batch that is synthetic (sns 0.5, squeeze/kd 1.0, ssl 0.0)
    "proj_layers": None,
    "proj_hidden": 512,
    "proj_dim": 2048,
    "squeeze_depth": None,           # T_phi depth; 0 = vanilla (concatenated pooled features)
    "squeeze_hidden": 2048,
    "w_mse": 25.0,
    "w_var": None,
    "w_cov": None,
    "augment_syn": True,             # Table 5 row a: false
    "augment_real": True,
    "batch_size": 512,
    "epochs": 800.0,                 # epochs of the real train set (steps = epochs * N / batch_size)
    "steps": 0,                      # >0 overrides epochs
    "lr": 0.03,                      # base lr, scaled by batch_size / 256
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "warmup_steps": 0,
    "grad_clip": 0.0,                # 0 = off
    "augment": None,                 # AugmentConfig fields (filled below from squeezespan.data.augment)
    "bf16": False,
    "channels_last": False,
    "compile": False,
    "knn_every": 0,                  # steps between kNN monitor evaluations (0 = only at the end)
    "knn_k": 200,
    "knn_t": 0.1,
    "knn_bank": 10000,               # at most this many train images in the kNN memory bank
    "final_eval": True,              # kNN + fast linear probe of the exported backbone at the end
    "log_every": 10,
    "ckpt_every": 500,
    "keep_ckpts": 2,
    "num_workers": 2,                # only for streamed (folder) datasets
    "seed": 0,
    "device": "auto",
}


def _augment_defaults() -> dict[str, Any]:
    from ..data.augment import AugmentConfig

    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(AugmentConfig()).items()}


PRETRAIN_DEFAULTS["augment"] = _augment_defaults()


class _Stop:
    """SIGINT/SIGTERM set a flag; the loop checkpoints and exits cleanly at the end of the step."""

    def __init__(self):
        self.requested = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if self.requested is not None:  # second signal: give up at once
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _validate(cfg: dict[str, Any], n_real: int) -> None:
    for key in ("batch_size",):
        if cfg[key] < 4:
            raise SnsError(f"{key}={cfg[key]} is too small: the variance/covariance terms need a batch of at least 4")
    for key in ("lr", "epochs"):
        if not cfg[key] > 0 or not math.isfinite(cfg[key]):
            raise SnsError(f"{key}={cfg[key]} must be a positive number")
    for key in ("steps", "warmup_steps", "log_every", "ckpt_every", "knn_every", "real_subset"):
        if cfg[key] < 0:
            raise SnsError(f"{key}={cfg[key]} must be >= 0")
    if cfg["width"] <= 0:
        raise SnsError(f"width={cfg['width']} must be > 0")


def _lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warmup then cosine decay to 0 (per step; the paper decays per epoch)."""
    if warmup and step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


class RealStream:
    """Real images of each step, a pure function of (seed, step): resuming needs no iterator state.

    Epoch e uses permutation randperm(N, seed + e); step s takes the next `per_step` indices, so the data
    order of a resumed run is exactly that of an uninterrupted one.
    """

    def __init__(self, dataset, per_step: int, seed: int, subset: torch.Tensor | None = None):
        self.ds, self.per_step, self.seed = dataset, per_step, seed
        self.index = subset if subset is not None else torch.arange(len(dataset))
        if per_step > len(self.index):
            raise SnsError(f"batch needs {per_step} real images per step but the dataset has only {len(self.index)}; "
                           "lower batch_size or use more data")
        self.steps_per_epoch = len(self.index) // per_step
        self._perm_epoch, self._perm = -1, None

    def indices(self, step: int) -> torch.Tensor:
        epoch, i = divmod(step, self.steps_per_epoch)
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 100003 + epoch)
            self._perm, self._perm_epoch = self.index[torch.randperm(len(self.index), generator=g)], epoch
        return self._perm[i * self.per_step:(i + 1) * self.per_step]

    def batch(self, step: int, device) -> torch.Tensor:
        idx = self.indices(step)
        if hasattr(self.ds, "take"):  # in memory or memory-mapped (STL-10 unlabeled): reads only these images
            x = self.ds.take(idx)
        else:  # streamed folder dataset: decode this step's files
            x = torch.stack([self.ds[int(i)][0] for i in idx])
        return x.to(device, non_blocking=True).float().div_(255)


def build_run(cfg: dict[str, Any], device: torch.device):
    """Data, teacher, student, objective and optimizer of a run (shared by training and tests)."""
    from ..data import Augment, AugmentConfig, load_dataset, normalize
    from ..methods import build_objective, method_settings
    from ..models import build_student

    settings = method_settings(cfg)
    train = load_dataset(cfg["data"], root=cfg["data_root"], split="train", resolution=cfg["resolution"])
    _validate(cfg, len(train))
    teacher = None
    tap_channels: list[int] = []
    if settings["syn_ratio"] > 0:
        from ..teachers.load import load_teacher

        if not cfg["teacher"]:
            raise SnsError(f"method {cfg['method']} (syn_ratio={settings['syn_ratio']}) needs --teacher "
                           "(a `sns train-gan` run dir, stylegan2-pkl:PATH or module:factory)")
        teacher = load_teacher(cfg["teacher"], weights=cfg["teacher_weights"], taps=cfg["taps"],
                               tap_w=cfg["tap_w"], device=device)
        tc = teacher.image_shape[0]
        if tc != train.channels:
            raise SnsError(f"--teacher makes {tc}-channel images but dataset {cfg['data']} has {train.channels} "
                           "channels; train the teacher on the same data")
        # a teacher at another resolution is fine: encode() resizes its images for the student
        tap_channels = teacher.feature_channels
    torch.manual_seed(cfg["seed"])
    student = build_student(cfg["arch"], cfg["variant"], cfg["width"], in_channels=train.channels).to(device)
    objective = build_objective(cfg, student.feature_dim, tap_channels).to(device)
    if cfg["channels_last"]:
        student = student.to(memory_format=torch.channels_last)
    aug_cfg = AugmentConfig.from_dict(cfg["augment"])
    augment = Augment(aug_cfg, channels=train.channels, resolution=cfg["resolution"]).to(device)
    lr = cfg["lr"] * cfg["batch_size"] / 256
    params = list(student.parameters()) + list(objective.parameters())
    optimizer = torch.optim.SGD(params, lr=lr, momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
    mean = torch.tensor(train.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(train.std, device=device).view(1, -1, 1, 1)
    return dict(train=train, teacher=teacher, student=student, objective=objective, augment=augment,
                optimizer=optimizer, base_lr=lr, mean=mean, std=std, settings=settings, normalize=normalize)


def _subset(cfg, n: int) -> torch.Tensor | None:
    if not cfg["real_subset"] or cfg["real_subset"] >= n:
        return None
    g = torch.Generator().manual_seed(12345)  # fixed across seeds: the scarce set is one set of images
    return torch.randperm(n, generator=g)[: cfg["real_subset"]].sort().values


def pretrain(cfg: dict[str, Any], run_dir: str | Path, resume: bool = False, progress: bool = True,
             log=print, stop_after: int | None = None) -> dict[str, Any]:
    """Train a student with ``cfg['method']``; returns a summary (steps, time, final metrics).

    ``stop_after``: checkpoint and return after that many steps as if interrupted (time-sliced runs, tests).
    """
    run_dir = Path(run_dir)
    device = resolve_device(cfg["device"])
    run = build_run(cfg, device)
    train, teacher, student, objective = run["train"], run["teacher"], run["student"], run["objective"]
    augment, optimizer, settings = run["augment"], run["optimizer"], run["settings"]
    B = cfg["batch_size"]
    n_syn = int(round(settings["syn_ratio"] * B))
    n_real = B - n_syn
    subset = _subset(cfg, len(train))
    n_pool = len(subset) if subset is not None else len(train)
    stream = RealStream(train, n_real, cfg["seed"], subset) if n_real > 0 else None
    steps_per_epoch = max(1, n_pool // B)
    total = cfg["steps"] or max(1, int(round(cfg["epochs"] * steps_per_epoch)))

    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    start = 0
    if resume:
        found = load_latest(ckpt_dir, map_location=device, warn=log)
        if found is None:
            raise SnsError(f"--resume: no usable checkpoint in {ckpt_dir}")
        state, path = found
        student.load_state_dict(state["student"])
        objective.load_state_dict(state["objective"])
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        start = int(state["step"])
        log(f"resumed from {path} at step {start}/{total}")
    else:
        torch.manual_seed(cfg["seed"] + 1)
    save_config(run_dir, cfg)
    logger = MetricsLogger(run_dir, resume_step=start if resume else None)

    mean, std = run["mean"], run["std"]
    res = cfg["resolution"]

    def encode(x):
        if x.shape[-1] != res:
            x = torch.nn.functional.interpolate(x, size=(res, res), mode="bilinear", align_corners=False, antialias=True)
        x = (x - mean) / std
        if cfg["channels_last"]:
            x = x.contiguous(memory_format=torch.channels_last)
        return student(x)

    def save(step):
        state = dict(step=step, student=student.state_dict(), objective=objective.state_dict(),
                     optimizer=optimizer.state_dict(), rng=rng_state())
        save_checkpoint(checkpoint_path(ckpt_dir, step), state)
        prune_checkpoints(ckpt_dir, cfg["keep_ckpts"])

    from tqdm.auto import tqdm

    student.train()
    objective.train()
    bar = tqdm(total=total, initial=start, disable=not progress, desc=f"{cfg['method']}", unit="step", dynamic_ncols=True)
    t0, imgs, step = time.time(), 0, start
    knn_history = []
    try:
        with _Stop() as stop:
            for step in range(start, total):
                lr = _lr_at(step, total, run["base_lr"], cfg["warmup_steps"])
                for g in optimizer.param_groups:
                    g["lr"] = lr
                inputs = _step_inputs(cfg, step, stream, teacher, n_syn, device, augment, encode)
                with autocast(device, cfg["bf16"]):
                    loss, logs = objective(inputs)
                if not torch.isfinite(loss):
                    raise SnsError(f"loss became {loss.item()} at step {step}; stopped, last good checkpoint kept "
                                   f"in {ckpt_dir} (try a lower lr or warmup_steps)")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg["grad_clip"]:
                    torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]],
                                                   cfg["grad_clip"])
                optimizer.step()
                imgs += B
                done = step + 1
                if done % cfg["log_every"] == 0 or done == total:
                    rate = imgs / max(1e-9, time.time() - t0)
                    logger.log(done, {"loss": loss.detach(), "lr": lr, "img_per_s": rate,
                                      **{k: v for k, v in logs.items()}})
                    bar.set_postfix(loss=f"{loss.item():.3f}", img_s=f"{rate:.0f}")
                if cfg["knn_every"] and done % cfg["knn_every"] == 0 and done != total:
                    acc = knn_monitor(cfg, student, run, device)
                    knn_history.append({"step": done, **acc})
                    logger.log(done, {"knn_top1": acc["top1"], "knn_top5": acc["top5"]})
                    student.train()
                bar.update(1)
                if (cfg["ckpt_every"] and done % cfg["ckpt_every"] == 0) or done == total:
                    save(done)
                if stop.requested or (stop_after is not None and done == stop_after and done != total):
                    save(done)
                    log(f"\n{stop.requested or 'stop_after'}: checkpoint saved at step {done}; continue with --resume")
                    return {"interrupted": True, "step": done}
    finally:
        bar.close()
    summary: dict[str, Any] = {"method": cfg["method"], "steps": total, "train_time_s": round(time.time() - t0, 1),
                               "img_per_s": round(imgs / max(1e-9, time.time() - t0), 1)}
    export_path = _export(cfg, student, train, run_dir)
    summary["export"] = str(export_path)
    if cfg["final_eval"]:
        acc = knn_monitor(cfg, student, run, device)
        logger.log(total, {"knn_top1": acc["top1"], "knn_top5": acc["top5"]})
        summary["knn"] = acc
    logger.close()
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _step_inputs(cfg, step, stream, teacher, n_syn, device, augment, encode):
    from ..methods import StepInputs

    inputs = StepInputs(augment=augment, encode=encode, teacher=teacher)
    if stream is not None:
        inputs.real = stream.batch(step, device)
    if n_syn:
        # teacher latents are a function of (seed, step): identical after a resume, independent across steps
        images, taps = teacher.sample(n_syn, seed=(cfg["seed"] * 1_000_003 + step) % (2**63))
        inputs.syn, inputs.taps = images, taps
    return inputs


@torch.no_grad()
def knn_monitor(cfg, student, run, device) -> dict[str, float]:
    """Weighted kNN top-1/top-5 (k, t from cfg) of the backbone: train subset as bank, test split as queries."""
    from ..data import load_dataset
    from ..eval import extract_features, knn_eval

    if "test" not in run:
        run["test"] = load_dataset(cfg["data"], root=cfg["data_root"], split="test", resolution=cfg["resolution"])
    train, test = run["train"], run["test"]
    bank = train
    if len(train) > cfg["knn_bank"]:
        g = torch.Generator().manual_seed(0)
        bank = _Subset(train, torch.randperm(len(train), generator=g)[: cfg["knn_bank"]])
    f_tr, y_tr = extract_features(student, bank, device=device, bf16=cfg["bf16"])
    f_te, y_te = extract_features(student, test, device=device, bf16=cfg["bf16"])
    return knn_eval(f_tr, y_tr, f_te, y_te, k=cfg["knn_k"], t=cfg["knn_t"])


class _Subset:
    """An in-memory dataset restricted to some indices (keeps images/labels/mean/std attributes)."""

    def __init__(self, ds, idx):
        self.images, self.labels = ds.images[idx], ds.labels[idx]
        for k in ("mean", "std", "channels", "resolution", "classes", "num_classes", "name", "split"):
            setattr(self, k, getattr(ds, k))

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], int(self.labels[i])


def _export(cfg, student, train, run_dir: Path) -> Path:
    from ..export import export_backbone

    meta = dict(arch=cfg["arch"], variant=cfg["variant"], width=cfg["width"], in_channels=train.channels,
                resolution=cfg["resolution"], mean=list(train.mean), std=list(train.std),
                feature_dim=student.feature_dim, method=cfg["method"], dataset=cfg["data"])
    return export_backbone(student, run_dir / "backbone.safetensors", meta)[0]
