"""A user's own dataset from Python: any map-style ``torch.utils.data.Dataset`` of (image, label) held as an
in-memory ``ImageDataset`` (``as_image_dataset``), and the fingerprint that names its contents in a run's config
(``dataset_fingerprint``), so that ``pretrain(..., dataset=...)`` records what it trained on and a resumed run can
tell the same data from other data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch

from ..errors import SnsError
from .datasets import CUSTOM_PREFIX, ImageDataset
from .folder import FolderDataset
from .pixels import channel_stats, convert_channels, resize_uint8

__all__ = ["CUSTOM_PREFIX", "as_image_dataset", "dataset_fingerprint"]

_HASH_CHUNK = 4096  # images per chunk when hashing: bounded memory for memory-mapped sets


def _image(item, i: int, what: str) -> torch.Tensor:
    """One image as uint8 (C, H, W): a tensor or array (C, H, W) or (H, W), uint8 or float in [0, 1], or a PIL image."""
    if hasattr(item, "convert") and hasattr(item, "mode"):  # a PIL image (torchvision datasets without transform)
        item = torch.from_numpy(np.array(item.convert("L" if item.mode in ("1", "L", "LA") else "RGB")))
        item = item.unsqueeze(0) if item.dim() == 2 else item.permute(2, 0, 1)
    elif isinstance(item, np.ndarray):
        item = torch.from_numpy(item.copy())
    if not isinstance(item, torch.Tensor):
        raise SnsError(
            f"{what}[{i}]: image is a {type(item).__name__}; expected a tensor (C, H, W) (uint8, or float in [0, 1]) "
            "or a PIL image"
        )
    x = item.detach().cpu()
    if x.dim() == 2:
        x = x.unsqueeze(0)
    if x.dim() != 3 or x.shape[0] not in (1, 3):
        hint = " (channels last? use x.permute(2, 0, 1))" if x.dim() == 3 and x.shape[-1] in (1, 3) else ""
        raise SnsError(f"{what}[{i}]: image of shape {tuple(x.shape)}; expected (C, H, W) with C = 1 or 3{hint}")
    if x.dtype == torch.uint8:
        return x
    if not torch.is_floating_point(x):
        raise SnsError(f"{what}[{i}]: image of dtype {x.dtype}; expected uint8 (0..255) or float in [0, 1]")
    if not bool(torch.isfinite(x).all()) or float(x.min()) < 0.0 or float(x.max()) > 1.0:
        raise SnsError(
            f"{what}[{i}]: float image with values outside [0, 1] (min {float(x.min()):.3g}, max {float(x.max()):.3g});"
            " give images in [0, 1], not normalised ones (the student normalises with the dataset's mean/std)"
        )
    return x.float().mul(255).round_().to(torch.uint8)


def _label(label, i: int, what: str) -> int:
    if label is None:
        return -1
    if isinstance(label, torch.Tensor) and label.numel() == 1 and not torch.is_floating_point(label):
        return int(label.item())
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
        return int(label)
    raise SnsError(f"{what}[{i}]: label {label!r}; expected an integer class index (-1 or None = unlabelled)")


def _classes(dataset, labels: torch.Tensor) -> list[str]:
    n = int(labels.max()) + 1 if len(labels) and int(labels.max()) >= 0 else 0
    named = getattr(dataset, "classes", None)
    if isinstance(named, Sequence) and not isinstance(named, str) and len(named) >= n:
        return [str(c) for c in named]
    return [str(c) for c in range(n)]


def as_image_dataset(
    dataset,
    resolution: int,
    channels: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    name: str | None = None,
    split: str = "train",
    what: str = "dataset",
) -> ImageDataset:
    """A user's dataset as an in-memory ``ImageDataset`` at ``resolution`` (what ``pretrain(dataset=...)`` trains on).

    An ``ImageDataset`` already at ``resolution`` and ``channels`` is returned as it is. Any other map-style
    dataset (``len(ds)``, ``ds[i]``) is read once, item by item, and held as uint8 (N x C x R x R bytes): ``ds[i]``
    is ``(image, label)`` or an image alone (unlabelled). An image is a tensor or array (C, H, W) or (H, W), uint8 or
    float in [0, 1], or a PIL image; all images share one square size and one channel count (1 or 3), and are
    resized to ``resolution`` (bilinear, antialiased when shrinking). A label is an int (-1 or None = unlabelled).

    Args:
        dataset: the user's dataset.
        resolution: the run's square image size.
        channels: convert to 1 (grey) or 3 (RGB) channels; None keeps the images' own.
        mean, std: the per-channel normalisation to record (a test set takes its train set's); None computes them
            from these images, as ``load_dataset`` does for a train split.
        name: the ImageDataset's name; default the dataset's class name.
        split: the ImageDataset's split name.
        what: how messages name the dataset (``dataset``, ``test_dataset``).

    Returns:
        The ImageDataset.
    """
    if isinstance(dataset, FolderDataset):
        raise SnsError(
            f"{what}: a FolderDataset streams its files from disk; train on it with data=folder "
            f"data_root={dataset.root} (and resolution=...) instead of passing it"
        )
    if isinstance(dataset, ImageDataset) and dataset.resolution == resolution and channels in (None, dataset.channels):
        if mean is None:
            return dataset
        d = dataset
        return ImageDataset(
            d.name, d.split, [d.images], d.labels, d.classes, mean, std or d.std, d.channels, d.resolution, d.source
        )
    try:
        n = len(dataset)
    except TypeError:
        raise SnsError(
            f"{what}: a {type(dataset).__name__} has no len(); pass a map-style torch.utils.data.Dataset "
            "(__len__ and __getitem__ returning (image, label))"
        ) from None
    if n == 0:
        raise SnsError(f"{what}: the {type(dataset).__name__} is empty")
    images: torch.Tensor | None = None
    labels = torch.empty(n, dtype=torch.int64)
    for i in range(n):
        item = dataset[i]
        image, label = (item[0], item[1]) if isinstance(item, (tuple, list)) and len(item) >= 2 else (item, None)
        x = _image(image, i, what)
        if images is None:
            if x.shape[1] != x.shape[2]:
                raise SnsError(
                    f"{what}[0]: image of {x.shape[1]}x{x.shape[2]} pixels; images must be square: crop or resize "
                    "them in the dataset (e.g. torchvision.transforms.CenterCrop)"
                )
            images = torch.empty((n, *x.shape), dtype=torch.uint8)
        elif x.shape != images.shape[1:]:
            raise SnsError(
                f"{what}[{i}]: image of shape {tuple(x.shape)} but {what}[0] is {tuple(images.shape[1:])}; "
                "every image needs one size and channel count"
            )
        images[i] = x
        labels[i] = _label(label, i, what)
    assert images is not None
    images = resize_uint8(images, resolution)
    if channels is not None:
        images = convert_channels(images, channels)
    if mean is None or std is None:
        mean, std = channel_stats(images)
    return ImageDataset(
        name or type(dataset).__name__,
        split,
        [images.contiguous()],
        labels,
        _classes(dataset, labels),
        mean,
        std,
        int(images.shape[1]),
        resolution,
        source=f"python:{type(dataset).__module__}.{type(dataset).__qualname__}",
    )


def dataset_fingerprint(ds: ImageDataset) -> str:
    """The first 16 hex digits of the sha256 of a dataset's images (uint8, in order), labels and shape.

    Two datasets with the same fingerprint hold the same images with the same labels at the same size.
    """
    h = hashlib.sha256(f"{len(ds)}x{ds.channels}x{ds.resolution}x{ds.resolution}".encode())
    for start in range(0, len(ds), _HASH_CHUNK):
        h.update(ds.take(torch.arange(start, min(start + _HASH_CHUNK, len(ds)))).contiguous().numpy().tobytes())
    h.update(ds.labels.to(torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
