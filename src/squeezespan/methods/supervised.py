"""The supervised reference: the student plus a linear head, trained with cross-entropy on real labels."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from ..errors import SnsError
from .base import Objective, StepInputs


def check_syn_ratio(syn_ratio: float) -> None:
    """Supervised training uses no teacher images: only syn_ratio 0 is accepted."""
    if syn_ratio:
        raise SnsError(f"syn_ratio={syn_ratio}: method supervised trains on labelled real images only; use 0")


class Supervised(Objective):
    """logits = head(student(A(x_real))); L = cross_entropy(logits, y) over the step's real images.

    The upper bound the self-supervised rows are read against: same student, steps, lr schedule, optimizer
    and augmentation (one view per image), but the labels of the images pretraining may see. No teacher
    (syn_ratio 0). The head is trained with the student and dropped at export, as the projectors are.
    """

    needs_labels = True

    def __init__(self, student_dim: int, num_classes: int, syn_ratio: float = 0.0, **_):
        super().__init__()
        check_syn_ratio(syn_ratio)
        if num_classes < 2:
            raise SnsError(f"method supervised needs a labelled dataset with 2+ classes, got {num_classes}")
        self.head = nn.Linear(student_dim, num_classes)

    def forward(self, inputs: StepInputs):
        if inputs.labels is None:
            raise SnsError("method supervised got no labels (StepInputs.labels); the engine fills them")
        logits = self.head(inputs.encode(inputs.augment(inputs.real)))
        loss = F.cross_entropy(logits.float(), inputs.labels)
        top1 = (logits.detach().argmax(dim=1) == inputs.labels).float().mean()
        return loss, {"loss_ce": loss.detach(), "train_top1": top1 * 100}
