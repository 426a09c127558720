"""Batched feature extraction from a frozen backbone over a dataset (uint8 images in, float32 features out)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..data import ImageDataset, batches
from ..data import normalize as normalize_images
from ..engine.device import autocast
from ..errors import SnsError


def iter_batches(
    dataset, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None, num_workers: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(uint8 NCHW, int64 N) batches, in order unless ``shuffle`` (then ordered by ``generator``).

    ImageDataset and streamed datasets go through :func:`squeezespan.data.batches`; any other object with
    in-memory ``images``/``labels`` tensors (a subset view, a test fixture) is sliced directly, which is
    far faster than a per-item DataLoader.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise SnsError(f"eval batch_size={batch_size!r}: expected a positive integer")
    images = None if isinstance(dataset, ImageDataset) else getattr(dataset, "images", None)
    if not isinstance(images, torch.Tensor):
        yield from batches(
            dataset, batch_size, shuffle=shuffle, drop_last=False, generator=generator, num_workers=num_workers
        )
        return
    n = images.shape[0]
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        yield images[idx], dataset.labels[idx].long()


def module_device(module, default: str = "cpu") -> torch.device:
    """The device a module's parameters (or buffers) live on; ``default`` if it has none."""
    if isinstance(module, nn.Module):
        for t in list(module.parameters()) + list(module.buffers()):
            return t.device
    return torch.device(default)


class frozen:
    """Context: put a module in eval mode and give it back in the mode it was in (train/eval per submodule)."""

    def __init__(self, module):
        self.module = module
        self.modes = []

    def __enter__(self):
        if isinstance(self.module, nn.Module):
            self.modes = [(m, m.training) for m in self.module.modules()]
            self.module.eval()
        return self.module

    def __exit__(self, *exc):
        for m, was_training in self.modes:
            m.training = was_training
        return False


def extract_features(
    backbone,
    dataset,
    *,
    batch_size: int = 256,
    device=None,
    bf16: bool = False,
    normalize: bool = True,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    num_workers: int = 0,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``backbone`` over every image of ``dataset`` in order; return (features float32 (N, D) cpu, labels int64).

    Images are uint8 -> float [0, 1] -> normalised with ``mean``/``std`` (default: the dataset's) unless
    ``normalize=False``. ``device=None`` runs where the backbone's parameters are; an explicit device moves
    the backbone there. The backbone runs in eval mode under no_grad and gets its previous mode back.
    """
    dev = module_device(backbone) if device is None else torch.device(device)
    if device is not None and isinstance(backbone, nn.Module):
        backbone.to(dev)
    if normalize:
        mean = getattr(dataset, "mean", None) if mean is None else mean
        std = getattr(dataset, "std", None) if std is None else std
        if mean is None or std is None:
            raise SnsError("extract_features: the dataset has no mean/std; pass mean= and std= or normalize=False")
    feats, labels = [], []
    n_total = len(dataset)
    bar = _progress(n_total, "features", progress)
    # no_grad rather than inference_mode: the features feed an autograd-trained linear probe afterwards.
    with frozen(backbone), torch.no_grad():
        for images, y in iter_batches(dataset, batch_size, num_workers=num_workers):
            x = images.to(dev, non_blocking=True).float().div_(255)
            if normalize:
                x = normalize_images(x, mean, std)
            with autocast(dev, bf16):
                f = backbone(x)
            if f.ndim != 2 or f.shape[0] != x.shape[0]:
                raise SnsError(
                    f"extract_features: the backbone returned shape {tuple(f.shape)} for a batch "
                    f"of {x.shape[0]} images; expected pooled features (N, D)"
                )
            if not torch.isfinite(f).all():  # NaN features would give a probe at chance, or a traceback in L-BFGS
                raise SnsError(
                    f"extract_features: the backbone's features are NaN or infinite on images "
                    f"{sum(len(b) for b in labels)}-{sum(len(b) for b in labels) + len(y) - 1} of "
                    f"{getattr(dataset, 'name', 'the dataset')!r}: its weights are damaged or the run diverged"
                )
            feats.append(f.float().cpu())
            labels.append(y.long().cpu())
            bar.update(x.shape[0])
    bar.close()
    if not feats:
        raise SnsError(f"extract_features: dataset {getattr(dataset, 'name', '')!r} is empty")
    return torch.cat(feats), torch.cat(labels)


def _progress(total: int, desc: str, enabled: bool):
    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, leave=False)
