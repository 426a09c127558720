"""The dataset registry and its one entry point `load_dataset`, the in-memory ImageDataset, batching and info."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..errors import SnsError
from .folder import FolderDataset
from .pixels import channel_stats, convert_channels, resize_uint8
from .readers import CIFAR, STL10_URL, RawSplit, read_cifar, read_digits, read_idx_split, read_stl10

DATA_ROOT_ENV = "SNS_DATA_ROOT"
# config.yaml's `data:` of a run trained on a dataset passed from Python (pretrain(cfg, run, dataset=...)):
# custom:<name>@<fingerprint>, a record of what ran, not a name load_dataset can load
CUSTOM_PREFIX = "custom:"
FASHION_MNIST_DEBIAN = "/usr/share/datasets/fashion-mnist"


def data_root() -> Path:
    """Where datasets are looked for when no root is given: $SNS_DATA_ROOT, else ./data."""
    return Path(os.environ.get(DATA_ROOT_ENV) or "data").expanduser()


class ImageDataset:
    """A labelled (or unlabeled) image set held as uint8 (N, C, H, W) tensors at `resolution`.

    `images` is the whole set as one tensor. For splits that include STL-10's 100k unlabeled images
    that part stays a lazy, file-backed memmap view and is resized/converted batch by batch in `take`
    (which `batches` and `ds[i]` use); touching `images` then materialises it (N*C*R*R bytes, 2.9 GB
    for train+unlabeled at 96 px), except for the plain `unlabeled` split at native size, whose
    `images` is the zero-copy memmap view itself.
    """

    def __init__(
        self,
        name: str,
        split: str,
        parts: Sequence[torch.Tensor],
        labels: torch.Tensor,
        classes: list[str],
        mean: tuple[float, ...],
        std: tuple[float, ...],
        channels: int,
        resolution: int,
        source: str = "",
        storage: str = "memory",
    ):
        self.name = name
        self.split = split
        self.labels = labels
        self.classes = list(classes)
        self.num_classes = len(self.classes)
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.channels = channels
        self.resolution = resolution
        self.source = source
        self.storage = storage
        self._parts = list(parts)
        sizes = [p.shape[0] for p in self._parts]
        self._starts = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
        if self._starts[-1] != labels.shape[0]:
            raise ValueError(f"{name}/{split}: {self._starts[-1]} images but {labels.shape[0]} labels")
        self._images: torch.Tensor | None = None

    def _fit(self, x: torch.Tensor) -> torch.Tensor:
        # contiguous first: a gather from the column-major STL memmap view comes back transposed in memory
        return convert_channels(resize_uint8(x.contiguous(), self.resolution), self.channels).contiguous()

    def take(self, index: torch.Tensor) -> torch.Tensor:
        """uint8 (len(index), C, R, R) images at the given positions, read only from where they live."""
        index = torch.as_tensor(index, dtype=torch.int64)
        if len(self._parts) == 1:
            return self._fit(self._parts[0][index])
        out = torch.empty((index.shape[0], self.channels, self.resolution, self.resolution), dtype=torch.uint8)
        for part, lo, hi in zip(self._parts, self._starts, self._starts[1:]):
            inside = (index >= lo) & (index < hi)
            if bool(inside.any()):
                out[inside] = self._fit(part[index[inside] - lo])
        return out

    def subset(self, index: torch.Tensor) -> ImageDataset:
        """The same dataset restricted to ``index`` (reads only those images, e.g. from STL-10's memmap)."""
        index = torch.as_tensor(index, dtype=torch.int64)
        return ImageDataset(
            self.name,
            self.split,
            [self.take(index)],
            self.labels[index],
            self.classes,
            self.mean,
            self.std,
            self.channels,
            self.resolution,
            source=self.source,
        )

    @property
    def images(self) -> torch.Tensor:
        if self._images is None:
            target = (self.channels, self.resolution, self.resolution)
            if len(self._parts) == 1 and tuple(self._parts[0].shape[1:]) == target:
                self._images = self._parts[0]
            else:
                out = torch.empty((len(self),) + target, dtype=torch.uint8)
                for start in range(0, len(self), 4096):
                    out[start : start + 4096] = self.take(torch.arange(start, min(start + 4096, len(self))))
                self._images = out
        return self._images

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {self.name}/{self.split} of size {n}")
        i = i % n
        return self.take(torch.tensor([i]))[0], int(self.labels[i])

    def __repr__(self) -> str:
        return (
            f"ImageDataset({self.name}/{self.split}: {len(self)} x {self.channels}x{self.resolution}x"
            f"{self.resolution}, {self.num_classes} classes, {self.storage})"
        )


# ----------------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class DatasetSpec:
    """What `load_dataset` knows about one dataset name."""

    name: str
    description: str
    splits: tuple[str, ...]  # () = any split name (folder)
    native_resolution: int | None  # None = per image (folder)
    default_resolution: int | None
    channels: int
    where: str  # default location, for messages and `sns data info`
    how_to_get: str
    read: Callable[..., RawSplit] | None
    options: tuple[str, ...] = ()


_MNIST_DIRS = ("", "raw", "MNIST/raw", "mnist", "mnist/raw")
_FASHION_DIRS = ("", "raw", "FashionMNIST/raw", "fashion-mnist", "fashion-mnist/raw")
MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
_MNIST_HOW = (
    "put train-/t10k-images-idx3-ubyte.gz and train-/t10k-labels-idx1-ubyte.gz from "
    "https://ossci-datasets.s3.amazonaws.com/mnist/ (or yann.lecun.com/exdb/mnist) in DIR/mnist "
    "and pass --root DIR"
)
_FASHION_HOW = (
    f"install them with `apt-get install dataset-fashion-mnist` (files land in {FASHION_MNIST_DEBIAN}) "
    "or put the four *-ubyte.gz files of https://github.com/zalandoresearch/fashion-mnist in a "
    "folder and pass --root DIR"
)

DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(
        "digits",
        "scikit-learn's bundled 8x8 handwritten digits, upsampled (bilinear)",
        ("train", "test"),
        8,
        32,
        1,
        "bundled with scikit-learn",
        "nothing to do: it ships with scikit-learn",
        lambda roots, split: read_digits(split),
    ),
    "mnist": DatasetSpec(
        "mnist",
        "MNIST handwritten digits (IDX files)",
        ("train", "test"),
        28,
        None,
        1,
        f"$SNS_DATA_ROOT or ./data, sub-folder one of: {', '.join(repr(d) for d in _MNIST_DIRS)}",
        _MNIST_HOW,
        lambda roots, split: read_idx_split("mnist", roots, _MNIST_DIRS, split, MNIST_CLASSES, _MNIST_HOW),
    ),
    "fashion-mnist": DatasetSpec(
        "fashion-mnist",
        "Zalando Fashion-MNIST (IDX files)",
        ("train", "test"),
        28,
        None,
        1,
        f"{FASHION_MNIST_DEBIAN} (Debian package dataset-fashion-mnist), then $SNS_DATA_ROOT or ./data",
        _FASHION_HOW,
        lambda roots, split: read_idx_split(
            "fashion-mnist", roots, _FASHION_DIRS, split, FASHION_MNIST_CLASSES, _FASHION_HOW
        ),
    ),
    "cifar10": DatasetSpec(
        "cifar10",
        "CIFAR-10 (python pickle batches)",
        ("train", "test"),
        32,
        None,
        3,
        f"$SNS_DATA_ROOT or ./data, holding {CIFAR['cifar10']['dir']}/",
        f"download {CIFAR['cifar10']['url']}",
        lambda roots, split: read_cifar("cifar10", roots, split),
    ),
    "cifar100": DatasetSpec(
        "cifar100",
        "CIFAR-100 (python pickles; labels='fine' (100) or 'coarse' (20))",
        ("train", "test"),
        32,
        None,
        3,
        f"$SNS_DATA_ROOT or ./data, holding {CIFAR['cifar100']['dir']}/",
        f"download {CIFAR['cifar100']['url']}",
        lambda roots, split, labels="fine": read_cifar("cifar100", roots, split, labels),
        ("labels",),
    ),
    "stl10": DatasetSpec(
        "stl10",
        "STL-10 (binary; unlabeled = 100k images kept as a lazy memmap)",
        ("train", "test", "unlabeled", "train+unlabeled"),
        96,
        None,
        3,
        "$SNS_DATA_ROOT or ./data, holding stl10_binary/",
        f"download {STL10_URL}",
        lambda roots, split: read_stl10(roots, split),
    ),
    "folder": DatasetSpec(
        "folder",
        "images in class sub-folders (labelled) or one flat folder (unlabeled), streamed",
        (),
        None,
        None,
        3,
        "--root DIR (required)",
        "pass --root DIR",
        None,
    ),
}
_ALIASES = {
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "cifar-10": "cifar10",
    "cifar-100": "cifar100",
    "stl-10": "stl10",
}


