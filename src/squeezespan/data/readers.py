"""On-disk formats (sklearn digits, IDX, CIFAR python pickles, STL-10 binary) read and checked into uint8 tensors."""

from __future__ import annotations

import gzip
import importlib
import pickle
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import SnsError, one_line


@dataclass
class RawSplit:
    """One split as found on disk, before resizing: uint8 (N, C, H, W) parts and int64 labels (-1 = unlabeled)."""

    parts: list[torch.Tensor]
    lazy: list[bool]  # True for a memmap-backed part that must not be copied whole
    labels: torch.Tensor
    classes: list[str]
    source: str  # the directory (or "sklearn") the split was read from
    files: list[Path] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------- digits

DIGITS_TEST_PER_CLASS = 36


def digits_test_mask(targets: np.ndarray) -> np.ndarray:
    """The fixed stratified test split of sklearn's digits: 36 evenly spaced samples of each class.

    Within each class c (n_c samples, in the file's order) the samples at positions floor(k * n_c / 36),
    k = 0..35, are test, all others train: 360 test / 1437 train, no random numbers involved.
    """
    mask = np.zeros(len(targets), dtype=bool)
    for c in np.unique(targets):
        members = np.flatnonzero(targets == c)
        picks = (np.arange(DIGITS_TEST_PER_CLASS) * len(members)) // DIGITS_TEST_PER_CLASS
        mask[members[picks]] = True
    return mask


def read_digits(split: str) -> RawSplit:
    """scikit-learn's bundled 8x8 digits (values 0..16 scaled to 0..255), split by `digits_test_mask`."""
    from sklearn.datasets import load_digits  # lazy: scikit-learn costs ~1 s to import, only digits needs it

    bunch = load_digits()
    pixels = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    targets = bunch.target.astype(np.int64)
    test = digits_test_mask(targets)
    keep = test if split == "test" else ~test
    images = torch.from_numpy(pixels[keep][:, None].copy())
    labels = torch.from_numpy(targets[keep].copy())
    return RawSplit([images], [False], labels, [str(d) for d in range(10)], "sklearn.datasets.load_digits")


