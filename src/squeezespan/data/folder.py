"""Image folders (class sub-folders or flat, unlabeled) streamed from disk: decoded, resized and cropped in workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import SnsError
from .pixels import channel_stats

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")
SPLIT_DIRS = ("train", "test", "val", "unlabeled")
STATS_SAMPLE = 1000


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _images_under(directory: Path) -> list[Path]:
    return sorted(
        p
        for p in directory.rglob("*")
        if _is_image(p) and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    )


def scan_folder(root: Path) -> tuple[list[Path], list[int], list[str]]:
    """(files, labels, classes) of a folder: one sub-folder per class, or images directly in root (labels -1)."""
    if not root.is_dir():
        raise SnsError(
            f"{root}: folder dataset root does not exist or is not a directory; pass --root DIR "
            f"holding class sub-folders of images or a flat folder of images"
        )
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    loose = sorted(p for p in root.iterdir() if _is_image(p))
    per_class = {d.name: _images_under(d) for d in subdirs}
    with_images = [name for name, files in per_class.items() if files]
    if with_images:
        if loose:
            raise SnsError(
                f"{root}: holds both class sub-folders and {len(loose)} loose images "
                f"(e.g. {loose[0].name}); move the loose images into a class folder or use a flat "
                f"folder only"
            )
        empty = [name for name, files in per_class.items() if not files]
        if empty:
            raise SnsError(
                f"{root / empty[0]}: class folder has no images ({', '.join(IMAGE_EXTENSIONS)}); "
                f"add images or remove the folder"
            )
        classes = sorted(per_class)
        files, labels = [], []
        for index, name in enumerate(classes):
            files += per_class[name]
            labels += [index] * len(per_class[name])
        return files, labels, classes
    if loose:
        return loose, [-1] * len(loose), []
    raise SnsError(
        f"{root}: no images found ({', '.join(IMAGE_EXTENSIONS)}); expected root/CLASS/*.png|jpg or root/*.png|jpg"
    )


def _split_dir(root: Path, split: str) -> Path:
    """root/split when root is organised as split folders (train/, test/, ...), else root itself."""
    if not root.is_dir():
        return root
    subdirs = [d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    if subdirs and all(name in SPLIT_DIRS for name in subdirs):
        if split not in subdirs:
            raise SnsError(
                f"{root}: has split folders {', '.join(sorted(subdirs))} but no '{split}'; "
                f"pick one of them with --split"
            )
        return root / split
    return root


_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def _decode_error(path: str | Path, err: BaseException) -> SnsError:
    message = " ".join(f"{type(err).__name__}: {err}".split())
    return SnsError(f"{path}: cannot decode image ({message}); delete or replace the file")


def _shorter_side(path: str) -> int:
    try:
        with Image.open(path) as img:
            return min(img.size)
    except _DECODE_ERRORS as err:
        raise _decode_error(path, err)


def _to_8bit(img: Image.Image, path: str | Path) -> Image.Image:
    """16-bit greys scaled to 8 bits: PIL's convert() would clip every value above 255 to white."""
    if img.mode == "F":
        raise SnsError(
            f"{path}: floating-point image (mode F) has no fixed value range; save it as an 8- or 16-bit image"
        )
    if not img.mode.startswith("I"):  # I;16, I;16B, ... and 32-bit I (how PIL opens 16-bit PGM)
        return img
    values = np.asarray(img, dtype=np.int64)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise SnsError(
            f"{path}: {img.mode} image with values {values.min()}..{values.max()}, outside 16 bits; "
            f"save it as an 8- or 16-bit image"
        )
    return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8))


def decode_image(path: str | Path, resolution: int, channels: int) -> torch.Tensor:
    """Decode one image file to uint8 (channels, resolution, resolution): shorter side resized, centre crop."""
    mode = "RGB" if channels == 3 else "L"
    try:
        with Image.open(path) as img:
            img.draft(mode, (resolution, resolution))  # JPEG: decode at a reduced scale >= resolution, much faster
            img = _to_8bit(img, path).convert(mode)
    except _DECODE_ERRORS as err:
        raise _decode_error(path, err)
    width, height = img.size
    scale = resolution / min(width, height)
    size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    if size != img.size:
        img = img.resize(size, Image.BILINEAR)
    left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    img = img.crop((left, top, left + resolution, top + resolution))
    array = np.array(img, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


class FolderDataset(torch.utils.data.Dataset):
    """Images under a folder, decoded on access (in DataLoader workers), so the set need not fit in memory.

    Layouts: root/CLASS/**/*.png|jpg|... (labelled, classes sorted by folder name) or root/*.png|jpg
    (unlabeled, label -1). If every sub-folder of root is a split name (train, test, val, unlabeled),
    root/SPLIT is used. Each image is converted to `channels` (3 = RGB, 1 = grey), its shorter side
    resized to `resolution` (bilinear) and centre-cropped to a square; resolution=None takes the
    shorter side of the first image. mean/std are estimated from a fixed sample of up to 1000 images
    (evenly spaced over the sorted file list), so they are identical from run to run.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        resolution: int | None = None,
        channels: int = 3,
        name: str = "folder",
    ):
        if channels not in (1, 3):
            raise SnsError(f"channels={channels}: a folder dataset is read as 1 (grey) or 3 (RGB) channels")
        self.name = name
        self.split = split
        directory = _split_dir(Path(root).expanduser(), split)
        self.root = str(directory)
        files, labels, classes = scan_folder(directory)
        self.files = [str(f) for f in files]  # plain strings: cheap to send to worker processes
        self.labels = torch.tensor(labels, dtype=torch.int64)
        self.classes = classes
        self.num_classes = len(classes)
        self.channels = channels
        if resolution is None:
            resolution = _shorter_side(self.files[0])
        self.resolution = int(resolution)
        self.storage = "stream"
        picks = np.unique(np.linspace(0, len(self.files) - 1, min(STATS_SAMPLE, len(self.files))).round().astype(int))
        sample = torch.stack([decode_image(self.files[i], self.resolution, channels) for i in picks])
        self.mean, self.std = channel_stats(sample)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return decode_image(self.files[index], self.resolution, self.channels), int(self.labels[index])