def get_spec(name: str) -> DatasetSpec:
    """The registry entry for `name` (case-insensitive, a few aliases), or an SnsError listing valid names."""
    key = str(name).strip().lower()
    if key.startswith(CUSTOM_PREFIX):
        raise SnsError(
            f"data={name}: that run trained on a dataset passed from Python, which no name loads; pass the same "
            "dataset object again (pretrain(cfg, run_dir, resume=True, dataset=...)) or a registered --data"
        )
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise SnsError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    return DATASETS[key]


def _roots(spec: DatasetSpec, root: str | Path | None) -> list[Path]:
    if root is not None:
        return [Path(root).expanduser()]
    if spec.name == "fashion-mnist":
        return [Path(FASHION_MNIST_DEBIAN), data_root()]
    return [data_root()]


def _check_resolution(resolution: object) -> int:
    value = None
    if not isinstance(resolution, bool):
        try:
            value = int(str(resolution).strip())
        except ValueError:
            value = None
    if value is None or not 1 <= value <= 4096:
        raise SnsError(f"resolution={resolution!r}: expected an integer number of pixels between 1 and 4096")
    return value


# Per-channel statistics of a train split, so loading the test split after the train split does not read
# the train files again. Entries are re-validated against the files' size and mtime.
_STATS_CACHE: dict[tuple, tuple[tuple, tuple[float, ...], tuple[float, ...]]] = {}


