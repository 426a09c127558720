"""What one training step hands an objective: ``StepInputs``, the real images (and labels) of a step from
``RealStream``, and ``step_inputs``, which fills them with this rank's share of the step's global batch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import SnsError
from .distributed import World

__all__ = ["RealStream", "StepInputs", "step_inputs"]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@dataclass
class StepInputs:
    """Everything one training step offers a method; the engine fills only what the method asked for.

    Images are float in [0, 1], (N, C, H, W), on the training device, NOT yet augmented or normalised.
    """

    real: torch.Tensor | None = None  # real images of this step (syn part excluded)
    syn: torch.Tensor | None = None  # teacher images x_syn
    taps: list[torch.Tensor] = field(default_factory=list)  # teacher's tapped features for x_syn
    labels: torch.Tensor | None = None  # int64 labels of ``real``; only for objectives with needs_labels
    augment: Callable[[torch.Tensor], torch.Tensor] = _identity  # per-sample batched augmentation
    encode: Callable[[torch.Tensor], torch.Tensor] = _identity  # student backbone on [0,1] images
    teacher: Any = None  # the Teacher, for methods that need G itself (encode)


class RealStream:
    """Real images of each step, a pure function of (seed, step): resuming needs no iterator state.

    Epoch e uses permutation randperm(N, seed + e); step s takes the next ``per_step`` indices, so the data
    order of a resumed run is exactly that of an uninterrupted one.

    Args:
        dataset: an ``ImageDataset`` (``take``) or a streamed folder dataset (``ds[i] -> (image, label)``);
            both have ``labels``.
        per_step: real images per step (the whole global batch's real part).
        seed: the run's seed.
        subset: indices of the images pretraining may see (``real_subset``); None = all of them.
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
        """Dataset indices of the ``per_step`` real images of ``step``."""
        epoch, i = divmod(step, self.steps_per_epoch)
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 100003 + epoch)
            self._perm, self._perm_epoch = self.index[torch.randperm(len(self.index), generator=g)], epoch
        return self._perm[i * self.per_step : (i + 1) * self.per_step]

    def batch(self, step: int, device, part: slice = slice(None)) -> torch.Tensor:
        """The real images of ``step`` in [0, 1]; ``part`` is this rank's slice of them (all in one process)."""
        idx = self.indices(step)[part]
        if hasattr(self.ds, "take"):  # in memory or memory-mapped (STL-10 unlabeled): reads only these images
            x = self.ds.take(idx)
        else:  # streamed folder dataset: decode this step's files
            x = torch.stack([self.ds[int(i)][0] for i in idx])
        return x.to(device, non_blocking=True).float().div_(255)

    def labels(self, step: int, device, part: slice = slice(None)) -> torch.Tensor:
        """The int64 labels of the same images as ``batch(step, device, part)`` (-1 = unlabelled)."""
        idx = self.indices(step)[part]
        return self.ds.labels[idx].to(device=device, dtype=torch.int64, non_blocking=True)


def step_inputs(
    cfg: dict[str, Any],
    step: int,
    stream: RealStream | None,
    teacher,
    n_syn: int,
    device: torch.device,
    augment: Callable,
    encode: Callable,
    world: World | None = None,
    bank=None,
    labels: bool = False,
) -> StepInputs:
    """This rank's share of the step's global batch: a contiguous slice of its real images (and their labels
    when ``labels``) and of its latents (with a teacher bank: of the step's bank indices, whose taps come pooled).

    Args:
        cfg: the run config (``seed`` fixes the teacher latents of each step).
        step: steps done before this one.
        stream: the real images (None when the method uses none).
        teacher: the Teacher (``draw_z``, ``draw_c``, ``run``), or None.
        n_syn: synthetic images in the global batch.
        device: the training device.
        augment, encode: put in the StepInputs for the objective.
        world: this process's place in the run (a world of one if None).
        bank: a TeacherBank replacing the live teacher, or None.
        labels: fill ``StepInputs.labels`` (objectives with ``needs_labels``).

    Returns:
        The StepInputs of this rank.
    """
    world = world or World(device=device)
    inputs = StepInputs(augment=augment, encode=encode, teacher=teacher)
    if stream is not None:
        part = world.shard(stream.per_step)
        inputs.real = stream.batch(step, device, part)
        if labels:
            inputs.labels = stream.labels(step, device, part)
    if n_syn and bank is not None:
        inputs.syn, inputs.taps = bank.batch(step, n_syn, device, world.shard(n_syn))
    elif n_syn:
        # teacher latents are a function of (seed, step): identical after a resume, independent across steps.
        # All n_syn latents are drawn (cheap) and each rank runs G on its slice only, so the union over
        # ranks is exactly the synthetic batch of a single process.
        g = torch.Generator().manual_seed((cfg["seed"] * 1_000_003 + step) % (2**63))
        z, c = teacher.draw_z(n_syn, generator=g), teacher.draw_c(n_syn, g)
        part = world.shard(n_syn)
        inputs.syn, inputs.taps = teacher.run(z[part], None if c is None else c[part])
    return inputs