# ----------------------------------------------------------------------------------------------- IDX

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read an unsigned-byte IDX file (optionally gzipped) with `ndim` dimensions, checking magic and size."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = bytearray(f.read())
    except (OSError, EOFError, zlib.error) as err:
        raise SnsError(f"{path}: cannot read IDX file ({one_line(err)}); the file is damaged, fetch it again")
    magic = bytes(raw[:4])
    expected = bytes([0, 0, 0x08, ndim])
    if magic != expected:
        raise SnsError(
            f"{path}: IDX magic number is 0x{magic.hex()}, expected 0x{expected.hex()} "
            f"(unsigned bytes, {ndim} dims); not the right IDX file"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise SnsError(f"{path}: truncated IDX header ({len(raw)} bytes); fetch the file again")
    dims = struct.unpack(">" + "I" * ndim, bytes(raw[4:header]))
    count = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != count:
        raise SnsError(
            f"{path}: IDX header promises {'x'.join(map(str, dims))} = {count} bytes of data, "
            f"file holds {len(raw) - header}; the file is truncated or damaged, fetch it again"
        )
    return np.frombuffer(raw, dtype=np.uint8, count=count, offset=header).reshape(dims)


def _idx_file(directory: Path, stem: str) -> Path | None:
    # Some mirrors spell the names "train-images.idx3-ubyte"; plain files win over .gz (faster to read).
    for name in (stem, stem.replace("-idx", ".idx")):
        for ext in ("", ".gz"):
            path = directory / (name + ext)
            if path.is_file():
                return path
    return None


def read_idx_split(
    name: str, roots: Sequence[Path], subdirs: Sequence[str], split: str, classes: list[str], how_to_get: str
) -> RawSplit:
    """Find the IDX image/label pair of `split` under one of roots/subdirs and read it as (N, 1, H, W)."""
    image_stem, label_stem = IDX_FILES[split]
    searched = []
    for root in roots:
        for sub in subdirs:
            directory = root / sub if sub else root
            if directory in searched:
                continue
            searched.append(directory)
            image_path = _idx_file(directory, image_stem)
            if image_path is not None:
                break
        else:
            continue
        break
    else:
        where = ", ".join(str(d) for d in searched)
        raise SnsError(f"{name}: no {image_stem}[.gz] found (looked in {where}); {how_to_get}")
    label_path = _idx_file(directory, label_stem)
    if label_path is None:
        raise SnsError(f"{directory}: has {image_path.name} but no {label_stem}[.gz]; {how_to_get}")
    images = read_idx(image_path, 3)
    labels = read_idx(label_path, 1)
    if images.shape[0] != labels.shape[0]:
        raise SnsError(
            f"{image_path}: holds {images.shape[0]} images but {label_path} holds "
            f"{labels.shape[0]} labels; the files do not belong together, fetch them again"
        )
    if images.shape[1] != images.shape[2]:
        raise SnsError(f"{image_path}: images are {images.shape[1]}x{images.shape[2]}, expected square images")
    if labels.size and int(labels.max()) >= len(classes):
        raise SnsError(f"{label_path}: label {int(labels.max())} out of range 0..{len(classes) - 1} for {name}")
    return RawSplit(
        [torch.from_numpy(images[:, None])],
        [False],
        torch.from_numpy(labels.astype(np.int64)),
        list(classes),
        str(directory),
        [image_path, label_path],
    )


# ----------------------------------------------------------------------------------------------- CIFAR

# Globals a CIFAR python batch may name: containers and numpy's array/dtype reconstruction, nothing that
# can run code. (Module, name) as written in the pickle; "__builtin__" is how Python 2 pickles spell builtins.
_SAFE_BUILTINS = {"dict", "list", "tuple", "str", "bytes", "bytearray", "int", "float"}
_SAFE_NUMPY = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for a global outside the allow-list: it might run code, so it is not loaded."""


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that only builds containers, strings and numpy arrays: any other global is refused."""

    def find_class(self, module: str, name: str):
        if module in ("builtins", "__builtin__") and name in _SAFE_BUILTINS:
            return getattr(importlib.import_module("builtins"), name)
        if (module, name) == ("_codecs", "encode"):  # how Python 3 protocol-2 pickles store bytes
            return importlib.import_module("_codecs").encode
        if (module, name) in _SAFE_NUMPY:
            # numpy 2 moved numpy.core to numpy._core; resolve either spelling without deprecation noise.
            for candidate in (module.replace("numpy.core", "numpy._core"), module.replace("numpy._core", "numpy.core")):
                try:
                    return getattr(importlib.import_module(candidate), name)
                except (ImportError, AttributeError):
                    continue
        raise RefusedGlobal(f"refused to load global {module}.{name}")


def safe_unpickle(path: Path) -> object:
    """Load a pickle of plain data (dicts, lists, strings, numpy arrays) without running any code from it."""
    try:
        with open(path, "rb") as f:
            return SafeUnpickler(f, encoding="latin1").load()
    except RefusedGlobal as err:
        raise SnsError(
            f"{path}: unsafe pickle ({err}); a dataset batch only holds arrays and lists, use the original archive"
        )
    except Exception as err:  # a damaged pickle can fail in many ways; all mean the same to the user
        raise SnsError(
            f"{path}: cannot read pickle ({one_line(err)}); the file is truncated or damaged, "
            f"extract the original archive again"
        )


def _str_keys(obj: object, path: Path) -> dict:
    if not isinstance(obj, dict):
        raise SnsError(f"{path}: expected a pickled dict, found {type(obj).__name__}; not a CIFAR python batch")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _names(values: object, path: Path, key: str) -> list[str]:
    if not isinstance(values, (list, tuple)) or not values:
        raise SnsError(f"{path}: '{key}' should be a non-empty list of class names")
    return [v.decode("latin1") if isinstance(v, bytes) else str(v) for v in values]


CIFAR = {
    "cifar10": {
        "dir": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": "batches.meta",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    },
    "cifar100": {
        "dir": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "meta": "meta",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    },
}
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
_CIFAR_ROW = 3 * 32 * 32


def _cifar_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    batch = _str_keys(safe_unpickle(path), path)
    if "data" not in batch or label_key not in batch:
        raise SnsError(
            f"{path}: CIFAR batch lacks '{'data' if 'data' not in batch else label_key}' "
            f"(keys: {', '.join(sorted(map(str, batch)))}); not the expected CIFAR python batch"
        )
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _CIFAR_ROW:
        shape = getattr(data, "shape", None)
        dtype = getattr(data, "dtype", type(data).__name__)
        raise SnsError(f"{path}: 'data' is {dtype} {shape}, expected uint8 (N, {_CIFAR_ROW}); damaged CIFAR batch")
    try:
        labels = np.asarray(batch[label_key], dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise SnsError(f"{path}: '{label_key}' is not a list of integers ({one_line(err)})")
    if labels.shape[0] != data.shape[0]:
        raise SnsError(f"{path}: {data.shape[0]} images but {labels.shape[0]} '{label_key}'; damaged CIFAR batch")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise SnsError(f"{path}: '{label_key}' outside 0..{num_classes - 1}; damaged CIFAR batch")
    return data, labels


def _cifar_dir(name: str, roots: Sequence[Path], files: list[str]) -> Path:
    info = CIFAR[name]
    searched = []
    for root in roots:
        for directory in (root / info["dir"], root):
            searched.append(directory)
            if (directory / files[0]).is_file():
                return directory
    where = ", ".join(str(d) for d in searched)
    raise SnsError(
        f"{name}: no {info['dir']}/{files[0]} found (looked in {where}); download {info['url']} "
        f"and extract it into the data root (or pass --root DIR)"
    )


def read_cifar(name: str, roots: Sequence[Path], split: str, labels: str = "fine") -> RawSplit:
    """CIFAR-10/100 python batches -> (N, 3, 32, 32); cifar100 `labels` is "fine" (100) or "coarse" (20)."""
    info = CIFAR[name]
    files = info[split]
    directory = _cifar_dir(name, roots, files)
    for f in files:
        if not (directory / f).is_file():
            raise SnsError(f"{directory / f}: missing CIFAR batch; extract {info['url']} again")
    meta_path = directory / info["meta"]
    if name == "cifar10":
        label_key = "labels"
        if meta_path.is_file():
            classes = _names(
                _str_keys(safe_unpickle(meta_path), meta_path).get("label_names"), meta_path, "label_names"
            )
        else:
            classes = list(CIFAR10_CLASSES)
    else:
        if labels not in ("fine", "coarse"):
            raise SnsError(f"cifar100 labels={labels!r}: expected 'fine' (100 classes) or 'coarse' (20 superclasses)")
        label_key = f"{labels}_labels"
        if not meta_path.is_file():
            raise SnsError(f"{meta_path}: missing CIFAR-100 meta file (class names); extract {info['url']} again")
        key = f"{labels}_label_names"
        classes = _names(_str_keys(safe_unpickle(meta_path), meta_path).get(key), meta_path, key)
    datas, label_arrays = [], []
    for f in files:
        data, lab = _cifar_batch(directory / f, label_key, len(classes))
        datas.append(data)
        label_arrays.append(lab)
    data = np.concatenate(datas) if len(datas) > 1 else datas[0]
    images = torch.from_numpy(np.ascontiguousarray(data.reshape(-1, 3, 32, 32)))
    all_labels = torch.from_numpy(np.concatenate(label_arrays))
    return RawSplit([images], [False], all_labels, classes, str(directory), [directory / f for f in files])


# ----------------------------------------------------------------------------------------------- STL-10

STL10_URL = "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"
STL10_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
_STL_SIDE = 96
_STL_IMAGE_BYTES = 3 * _STL_SIDE * _STL_SIDE


def _stl_images(path: Path, lazy: bool) -> torch.Tensor:
    """(N, 3, 96, 96) uint8; the file stores each channel column-major, hence the final transpose."""
    if not path.is_file():
        raise SnsError(f"{path}: missing STL-10 file; download {STL10_URL} and extract it into the data root")
    size = path.stat().st_size
    if size == 0 or size % _STL_IMAGE_BYTES:
        raise SnsError(
            f"{path}: {size} bytes is not a whole number of 3x96x96 images ({_STL_IMAGE_BYTES} bytes "
            f"each); the file is truncated, extract {STL10_URL} again"
        )
    n = size // _STL_IMAGE_BYTES
    if lazy:
        # Copy-on-write map: nothing is read until indexed, and the tensor view stays writable for torch.
        array = np.memmap(path, dtype=np.uint8, mode="c", shape=(n, 3, _STL_SIDE, _STL_SIDE))
        return torch.from_numpy(array).transpose(2, 3)
    array = np.fromfile(path, dtype=np.uint8).reshape(n, 3, _STL_SIDE, _STL_SIDE)
    return torch.from_numpy(array).transpose(2, 3).contiguous()


def _stl_labels(path: Path, count: int, images_path: Path) -> torch.Tensor:
    if not path.is_file():
        raise SnsError(f"{path}: missing STL-10 label file; extract {STL10_URL} again")
    labels = np.fromfile(path, dtype=np.uint8).astype(np.int64)
    if labels.shape[0] != count:
        raise SnsError(
            f"{path}: holds {labels.shape[0]} labels but {images_path} holds {count} images; extract {STL10_URL} again"
        )
    if labels.size and (labels.min() < 1 or labels.max() > 10):
        raise SnsError(f"{path}: labels must be 1..10, found {labels.min()}..{labels.max()}; not STL-10 labels")
    return torch.from_numpy(labels - 1)


def _stl_dir(roots: Sequence[Path], first_file: str) -> Path:
    searched = []
    for root in roots:
        for directory in (root / "stl10_binary", root):
            searched.append(directory)
            if (directory / first_file).is_file():
                return directory
    where = ", ".join(str(d) for d in searched)
    raise SnsError(
        f"stl10: no stl10_binary/{first_file} found (looked in {where}); download {STL10_URL} "
        f"and extract it into the data root (or pass --root DIR)"
    )


def read_stl10(roots: Sequence[Path], split: str) -> RawSplit:
    """STL-10 binary: train (5k), test (8k) in memory; unlabeled (100k, 2.7 GB) stays a lazy memmap view."""
    parts_wanted = {
        "train": ["train"],
        "test": ["test"],
        "unlabeled": ["unlabeled"],
        "train+unlabeled": ["train", "unlabeled"],
    }[split]
    directory = _stl_dir(roots, f"{parts_wanted[0]}_X.bin")
    names_path = directory / "class_names.txt"
    if names_path.is_file():
        classes = [line.strip() for line in names_path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if len(classes) != 10:
            raise SnsError(f"{names_path}: expected 10 class names, found {len(classes)}")
    else:
        classes = list(STL10_CLASSES)
    parts, lazy, labels, files = [], [], [], []
    for part in parts_wanted:
        images_path = directory / f"{part}_X.bin"
        is_lazy = part == "unlabeled"
        images = _stl_images(images_path, lazy=is_lazy)
        if part == "unlabeled":
            part_labels = torch.full((images.shape[0],), -1, dtype=torch.int64)
            files.append(images_path)
        else:
            labels_path = directory / f"{part}_y.bin"
            part_labels = _stl_labels(labels_path, images.shape[0], images_path)
            files += [images_path, labels_path]
        parts.append(images)
        lazy.append(is_lazy)
        labels.append(part_labels)
    return RawSplit(parts, lazy, torch.cat(labels), [] if split == "unlabeled" else classes, str(directory), files)