def _file_stamp(files: Sequence[Path]) -> tuple:
    return tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)


def _train_stats(
    spec: DatasetSpec, raw: RawSplit, split: str, resolution: int, channels: int, options: dict
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    key = (spec.name, raw.source, resolution, channels)
    cached = _STATS_CACHE.get(key)
    if cached is not None:
        stamp, mean, std = cached
        try:
            if _file_stamp([Path(f) for f, _, _ in stamp]) == stamp:
                return mean, std
        except OSError:
            pass
    train = raw if split == "train" else spec.read([Path(raw.source)], "train", **options)  # type: ignore[misc]
    fitted = torch.cat([convert_channels(resize_uint8(p, resolution), channels) for p in train.parts])
    mean, std = channel_stats(fitted)
    _STATS_CACHE[key] = (_file_stamp(train.files), mean, std)
    return mean, std


def load_dataset(
    name: str, root: str | Path | None = None, split: str = "train", resolution: int | None = None, **kw
) -> ImageDataset | FolderDataset:
    """Load one split of a dataset as uint8 images, labels, class names and normalisation statistics.

    name: digits | mnist | fashion-mnist | cifar10 | cifar100 | stl10 | folder (see DATASETS).
    root: the folder holding the files (default: $SNS_DATA_ROOT or ./data; fashion-mnist first tries
        /usr/share/datasets/fashion-mnist from Debian's dataset-fashion-mnist); the canonical
        sub-folder (cifar-10-batches-py, cifar-100-python, stl10_binary, torchvision's
        FashionMNIST/raw or MNIST/raw) is found inside it, or root may be that folder itself.
    split: train | test; stl10 also unlabeled | train+unlabeled (labels -1 for unlabeled images).
    resolution: square output size; default the files' own size (digits: 32). Resizing is bilinear via torch
        (antialiased when shrinking), so 28 px MNIST becomes 32 px for the presets by resizing, not padding.
    kw: channels=1|3 converts grey <-> RGB; cifar100 labels='fine'|'coarse'.
    mean/std are per channel in [0, 1] units, computed from the train split at the output resolution
    and channels (for stl10, from the 5000 labelled train images), so every split shares them.

    digits split (fixed, no randomness): within each class, in scikit-learn's order, the 36 samples at
    positions floor(k * n_class / 36), k = 0..35, form the test split: 1437 train / 360 test images.
    """
    spec = get_spec(name)
    if spec.splits and split not in spec.splits:
        raise SnsError(f"{spec.name}: unknown split {split!r}; valid splits: {', '.join(spec.splits)}")
    allowed = ("channels",) + spec.options
    unknown = sorted(set(kw) - set(allowed))
    if unknown:
        raise SnsError(f"{spec.name}: unknown option(s) {', '.join(unknown)}; accepted: {', '.join(allowed)}")
    channels = kw.pop("channels", None)
    if channels is not None and channels not in (1, 3):
        raise SnsError(f"channels={channels!r}: expected 1 (grey) or 3 (RGB)")
    if resolution is not None:
        resolution = _check_resolution(resolution)

    if spec.read is None:  # folder
        if root is None:
            raise SnsError("folder dataset needs --root DIR (class sub-folders of images, or a flat folder)")
        return FolderDataset(root, split=split, resolution=resolution, channels=channels or 3, name=spec.name)

    raw = spec.read(_roots(spec, root), split, **kw)
    resolution = resolution or spec.default_resolution or int(raw.parts[0].shape[-1])
    channels = channels or spec.channels
    parts = [
        p if lazy else convert_channels(resize_uint8(p, resolution), channels).contiguous()
        for p, lazy in zip(raw.parts, raw.lazy)
    ]
    mean, std = _train_stats(spec, raw, split, resolution, channels, kw)
    storage = "+".join(dict.fromkeys("memmap" if lazy else "memory" for lazy in raw.lazy))
    return ImageDataset(
        spec.name,
        split,
        parts,
        raw.labels,
        raw.classes,
        mean,
        std,
        channels,
        resolution,
        source=raw.source,
        storage=storage,
    )


# ----------------------------------------------------------------------------------------------- batching


class _Batches:
    """An iterator of (uint8 NCHW, int64 N) batches that also knows its length."""

    def __init__(
        self, ds, batch_size: int, shuffle: bool, drop_last: bool, generator: torch.Generator | None, num_workers: int
    ):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise SnsError(f"batch_size={batch_size!r}: expected a positive integer")
        self.ds, self.batch_size, self.shuffle, self.drop_last = ds, batch_size, shuffle, drop_last
        self.generator, self.num_workers = generator, num_workers
        self._it: Iterator | None = None

    def __len__(self) -> int:
        n = len(self.ds)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> _Batches:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._it is None:
            self._it = self._tensor_batches() if isinstance(self.ds, ImageDataset) else self._loader_batches()
        return next(self._it)

    def _tensor_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        ds, n = self.ds, len(self.ds)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for b in range(len(self)):
            index = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield ds.take(index), ds.labels[index]

    def _loader_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        loader = torch.utils.data.DataLoader(
            self.ds,
            batch_size=self.batch_size,
            shuffle=self.shuffle,
            drop_last=self.drop_last,
            generator=self.generator,
            num_workers=self.num_workers,
        )
        iterator = iter(loader)
        try:
            for images, labels in iterator:
                yield images, labels.to(torch.int64)
        except SnsError as err:
            # A worker re-raises our error with its whole traceback as the message: keep the one line.
            lines = [line for line in str(err).splitlines() if line.strip()]
            last = lines[-1] if lines else ""
            marker = "SnsError: "
            raise SnsError(last.split(marker, 1)[1] if marker in last else last) from None
        finally:
            # After a worker error (or an abandoned loop) the traceback keeps the iterator alive, and its
            # eventual garbage collection would stall for seconds joining the workers: stop them now.
            shutdown = getattr(iterator, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()


def batches(
    ds: ImageDataset | FolderDataset,
    batch_size: int,
    shuffle: bool,
    drop_last: bool,
    generator: torch.Generator | None = None,
    num_workers: int = 0,
) -> _Batches:
    """Iterate (uint8 (B, C, R, R), int64 (B,)) batches over a dataset, optionally shuffled by `generator`.

    ImageDataset: tensor indexing in the calling process (num_workers is ignored, nothing to decode).
    FolderDataset: a DataLoader whose `num_workers` processes decode the files.
    """
    return _Batches(ds, batch_size, shuffle, drop_last, generator, num_workers)


# ----------------------------------------------------------------------------------------------- info


def _mib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def dataset_info(ds: ImageDataset | FolderDataset) -> dict:
    """What `sns data info` prints for one loaded split (plain, JSON-friendly values)."""
    per_image = ds.channels * ds.resolution * ds.resolution
    if ds.storage == "stream":
        storage = f"stream ({len(ds)} files decoded on access)"
    elif ds.storage == "memory":
        storage = f"memory (uint8, {_mib(len(ds) * per_image)})"
    else:
        storage = f"{ds.storage} (uint8, {_mib(len(ds) * per_image)} if materialised; memmap read lazily)"
    labelled = int((ds.labels >= 0).sum())
    return {
        "name": ds.name,
        "split": ds.split,
        "size": len(ds),
        "labelled": labelled,
        "classes": list(ds.classes),
        "num_classes": ds.num_classes,
        "channels": ds.channels,
        "resolution": ds.resolution,
        "mean": [round(m, 4) for m in ds.mean],
        "std": [round(s, 4) for s in ds.std],
        "storage": storage,
        "source": getattr(ds, "source", None) or getattr(ds, "root", ""),
    }


def describe_dataset(
    name: str, root: str | Path | None = None, resolution: int | None = None, split: str | None = None, **kw
) -> str:
    """Human-readable summary of every split of a dataset (the text of `sns data info NAME`)."""
    spec = get_spec(name)
    splits = [split] if split else [s for s in (spec.splits or ("train",)) if s != "train+unlabeled"]
    infos, problems = [], []
    for s in splits:
        try:
            infos.append(dataset_info(load_dataset(spec.name, root=root, split=s, resolution=resolution, **kw)))
        except SnsError as err:
            if not infos and s == splits[0]:
                raise
            problems.append(f"  {s:<16} not available: {err}")
    first = infos[0]
    classes = ", ".join(first["classes"][:20]) + (", ..." if first["num_classes"] > 20 else "")
    lines = [
        f"dataset     {spec.name}: {spec.description}",
        f"source      {first['source']}",
        f"classes     {first['num_classes']}" + (f": {classes}" if classes else ""),
        f"channels    {first['channels']}",
        f"resolution  {first['resolution']} px"
        + (f" (native {spec.native_resolution})" if spec.native_resolution else ""),
        f"mean        {tuple(first['mean'])}",
        f"std         {tuple(first['std'])}",
        "splits",
    ]
    for info in infos:
        lines.append(
            f"  {info['split']:<16} {info['size']:>7} images, {info['labelled']:>7} labelled, {info['storage']}"
        )
    return "\n".join(lines + problems)
