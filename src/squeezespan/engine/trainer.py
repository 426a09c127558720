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

from ..data.pixels import STD_FLOOR
from ..errors import SnsError
from .checkpoint import (
    checkpoint_path,
    list_checkpoints,
    load_latest,
    prune_checkpoints,
    remove_stale_temporaries,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .distributed import Trainable, World, convert_batchnorm, setup, wrap_ddp
from .logging import MetricsLogger
from .rundir import autocast, decide_bf16, save_config

# Every knob of `sns pretrain`, with its default, in one place (nanoGPT style). null = "the method decides".
PRETRAIN_DEFAULTS: dict[str, Any] = {
    "method": "sns",  # sns | squeeze | kd | vicreg | simsiam
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
    "arch": "resnet18",
    "variant": "cifar",  # cifar (3x3 conv1, no max-pool) | imagenet
    "width": 1.0,
    "syn_ratio": None,  # share of the batch that is synthetic (sns 0.5, squeeze/kd 1.0, ssl 0.0)
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
    "augment": None,  # AugmentConfig fields (filled below from squeezespan.data.augment)
    "bf16": False,
    "channels_last": False,
    "compile": False,
    "knn_every": 0,  # steps between kNN monitor evaluations (0 = only at the end)
    "knn_k": 200,
    "knn_t": 0.1,
    "knn_bank": 10000,  # at most this many train images in the kNN memory bank
    "final_eval": True,  # kNN of the final backbone (the run summary); linear probes: `sns eval`
    "log_every": 10,
    "ckpt_every": 500,
    "keep_ckpts": 2,
    "num_workers": 2,  # only for streamed (folder) datasets
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
    for key in ("steps", "warmup_steps", "ckpt_every", "knn_every", "real_subset", "weight_decay", "grad_clip"):
        if cfg[key] < 0:
            raise SnsError(f"{key}={cfg[key]} must be >= 0")
    if cfg["log_every"] < 1:
        raise SnsError(f"log_every={cfg['log_every']} must be >= 1")
    if not 0 <= cfg["momentum"] < 1:
        raise SnsError(f"momentum={cfg['momentum']} must be in [0, 1)")
    if cfg["width"] <= 0:
        raise SnsError(f"width={cfg['width']} must be > 0")
    bank = cfg.get("teacher_bank", 0)
    if isinstance(bank, bool) or not isinstance(bank, int) or bank < 0:
        raise SnsError(
            f"teacher_bank={bank!r} must be an integer >= 0 (0 = run the teacher live every step, "
            "N > 0 = sample N teacher images and their pooled taps once and reuse them)"
        )


def _check_split(cfg: dict[str, Any], syn_ratio: float) -> None:
    """Each part of the batch a method uses needs 2+ images: BatchNorm and the var/cov terms are batch statistics."""
    B = cfg["batch_size"]
    n_syn = int(round(syn_ratio * B))
    for part, n, used in (("synthetic", n_syn, syn_ratio > 0), ("real", B - n_syn, syn_ratio < 1)):
        if used and n < 2:
            raise SnsError(
                f"batch_size={B} with syn_ratio={syn_ratio} gives {n} {part} image(s) per step; "
                "the batch statistics need at least 2: raise batch_size"
            )
    bank = cfg.get("teacher_bank", 0)
    if bank and syn_ratio > 0:  # refused here, before minutes of sampling the bank
        from .bank import check_bank_size

        check_bank_size(bank, n_syn)


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
            raise SnsError(
                f"batch needs {per_step} real images per step but the dataset has only {len(self.index)}; "
                "lower batch_size or use more data"
            )
        self.steps_per_epoch = len(self.index) // per_step
        self._perm_epoch, self._perm = -1, None

    def indices(self, step: int) -> torch.Tensor:
        epoch, i = divmod(step, self.steps_per_epoch)
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 100003 + epoch)
            self._perm, self._perm_epoch = self.index[torch.randperm(len(self.index), generator=g)], epoch
        return self._perm[i * self.per_step : (i + 1) * self.per_step]

    def batch(self, step: int, device, part: slice = slice(None)) -> torch.Tensor:
        """The real images of ``step``; ``part`` is this rank's slice of them (all of them in one process)."""
        idx = self.indices(step)[part]
        if hasattr(self.ds, "take"):  # in memory or memory-mapped (STL-10 unlabeled): reads only these images
            x = self.ds.take(idx)
        else:  # streamed folder dataset: decode this step's files
            x = torch.stack([self.ds[int(i)][0] for i in idx])
        return x.to(device, non_blocking=True).float().div_(255)


def build_run(cfg: dict[str, Any], device: torch.device):
    """Data, teacher, student, objective and optimizer of a run (shared by training and tests)."""
    from ..data import Augment, AugmentConfig, load_dataset, normalize
    from ..methods import METHODS, build_objective, method_settings
    from ..models import build_student

    if cfg["method"] in METHODS and METHODS[cfg["method"]][0].needs_w and not cfg["tap_w"]:
        cfg = {**cfg, "tap_w": True}  # e.g. encode predicts w: tap it without asking the user
    settings = method_settings(cfg)
    if cfg.get("teacher_bank", 0) and cfg["method"] in METHODS and METHODS[cfg["method"]][0].needs_w:
        raise SnsError(
            f"teacher_bank={cfg['teacher_bank']}: method {cfg['method']} runs the teacher G itself "
            "(reconstruction through G from the latent w) at every step, which a bank cannot replace; "
            "set teacher_bank=0"
        )
    train = load_dataset(
        cfg["data"], root=cfg["data_root"], split=cfg["train_split"] or "train", resolution=cfg["resolution"]
    )
    _validate(cfg, len(train))
    _check_split(cfg, settings["syn_ratio"])
    teacher = None
    tap_channels: list[int] = []
    if settings["syn_ratio"] > 0:
        from ..teachers.load import load_teacher

        if not cfg["teacher"]:
            raise SnsError(
                f"method {cfg['method']} (syn_ratio={settings['syn_ratio']}) needs --teacher "
                "(a `sns train-gan` run dir, stylegan2-pkl:PATH or module:factory)"
            )
        teacher = load_teacher(
            cfg["teacher"], weights=cfg["teacher_weights"], taps=cfg["taps"], tap_w=cfg["tap_w"], device=device
        )
        tc = teacher.image_shape[0]
        if tc != train.channels:
            raise SnsError(
                f"--teacher makes {tc}-channel images but dataset {cfg['data']} has {train.channels} "
                "channels; train the teacher on the same data"
            )
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
    std = torch.tensor(train.std, device=device).clamp_min(STD_FLOOR).view(1, -1, 1, 1)  # constant channel: std 0
    return dict(
        train=train,
        teacher=teacher,
        student=student,
        objective=objective,
        augment=augment,
        optimizer=optimizer,
        base_lr=lr,
        mean=mean,
        std=std,
        settings=settings,
        normalize=normalize,
    )


def _subset(cfg, n: int) -> torch.Tensor | None:
    if not cfg["real_subset"] or cfg["real_subset"] >= n:
        return None
    g = torch.Generator().manual_seed(12345)  # fixed across seeds: the scarce set is one set of images
    return torch.randperm(n, generator=g)[: cfg["real_subset"]].sort().values


def pretrain(
    cfg: dict[str, Any],
    run_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    log=print,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train a student with ``cfg['method']``; returns a summary (steps, time, final metrics).

    ``stop_after``: checkpoint and return after that many steps as if interrupted (time-sliced runs, tests).
    """
    world = setup(cfg["device"])
    try:
        return _pretrain(cfg, Path(run_dir), resume, progress, log, stop_after, world)
    finally:
        world.close()


def _pretrain(cfg, run_dir: Path, resume: bool, progress: bool, log, stop_after, world: World) -> dict[str, Any]:
    if not world.is_main:
        log = _silent  # one voice: rank 0 reports for the whole run
    # rank 0's config is the run's config (a bare --resume reads config.yaml, which only rank 0's disk may hold)
    cfg = decide_bf16(cfg, world, log)
    device = world.device
    run = build_run(cfg, device)
    train, teacher, student, objective = run["train"], run["teacher"], run["student"], run["objective"]
    augment, optimizer, settings = run["augment"], run["optimizer"], run["settings"]
    B = cfg["batch_size"]
    n_syn = int(round(settings["syn_ratio"] * B))
    n_real = B - n_syn
    if world.size > 1:
        _check_divisible(B, n_syn, n_real, world.size)
        # BatchNorm statistics of the global batch (student and heads), as one process with batch B sees them
        convert_batchnorm(student, device)
        convert_batchnorm(objective, device)
    subset = _subset(cfg, len(train))
    n_pool = len(subset) if subset is not None else len(train)
    stream = RealStream(train, n_real, cfg["seed"], subset) if n_real > 0 else None
    steps_per_epoch = max(1, n_pool // B)
    total = cfg["steps"] or max(1, int(round(cfg["epochs"] * steps_per_epoch)))

    ckpt_dir = run_dir / "checkpoints"
    if world.is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(ckpt_dir)  # half-written files of a killed run
    start, earlier_s = 0, 0.0
    state = _resume_state(ckpt_dir, world, log) if resume else None
    if state is not None:
        # training time of the segments before this resume (checkpoints carry it), so train_time_s is the run's
        earlier_s = float(state.get("train_time_s", 0.0))
        student.load_state_dict(state["student"])
        objective.load_state_dict(state["objective"])
        optimizer.load_state_dict(state["optimizer"])
        start = int(state["step"])
        _restore_rng(state, world, cfg["seed"], start, log)
        log(f"resumed from {state['path']} at step {start}/{total}")
    else:
        # rank 0 draws exactly what a single process draws; other ranks get their own augmentation stream
        torch.manual_seed(cfg["seed"] + 1 + 1_000_003 * world.rank)
    if world.is_main:
        save_config(run_dir, cfg)
    logger = MetricsLogger(run_dir, enabled=world.is_main, resume_step=start if state is not None else None)
    model = wrap_ddp(Trainable(student, objective), world)
    bank = None
    if cfg.get("teacher_bank", 0) and n_syn:
        from .bank import prepare_bank

        bank = prepare_bank(cfg, teacher, run_dir, world, log)
    elif cfg.get("teacher_bank", 0):
        log(f"teacher_bank={cfg['teacher_bank']} ignored: method {cfg['method']} uses no teacher images (syn_ratio=0)")

    mean, std = run["mean"], run["std"]
    res = cfg["resolution"]
    # compile the student's forward only: its state_dict (checkpoints, export) keeps the plain names
    student_fwd = torch.compile(student) if cfg["compile"] else student

    def encode(x):
        if x.shape[-1] != res:
            x = torch.nn.functional.interpolate(
                x, size=(res, res), mode="bilinear", align_corners=False, antialias=True
            )
        x = (x - mean) / std
        if cfg["channels_last"]:
            x = x.contiguous(memory_format=torch.channels_last)
        return student_fwd(x)

    def save(step):
        rngs = world.gather(rng_state())  # collective: every rank calls save at the same steps
        if not world.is_main:
            return
        _check_finite_weights(step, student, objective, ckpt_dir)
        state = dict(
            step=step,
            student=student.state_dict(),
            objective=objective.state_dict(),
            optimizer=optimizer.state_dict(),
            rng=rngs[0],
            world_size=world.size,
            train_time_s=earlier_s + time.perf_counter() - t0,
        )
        if world.size > 1:
            state["rng_ranks"] = rngs
        save_checkpoint(checkpoint_path(ckpt_dir, step), state)
        prune_checkpoints(ckpt_dir, cfg["keep_ckpts"])

    from tqdm.auto import tqdm

    student.train()
    objective.train()
    bar = tqdm(
        total=total,
        initial=start,
        disable=not (progress and world.is_main),
        desc=f"{cfg['method']}",
        unit="step",
        dynamic_ncols=True,
    )
    t0, imgs, step = time.perf_counter(), 0, start
    knn_history = []
    try:
        with _Stop() as stop:
            for step in range(start, total):
                lr = _lr_at(step, total, run["base_lr"], cfg["warmup_steps"])
                for g in optimizer.param_groups:
                    g["lr"] = lr
                inputs = _step_inputs(cfg, step, stream, teacher, n_syn, device, augment, encode, world, bank)
                with autocast(device, cfg["bf16"]):
                    loss, logs = model(inputs)
                # one small all-reduce per step: every rank stops at the same step, for a NaN anywhere or a signal
                flags = world.sum_(
                    torch.tensor([float(not torch.isfinite(loss)), float(stop.requested is not None)], device=device)
                )
                if flags[0] > 0:
                    raise SnsError(
                        f"loss became {loss.item() if world.size == 1 else 'non-finite'} at step {step + 1}; "
                        f"stopped, last good checkpoint kept in {ckpt_dir} (try a lower lr or warmup_steps)"
                    )
                stop_now = bool(flags[1] > 0) if world.size > 1 else None
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg["grad_clip"]:
                    torch.nn.utils.clip_grad_norm_(
                        [p for g in optimizer.param_groups for p in g["params"]], cfg["grad_clip"]
                    )
                optimizer.step()
                imgs += B
                done = step + 1
                if done % cfg["log_every"] == 0 or done == total:
                    rate = imgs / max(1e-9, time.perf_counter() - t0)
                    scalars = _mean_over_ranks({"loss": loss.detach(), **logs}, world)
                    logger.log(done, {"loss": scalars.pop("loss"), "lr": lr, "img_per_s": rate, **scalars})
                    bar.set_postfix(loss=f"{loss.item():.3f}", img_s=f"{rate:.0f}")
                if cfg["knn_every"] and done % cfg["knn_every"] == 0 and done != total and world.is_main:
                    acc = knn_monitor(cfg, student, run, device)
                    knn_history.append({"step": done, **acc})
                    logger.log(done, {"knn_top1": acc["top1"], "knn_top5": acc["top5"]})
                    student.train()
                bar.update(1)
                stopping = stop_now if stop_now is not None else stop.requested is not None
                if (cfg["ckpt_every"] and done % cfg["ckpt_every"] == 0) or done == total:
                    save(done)
                elif stopping or (stop_after is not None and done == stop_after and done != total):
                    save(done)
                if stopping or (stop_after is not None and done == stop_after and done != total):
                    why = stop.requested or ("a signal to another rank" if stopping else "stop_after")
                    log(f"\n{why}: checkpoint saved at step {done}; continue with --resume")
                    return {"interrupted": True, "step": done}
    finally:
        bar.close()
    world.barrier()
    if not world.is_main:
        logger.close()
        return {"method": cfg["method"], "steps": total, "rank": world.rank}
    segment_s = time.perf_counter() - t0
    # train_time_s sums every segment of a resumed run; img_per_s is this segment's rate. Millisecond
    # resolution: a segment of a few tiny steps is not "0.0 s"
    summary: dict[str, Any] = {
        "method": cfg["method"],
        "steps": total,
        "train_time_s": round(earlier_s + segment_s, 3),
        "segment_time_s": round(segment_s, 3),
        "resumed_at": start,
        "img_per_s": round(imgs / max(1e-9, segment_s), 1),
    }
    export_path = _export(cfg, student, train, run_dir)
    summary["export"] = str(export_path)
    if cfg["final_eval"]:
        acc = knn_monitor(cfg, student, run, device)
        logger.log(total, {"knn_top1": acc["top1"], "knn_top5": acc["top5"]})
        summary["knn"] = acc
    logger.close()
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _step_inputs(cfg, step, stream, teacher, n_syn, device, augment, encode, world: World | None = None, bank=None):
    """This rank's share of the step's global batch: a contiguous slice of its real images and of its latents
    (with a teacher bank: of the step's bank indices, whose taps come pooled)."""
    from ..methods import StepInputs

    world = world or World(device=device)
    inputs = StepInputs(augment=augment, encode=encode, teacher=teacher)
    if stream is not None:
        inputs.real = stream.batch(step, device, world.shard(stream.per_step))
    if n_syn and bank is not None:
        inputs.syn, inputs.taps = bank.batch(step, n_syn, device, world.shard(n_syn))
    elif n_syn:
        # teacher latents are a function of (seed, step): identical after a resume, independent across steps.
        # All n_syn latents are drawn (cheap) and each rank runs G on its slice only, so the union over
        # ranks is exactly the synthetic batch of a single process.
        g = torch.Generator().manual_seed((cfg["seed"] * 1_000_003 + step) % (2**63))
        z, c = teacher.draw_z(n_syn, generator=g), teacher.draw_c(n_syn, g)
        part = world.shard(n_syn)
        images, taps = teacher.run(z[part], None if c is None else c[part])
        inputs.syn, inputs.taps = images, taps
    return inputs


def _silent(*args, **kwargs) -> None:
    return None


def _check_divisible(batch: int, n_syn: int, n_real: int, world_size: int) -> None:
    for what, n in (("batch_size", batch), ("synthetic images per step", n_syn), ("real images per step", n_real)):
        if n % world_size:
            raise SnsError(
                f"{what} = {n} does not split evenly over WORLD_SIZE={world_size} processes; pick a "
                f"batch_size whose synthetic and real parts (syn_ratio) are multiples of {world_size}"
            )


def _resume_state(ckpt_dir: Path, world: World, log) -> dict[str, Any] | None:
    """Rank 0 reads the newest good checkpoint and hands it to every rank; None if no checkpoint was written yet."""
    msg = None
    state = None
    if world.is_main:
        found = load_latest(ckpt_dir, map_location="cpu", warn=log)
        if found is not None:
            state, path = found
            state["path"] = str(path)
        elif list_checkpoints(ckpt_dir):
            msg = f"--resume: no usable checkpoint in {ckpt_dir} (every one is corrupted or truncated)"
        else:
            # killed before its first checkpoint: resuming is starting over, which gives the same run
            log(f"--resume: no checkpoint in {ckpt_dir} yet; starting from step 0")
    box = world.broadcast({"state": state, "error": msg})
    if box["error"]:
        raise SnsError(box["error"])
    return box["state"]


def _restore_rng(state: dict[str, Any], world: World, seed: int, step: int, log) -> None:
    ranks = state.get("rng_ranks") or [state["rng"]]
    if len(ranks) == world.size:
        set_rng_state(ranks[world.rank])
        return
    # a run resumed on another number of processes: weights, optimizer and data order continue exactly,
    # only the augmentation draws cannot (they were per-rank streams)
    log(
        f"warning: checkpoint was written by {len(ranks)} process(es), this run has {world.size}: "
        "augmentation randomness is reseeded, so the run is not bit-identical to an uninterrupted one"
    )
    torch.manual_seed((seed + 1) * 1_000_003 + step * 7919 + world.rank)


def _check_finite_weights(step: int, student, objective, ckpt_dir: Path) -> None:
    """Never let non-finite weights replace the last good checkpoint (a finite loss can still give inf weights)."""
    for name, module in (("student", student), ("objective", objective)):
        for key, t in module.state_dict().items():
            if t.is_floating_point() and not torch.isfinite(t).all():
                raise SnsError(
                    f"{name} weight {key} became non-finite after step {step}; stopped without saving, "
                    f"last good checkpoint kept in {ckpt_dir} (try a lower lr or warmup_steps)"
                )


def _mean_over_ranks(scalars: dict[str, Any], world: World) -> dict[str, Any]:
    """Logged scalars averaged over ranks (one all-reduce), so rank 0's log speaks for the global batch."""
    if world.size == 1:
        return dict(scalars)
    keys = list(scalars)
    vec = torch.stack([torch.as_tensor(scalars[k], dtype=torch.float32, device=world.device).reshape(()) for k in keys])
    vec = world.sum_(vec) / world.size
    return {k: v for k, v in zip(keys, vec.tolist())}


@torch.no_grad()
def knn_monitor(cfg, student, run, device) -> dict[str, float]:
    """Weighted kNN top-1/top-5 (k, t from cfg) of the backbone: train subset as bank, test split as queries."""
    from ..data import load_dataset
    from ..eval import extract_features, knn_eval

    if "test" not in run:
        run["test"] = load_dataset(
            cfg["data"], root=cfg["data_root"], split=cfg["test_split"] or "test", resolution=cfg["resolution"]
        )
        monitor = cfg["monitor_split"] or "train"
        run["bank"] = (
            run["train"]
            if monitor == (cfg["train_split"] or "train")
            else load_dataset(cfg["data"], root=cfg["data_root"], split=monitor, resolution=cfg["resolution"])
        )
        bank = run["bank"]
        if len(bank) > cfg["knn_bank"] and hasattr(bank, "subset"):  # a fixed subset, chosen once per run
            g = torch.Generator().manual_seed(0)
            run["bank"] = bank.subset(torch.randperm(len(bank), generator=g)[: cfg["knn_bank"]])
    bank, test = run["bank"], run["test"]
    f_tr, y_tr = extract_features(student, bank, device=device, bf16=cfg["bf16"])
    f_te, y_te = extract_features(student, test, device=device, bf16=cfg["bf16"])
    return knn_eval(f_tr, y_tr, f_te, y_te, k=cfg["knn_k"], t=cfg["knn_t"])


def _export(cfg, student, train, run_dir: Path) -> Path:
    from ..export import export_backbone

    meta = dict(
        arch=cfg["arch"],
        variant=cfg["variant"],
        width=cfg["width"],
        in_channels=train.channels,
        resolution=cfg["resolution"],
        mean=list(train.mean),
        std=[max(s, STD_FLOOR) for s in train.std],
        feature_dim=student.feature_dim,
        method=cfg["method"],
        dataset=cfg["data"],
    )
    return export_backbone(student, run_dir / "backbone.safetensors", meta)[0]
