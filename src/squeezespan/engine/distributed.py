"""Multi-process training under torchrun: the process group, each rank's share of the batch, global BatchNorm, DDP."""

from __future__ import annotations

import datetime
import inspect
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from ..errors import SnsError
from .device import resolve_device


@dataclass
class World:
    """Who this process is in the run: rank, number of processes and its device.

    A plain ``python -m squeezespan ...`` is a world of one; every method then does nothing special,
    so the single-process path stays exactly what it was.
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # we started the process group, so we end it

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that logs, evaluates, checkpoints and exports."""
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This rank's contiguous part of a global count ``n`` (a multiple of ``size``)."""
        per = n // self.size
        return slice(self.rank * per, (self.rank + 1) * per)

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        """In-place sum over ranks of a small tensor (flags, logged scalars)."""
        if self.size > 1:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (a checkpoint read by rank 0 alone: no shared disk needed)."""
        if self.size == 1:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self._object_device())
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if self.size == 1:
            return [obj]
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def _object_device(self):
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SnsError(f"environment variable {name}={raw!r} must be an integer (torchrun sets it)") from None


def launched_rank() -> int:
    """RANK set by torchrun (0 when not launched by it): usable before the process group exists."""
    return _env_int("RANK", 0)


def setup(device_spec: str | None) -> World:
    """Join the process group torchrun describes in the environment (env://); a world of one without it.

    GPU runs use NCCL on cuda:LOCAL_RANK, CPU runs use gloo.
    """
    size = _env_int("WORLD_SIZE", 1)
    if size <= 1:
        return World(device=resolve_device(device_spec))
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(var):
            raise SnsError(
                f"WORLD_SIZE={size} but {var} is not set: launch multi-process runs with torchrun "
                "(see README, 'Several processes and nodes')"
            )
    device = resolve_device(device_spec)
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise SnsError(
                f"LOCAL_RANK={local_rank} but this node has {torch.cuda.device_count()} GPUs: "
                "use --nproc_per_node <= the number of GPUs"
            )
        device = torch.device("cuda", local_rank)  # one GPU per process, whatever --device said
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        # a generous timeout: rank 0 alone runs the kNN monitor while the others wait at the next step
        dist.init_process_group(backend, init_method="env://", timeout=datetime.timedelta(hours=2))
        owns = True
    if dist.get_world_size() != size or dist.get_rank() != rank:
        raise SnsError(
            f"process group has rank {dist.get_rank()}/{dist.get_world_size()} but the environment "
            f"says RANK={rank} WORLD_SIZE={size}"
        )
    return World(rank=rank, size=size, local_rank=local_rank, device=device, owns_group=owns)


# ---- global batch statistics


class _GatherBatch(torch.autograd.Function):
    """all_gather along the batch; backward hands each rank its slice of the gradient summed over ranks.

    Every rank computes the loss of the whole global batch, but its backward reaches only its own
    samples' graph; summing the upstream gradients gives each slice world_size x its true gradient,
    which DDP's averaging over ranks brings back to exactly the gradient of the global loss.
    """

    @staticmethod
    def forward(ctx, x):
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return tuple(parts)

    @staticmethod
    def backward(ctx, *grads):
        g = torch.stack([torch.zeros_like(grads[0]) if g is None else g for g in grads]).contiguous()
        dist.all_reduce(g, op=dist.ReduceOp.SUM)
        return g[dist.get_rank()]


def gather_batch(z: torch.Tensor) -> torch.Tensor:
    """The global batch: every rank's ``z`` concatenated in rank order, gradients flowing back to each part.

    Identity in a single process. Every rank must call it with the same shape.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return z
    return torch.cat(_GatherBatch.apply(z), dim=0)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch, on any device (gloo on CPU too).

    torch's SyncBatchNorm needs a GPU; this computes each rank's mean and centred sum of squares,
    gathers them with gradients (``gather_batch``) and combines them (parallel variance formula), so the
    normalisation, its gradient and the running statistics equal one BatchNorm over the whole batch.
    Same parameters and buffers as BatchNorm{1,2,3}d: state_dicts are interchangeable.
    """

    def _check_input_dim(self, input):
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if not (self.training and distributed):
            return super().forward(x)
        self._check_input_dim(x)
        c = x.shape[1]
        dims = [0] + list(range(2, x.dim()))
        shape = [1, c] + [1] * (x.dim() - 2)
        xf = x.float()
        n = xf.numel() // c
        mean_r = xf.mean(dims)
        m2_r = (xf - mean_r.view(shape)).pow(2).sum(dims)
        count = torch.full((1,), float(n), device=x.device)
        stats = gather_batch(torch.cat([mean_r, m2_r, count])[None])  # (world, 2C + 1)
        means, m2s, counts = stats[:, :c], stats[:, c : 2 * c], stats[:, 2 * c :].detach()
        total = counts.sum()
        mean = (means * counts).sum(0) / total
        var = (m2s.sum(0) + (counts * (means - mean).pow(2)).sum(0)) / total
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
                unbiased = var * (total / (total - 1).clamp_min(1))
                self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


class GlobalBatchNormAct(GlobalBatchNorm):
    """GlobalBatchNorm, then the dropout and activation of a fused BatchNorm + activation layer (timm's
    BatchNormAct2d, in EfficientNets, RegNets, ...), which a plain conversion would silently drop. Same
    parameters, buffers and ``drop``/``act`` children as the layer it replaces."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(super().forward(x)))


_PLAIN_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def convert_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """BatchNorm layers -> global-batch ones: torch's SyncBatchNorm on GPU, GlobalBatchNorm elsewhere.

    A fused BatchNorm + activation (timm's BatchNormAct2d: ``drop`` and ``act`` children) becomes a
    GlobalBatchNormAct on any device; any other BatchNorm subclass (its own forward, which a conversion would
    lose) is a one-line SnsError naming the layer.
    """
    return _to_global_bn(module, device.type == "cuda")


def _to_global_bn(module: nn.Module, cuda: bool = False, name: str = "") -> nn.Module:
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, (GlobalBatchNorm, nn.SyncBatchNorm)
    ):
        if type(module) in _PLAIN_BN:
            kind = GlobalBatchNorm
        elif all(isinstance(getattr(module, a, None), nn.Module) for a in ("drop", "act")):
            kind = GlobalBatchNormAct
        else:
            raise SnsError(
                f"layer {name or type(module).__name__} is a {type(module).__name__}, a BatchNorm with a forward of "
                "its own that cannot be made to use the global batch over processes; train it in one process"
            )
        if cuda and kind is GlobalBatchNorm:
            return nn.SyncBatchNorm.convert_sync_batchnorm(module)  # a leaf: no children to carry over
        out = kind(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        if module.affine:
            with torch.no_grad():
                out.weight = module.weight
                out.bias = module.bias
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.training = module.training
    for child_name, child in module.named_children():
        out.add_module(child_name, _to_global_bn(child, cuda, f"{name}.{child_name}" if name else child_name))
    return out


class Trainable(nn.Module):
    """The student and the method's objective as one module, so one DDP wrapper syncs both."""

    def __init__(self, student: nn.Module, objective: nn.Module):
        super().__init__()
        self.student, self.objective = student, objective

    def forward(self, inputs):
        return self.objective(inputs)


def wrap_ddp(model: nn.Module, world: World) -> nn.Module:
    """DistributedDataParallel over all ranks (identity for one process).

    Buffers are not broadcast: the BatchNorm running statistics are global, hence already equal on all ranks.
    """
    if world.size == 1:
        return model
    ids = [world.device.index] if world.device.type == "cuda" else None
    # newer torch renamed the flag; both keep the init-time sync (the buffers start equal anyway)
    if "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters:
        return DDP(model, device_ids=ids, forward_sync_buffers=False)
    return DDP(model, device_ids=ids, broadcast_buffers=False)


def average_gradients(module: nn.Module, world: World) -> None:
    """Average ``module``'s gradients over ranks with one all-reduce (what DDP does, done by hand).

    For loops that DDP cannot follow: train-gan toggles requires_grad between G and D phases and takes
    R1's double backward, as NVIDIA's StyleGAN2-ADA loop does with the same manual reduction.
    """
    if world.size == 1:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world.size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()
