"""squeezespan.data: every on-disk format read from small hand-written files, its errors, stats and batching."""

from __future__ import annotations

import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from squeezespan.data import (
    DATASETS,
    FolderDataset,
    ImageDataset,
    batches,
    channel_stats,
    dataset_info,
    describe_dataset,
    load_dataset,
    normalize,
)
from squeezespan.errors import SnsError

# ----------------------------------------------------------------------------------------------- helpers


def idx_bytes(array: np.ndarray) -> bytes:
    array = np.asarray(array, dtype=np.uint8)
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape) + array.tobytes()


def write_idx_set(directory, images: dict, labels: dict, gz: bool):
    directory.mkdir(parents=True, exist_ok=True)
    names = {
        "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }
    for split, (image_name, label_name) in names.items():
        for name, array in ((image_name, images[split]), (label_name, labels[split])):
            data = idx_bytes(array)
            if gz:
                (directory / (name + ".gz")).write_bytes(gzip.compress(data))
            else:
                (directory / name).write_bytes(data)


def small_idx(seed=0, n_train=6, n_test=4, side=28):
    rng = np.random.default_rng(seed)
    images = {
        "train": rng.integers(0, 256, (n_train, side, side), dtype=np.uint8),
        "test": rng.integers(0, 256, (n_test, side, side), dtype=np.uint8),
    }
    labels = {
        "train": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    return images, labels


def cifar_pickle(obj, path, legacy_numpy_path=True):
    data = pickle.dumps(obj, protocol=2)
    if legacy_numpy_path:
        # The real CIFAR files were written by numpy 1.x under Python 2 and name numpy.core.multiarray.
        data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path.write_bytes(data)


def write_cifar10(root, per_batch=2, n_test=3, seed=0):
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    batches_written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = n_test if name == "test_batch" else per_batch
        batch = {
            "batch_label": name,
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "labels": [int(v) for v in rng.integers(0, 10, n)],
            "filenames": [f"{name}_{i}.png" for i in range(n)],
        }
        cifar_pickle(batch, d / name)
        batches_written[name] = batch
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    cifar_pickle({"label_names": [n.encode() for n in names], "num_cases_per_batch": per_batch}, d / "batches.meta")
    return d, batches_written


STL_SIDE = 96


def stl_bytes(images_chw: np.ndarray) -> bytes:
    """STL-10's documented layout written out by hand: per channel, column by column, each column top to bottom."""
    out = bytearray()
    for img in images_chw:
        for channel in img:
            for col in range(STL_SIDE):
                out += bytes(channel[:, col].tolist())
    return bytes(out)


def write_stl(root, n_train=2, n_test=1, n_unlabeled=3):
    d = root / "stl10_binary"
    d.mkdir(parents=True)
    rng = np.random.default_rng(1)
    sets = {}
    for part, n in (("train", n_train), ("test", n_test), ("unlabeled", n_unlabeled)):
        imgs = rng.integers(0, 200, (n, 3, STL_SIDE, STL_SIDE), dtype=np.uint8)
        sets[part] = imgs
        (d / f"{part}_X.bin").write_bytes(stl_bytes(imgs))
    # the first train image: only its top row is bright, in every channel
    sets["train"][0] = 0
    sets["train"][0, :, 0, :] = 255
    (d / "train_X.bin").write_bytes(stl_bytes(sets["train"]))
    sets["train_y"] = np.array([3, 10][:n_train], dtype=np.uint8)
    sets["test_y"] = np.array([1] * n_test, dtype=np.uint8)
    (d / "train_y.bin").write_bytes(sets["train_y"].tobytes())
    (d / "test_y.bin").write_bytes(sets["test_y"].tobytes())
    (d / "class_names.txt").write_text(
        "\n".join(["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]) + "\n"
    )
    return d, sets


def save_image(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


# ----------------------------------------------------------------------------------------------- registry


def test_registry_lists_all_names_and_unknown_name_lists_them():
    assert set(DATASETS) == {"digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "stl10", "folder"}
    with pytest.raises(SnsError, match="valid names: digits, mnist, fashion-mnist, cifar10, cifar100, stl10, folder"):
        load_dataset("imagenet")


def test_unknown_split_and_option_are_clear_errors():
    with pytest.raises(SnsError, match="valid splits: train, test"):
        load_dataset("digits", split="val")
    with pytest.raises(SnsError, match="unknown option.*labels"):
        load_dataset("digits", labels="coarse")
    with pytest.raises(SnsError, match="resolution"):
        load_dataset("digits", resolution=0)


# ----------------------------------------------------------------------------------------------- digits


def test_digits_fixed_stratified_split_shapes_and_range():
    train, test = load_dataset("digits", split="train"), load_dataset("digits", split="test")
    assert train.images.shape == (1437, 1, 32, 32) and test.images.shape == (360, 1, 32, 32)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0
    assert torch.bincount(test.labels, minlength=10).tolist() == [36] * 10
    assert train.classes == [str(d) for d in range(10)] and train.channels == 1 and train.num_classes == 10
    assert train.mean == test.mean and train.std == test.std  # test is normalised with train statistics
    again = load_dataset("digits", split="train")
    assert torch.equal(again.images, train.images) and torch.equal(again.labels, train.labels)


def test_digits_split_partitions_the_sklearn_images_and_resolution_param():
    bunch = load_digits()
    native = np.rint(bunch.images * 255 / 16).astype(np.uint8)
    train = load_dataset("digits", split="train", resolution=8)
    test = load_dataset("digits", split="test", resolution=8)
    assert train.images.shape == (1437, 1, 8, 8)
    together = sorted(x.tobytes() for x in np.concatenate([train.images[:, 0].numpy(), test.images[:, 0].numpy()]))
    assert together == sorted(x.tobytes() for x in native)
    assert load_dataset("digits", split="test", resolution=16).images.shape == (360, 1, 16, 16)
    assert load_dataset("digits", split="test", channels=3).images.shape == (360, 3, 32, 32)


# ----------------------------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz,layout", [(False, ""), (True, "FashionMNIST/raw")])
def test_idx_raw_and_gz_and_torchvision_layout(tmp_path, gz, layout):
    images, labels = small_idx()
    write_idx_set(tmp_path / layout if layout else tmp_path, images, labels, gz)
    ds = load_dataset("fashion-mnist", root=tmp_path, split="test")
    assert isinstance(ds, ImageDataset)
    assert ds.images.shape == (4, 1, 28, 28) and ds.resolution == 28 and ds.channels == 1
    assert torch.equal(ds.images[:, 0], torch.from_numpy(images["test"]))
    assert ds.labels.tolist() == labels["test"].tolist()
    assert ds.classes[0] == "T-shirt/top" and ds.num_classes == 10
    x, y = ds[1]
    assert x.shape == (1, 28, 28) and y == int(labels["test"][1])


def test_idx_resize_to_32_bilinear_and_channels(tmp_path):
    images, labels = small_idx()
    images["train"][:] = 77  # a flat image stays flat under bilinear resizing
    write_idx_set(tmp_path, images, labels, gz=False)
    ds = load_dataset("mnist", root=tmp_path, split="train", resolution=32, channels=3)
    assert ds.images.shape == (6, 3, 32, 32)
    assert bool((ds.images == 77).all())
    assert ds.mean == pytest.approx((77 / 255,) * 3) and ds.std == pytest.approx((0.0,) * 3, abs=1e-9)


def test_idx_statistics_hand_made_and_shared_by_test_split(tmp_path):
    images, labels = small_idx(n_train=2)
    images["train"][0] = 0
    images["train"][1] = 255  # half the pixels black, half white: mean 0.5, std 0.5
    write_idx_set(tmp_path, images, labels, gz=True)
    train = load_dataset("mnist", root=tmp_path, split="train")
    test = load_dataset("mnist", root=tmp_path, split="test")
    assert train.mean == pytest.approx((0.5,)) and train.std == pytest.approx((0.5,))
    assert test.mean == train.mean and test.std == train.std


def test_idx_truncated_wrong_magic_and_mismatch_are_one_line_errors(tmp_path):
    images, labels = small_idx()
    write_idx_set(tmp_path, images, labels, gz=False)
    image_file = tmp_path / "train-images-idx3-ubyte"
    good = image_file.read_bytes()
    image_file.write_bytes(good[:-100])
    with pytest.raises(SnsError, match="train-images-idx3-ubyte: IDX header promises 6x28x28") as err:
        load_dataset("mnist", root=tmp_path)
    assert "\n" not in str(err.value)
    image_file.write_bytes(idx_bytes(labels["train"]))  # a label file where images belong
    with pytest.raises(SnsError, match="magic number is 0x00000801, expected 0x00000803"):
        load_dataset("mnist", root=tmp_path)
    image_file.write_bytes(idx_bytes(images["train"][:5]))
    with pytest.raises(SnsError, match="5 images but .* 6 labels"):
        load_dataset("mnist", root=tmp_path)
    image_file.unlink()
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(good)[:-40])
    with pytest.raises(SnsError, match="cannot read IDX file"):
        load_dataset("mnist", root=tmp_path)


def test_idx_missing_says_how_to_get_it(tmp_path):
    with pytest.raises(SnsError, match="apt-get install dataset-fashion-mnist") as err:
        load_dataset("fashion-mnist", root=tmp_path / "nowhere")
    assert "train-images-idx3-ubyte" in str(err.value) and "\n" not in str(err.value)


# ----------------------------------------------------------------------------------------------- CIFAR


def test_cifar10_pickles_load_in_order_with_meta(tmp_path):
    _, written = write_cifar10(tmp_path)
    train = load_dataset("cifar10", root=tmp_path, split="train")
    assert train.images.shape == (10, 3, 32, 32) and train.classes[1] == "automobile"
    row = written["data_batch_2"]["data"][1]  # the 4th train image: channel planes R, G, B of 32x32, row-major
    assert torch.equal(train.images[3], torch.from_numpy(row.reshape(3, 32, 32)))
    expected = sum((written[f"data_batch_{i}"]["labels"] for i in range(1, 6)), [])
    assert train.labels.tolist() == expected
    test = load_dataset("cifar10", root=tmp_path / "cifar-10-batches-py", split="test")  # root = the folder itself
    assert len(test) == 3 and test.mean == train.mean and test.std == train.std


def test_cifar_batch_with_wrong_sizes_is_refused(tmp_path):
    d, written = write_cifar10(tmp_path)
    bad = dict(written["data_batch_3"], data=np.zeros((2, 3000), dtype=np.uint8))
    cifar_pickle(bad, d / "data_batch_3")
    with pytest.raises(SnsError, match=r"data_batch_3: 'data' is uint8 \(2, 3000\), expected uint8 \(N, 3072\)"):
        load_dataset("cifar10", root=tmp_path)
    cifar_pickle(dict(written["data_batch_3"], labels=[1, 2, 3]), d / "data_batch_3")
    with pytest.raises(SnsError, match="data_batch_3: 2 images but 3 'labels'"):
        load_dataset("cifar10", root=tmp_path)
    (d / "data_batch_3").write_bytes((d / "data_batch_4").read_bytes()[:500])
    with pytest.raises(SnsError, match="data_batch_3: cannot read pickle"):
        load_dataset("cifar10", root=tmp_path)


def py2_batch_pickle(data: np.ndarray, labels: list) -> bytes:
    """A batch pickled the way the real CIFAR files were (Python 2 cPickle, numpy 1.x): opcodes by hand."""

    def string(b: bytes) -> bytes:  # BINSTRING: a Python 2 str, decoded with latin1 on load
        return b"T" + struct.pack("<I", len(b)) + b

    rows, cols = data.shape
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85"
        + string(b"b")
        + b"\x87R"
        + b"(K\x01J"
        + struct.pack("<i", rows)
        + b"J"
        + struct.pack("<i", cols)
        + b"\x86"
        + b"cnumpy\ndtype\n"
        + string(b"u1")
        + b"K\x00K\x01\x87R"
        + b"(K\x03"
        + string(b"|")
        + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
        + b"\x89"
        + string(data.tobytes())
        + b"tb"
    )
    label_list = b"](" + b"".join(b"K" + bytes([v]) for v in labels) + b"e"
    return b"\x80\x02}(" + string(b"data") + array + string(b"labels") + label_list + b"u."


def test_python2_style_cifar_batch_loads_byte_exact(tmp_path):
    d, _ = write_cifar10(tmp_path)
    data = np.arange(2 * 3072).reshape(2, 3072).astype(np.uint8)  # every byte value, incl. >= 128
    (d / "data_batch_1").write_bytes(py2_batch_pickle(data, [7, 3]))
    train = load_dataset("cifar10", root=tmp_path)
    assert torch.equal(train.images[:2].reshape(2, -1), torch.from_numpy(data))
    assert train.labels[:2].tolist() == [7, 3]


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_cifar_pickle_is_refused_and_not_executed(tmp_path):
    d, written = write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    (d / "data_batch_1").write_bytes(pickle.dumps({"data": _Evil(marker), "labels": []}, protocol=2))
    with pytest.raises(
        SnsError,
        match=r"data_batch_1: unsafe pickle \(refused to load global "
        r"(posix|os|nt)\.system",
    ):
        load_dataset("cifar10", root=tmp_path)
    assert not marker.exists()


def test_cifar_missing_gives_download_url(tmp_path):
    with pytest.raises(SnsError, match=r"https://www\.cs\.toronto\.edu/~kriz/cifar-10-python\.tar\.gz"):
        load_dataset("cifar10", root=tmp_path)


def test_cifar100_fine_and_coarse_labels(tmp_path):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    rng = np.random.default_rng(3)
    for split, n in (("train", 4), ("test", 2)):
        cifar_pickle(
            {
                "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                "fine_labels": [99, 0, 5, 7][:n],
                "coarse_labels": [19, 0, 1, 2][:n],
            },
            d / split,
        )
    cifar_pickle(
        {"fine_label_names": [f"fine{i}" for i in range(100)], "coarse_label_names": [f"coarse{i}" for i in range(20)]},
        d / "meta",
        legacy_numpy_path=False,
    )
    fine = load_dataset("cifar100", root=tmp_path)
    coarse = load_dataset("cifar100", root=tmp_path, labels="coarse")
    assert fine.num_classes == 100 and fine.labels.tolist() == [99, 0, 5, 7] and fine.classes[99] == "fine99"
    assert coarse.num_classes == 20 and coarse.labels.tolist() == [19, 0, 1, 2]
    assert torch.equal(fine.images, coarse.images)
    with pytest.raises(SnsError, match="'fine'.*'coarse'"):
        load_dataset("cifar100", root=tmp_path, labels="medium")


# ----------------------------------------------------------------------------------------------- STL-10


def test_stl10_column_major_orientation_labels_and_splits(tmp_path):
    _, sets = write_stl(tmp_path)
    train = load_dataset("stl10", root=tmp_path, split="train")
    assert train.images.shape == (2, 3, 96, 96) and train.storage == "memory"
    first = train.images[0]
    assert bool((first[:, 0, :] == 255).all()) and int(first[:, 1:, :].max()) == 0  # top row, not left column
    assert torch.equal(train.images[1], torch.from_numpy(sets["train"][1]))
    assert train.labels.tolist() == [2, 9] and train.classes[9] == "truck"
    unlabeled = load_dataset("stl10", root=tmp_path, split="unlabeled")
    assert unlabeled.storage == "memmap" and unlabeled.labels.tolist() == [-1, -1, -1] and unlabeled.classes == []
    assert torch.equal(unlabeled.images, torch.from_numpy(sets["unlabeled"]))
    assert unlabeled.mean == train.mean  # statistics come from the labelled train images
    both = load_dataset("stl10", root=tmp_path, split="train+unlabeled")
    assert len(both) == 5 and both.labels.tolist() == [2, 9, -1, -1, -1]
    x = both.take(torch.tensor([4, 0]))
    assert torch.equal(x[0], torch.from_numpy(sets["unlabeled"][2])) and torch.equal(x[1], first)


def test_stl10_lazy_resize_matches_eager(tmp_path):
    write_stl(tmp_path)
    both = load_dataset("stl10", root=tmp_path, split="train+unlabeled", resolution=32)
    unlabeled = load_dataset("stl10", root=tmp_path, split="unlabeled", resolution=32)
    assert both.images.shape == (5, 3, 32, 32)
    assert torch.equal(both.images[2:], unlabeled.images)
    seen = torch.cat([x for x, _ in batches(both, 2, shuffle=False, drop_last=False)])
    assert torch.equal(seen, both.images)


def test_stl10_truncated_and_inconsistent_files(tmp_path):
    d, sets = write_stl(tmp_path)
    (d / "train_X.bin").write_bytes(stl_bytes(sets["train"])[:-5])
    with pytest.raises(SnsError, match=r"train_X\.bin: 55291 bytes is not a whole number of 3x96x96 images"):
        load_dataset("stl10", root=tmp_path)
    (d / "train_X.bin").write_bytes(stl_bytes(sets["train"]))
    (d / "train_y.bin").write_bytes(bytes([1, 2, 3]))
    with pytest.raises(SnsError, match=r"train_y\.bin: holds 3 labels but .*train_X\.bin holds 2 images"):
        load_dataset("stl10", root=tmp_path)
    (d / "train_y.bin").write_bytes(bytes([0, 2]))
    with pytest.raises(SnsError, match="labels must be 1..10"):
        load_dataset("stl10", root=tmp_path)
    with pytest.raises(SnsError, match="stl10_binary.tar.gz"):
        load_dataset("stl10", root=tmp_path / "elsewhere", split="test")


# ----------------------------------------------------------------------------------------------- folder


def test_folder_labelled_streams_resized_images(tmp_path):
    red = np.zeros((10, 14, 3), dtype=np.uint8)
    red[..., 0] = 200
    blue = np.zeros((12, 12, 3), dtype=np.uint8)
    blue[..., 2] = 100
    save_image(tmp_path / "cat" / "a.png", red)
    save_image(tmp_path / "cat" / "sub" / "b.jpg", red)
    save_image(tmp_path / "dog" / "c.png", blue)
    ds = load_dataset("folder", root=tmp_path, resolution=8)
    assert isinstance(ds, FolderDataset) and len(ds) == 3
    assert ds.classes == ["cat", "dog"] and ds.labels.tolist() == [0, 0, 1] and ds.num_classes == 2
    x, y = ds[2]
    assert x.shape == (3, 8, 8) and x.dtype == torch.uint8 and y == 1
    assert x[2].eq(100).all() and x[:2].eq(0).all()
    assert ds.mean[2] == pytest.approx(100 / 255 / 3, abs=1e-3)  # one blue image of three, sampled exactly
    grey = load_dataset("folder", root=tmp_path, resolution=8, channels=1)
    assert grey[2][0].shape == (1, 8, 8) and int(grey[2][0][0, 0, 0]) == round(0.114 * 100)
    got = list(batches(ds, 2, shuffle=True, drop_last=False, generator=torch.Generator().manual_seed(0), num_workers=1))
    assert [b[0].shape[0] for b in got] == [2, 1]
    assert sorted(torch.cat([b[1] for b in got]).tolist()) == [0, 0, 1]
    assert dataset_info(ds)["storage"].startswith("stream")


def test_folder_flat_unlabeled_default_resolution(tmp_path):
    for i in range(3):
        save_image(tmp_path / f"{i}.png", np.full((20, 16, 3), 10 * i, dtype=np.uint8))
    ds = load_dataset("folder", root=tmp_path)
    assert ds.resolution == 16 and ds.classes == [] and ds.labels.tolist() == [-1, -1, -1]
    assert ds[0][0].shape == (3, 16, 16)


def test_folder_empty_and_corrupt_files_are_one_line_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SnsError, match="no images found"):
        load_dataset("folder", root=tmp_path / "empty")
    with pytest.raises(SnsError, match="does not exist"):
        load_dataset("folder", root=tmp_path / "missing")
    root = tmp_path / "imgs"
    save_image(root / "a" / "ok.png", np.zeros((8, 8, 3), dtype=np.uint8))
    (root / "a" / "bad.png").write_bytes(b"this is not a png")
    with pytest.raises(SnsError, match=r"bad\.png: cannot decode image") as err:
        load_dataset("folder", root=root, resolution=8)
    assert "\n" not in str(err.value)
    (root / "a" / "bad.png").unlink()
    ds = load_dataset("folder", root=root, resolution=8)
    (root / "a" / "ok.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # broken after the stats were taken
    with pytest.raises(SnsError, match=r"ok\.png: cannot decode image") as err:
        list(batches(ds, 1, shuffle=False, drop_last=False, num_workers=1))
    assert "\n" not in str(err.value) and "Traceback" not in str(err.value)


# ----------------------------------------------------------------------------------------------- batches, stats


def test_batches_shuffle_is_reproducible_and_covers_every_image(tmp_path):
    ds = load_dataset("digits", split="test", resolution=8)
    order1 = list(batches(ds, 64, shuffle=True, drop_last=False, generator=torch.Generator().manual_seed(5)))
    order2 = list(batches(ds, 64, shuffle=True, drop_last=False, generator=torch.Generator().manual_seed(5)))
    assert len(order1) == 6 and all(torch.equal(a[0], b[0]) for a, b in zip(order1, order2))
    assert sorted(torch.cat([b[1] for b in order1]).tolist()) == sorted(ds.labels.tolist())
    dropped = batches(ds, 64, shuffle=False, drop_last=True)
    assert len(dropped) == 5
    first = next(dropped)
    assert first[0].dtype == torch.uint8 and torch.equal(first[0], ds.images[:64])
    with pytest.raises(SnsError, match="batch_size"):
        batches(ds, 0, shuffle=False, drop_last=False)


def test_channel_stats_and_normalize_by_hand():
    images = torch.zeros((2, 3, 2, 2), dtype=torch.uint8)
    images[0, 0] = 255  # channel 0: half 255, half 0 -> mean 0.5, std 0.5
    images[:, 1] = 51  # channel 1: constant 0.2 -> std 0
    images[1, 2, 0] = 255  # channel 2: 2 of 8 pixels white -> mean 0.25, std sqrt(0.25 * 0.75)
    mean, std = channel_stats(images)
    assert mean == pytest.approx((0.5, 0.2, 0.25)) and std == pytest.approx((0.5, 0.0, 0.75**0.5 / 2), abs=1e-9)
    x = torch.tensor([1.0, 0.2, 0.0]).view(1, 3, 1, 1)
    assert normalize(x, (0.5, 0.2, 0.25), (0.5, 1.0, 0.25)).flatten().tolist() == pytest.approx([1.0, 0.0, -1.0])
    with pytest.raises(SnsError, match="3 channels"):
        normalize(x, (0.5,), (0.5,))


def test_dataset_info_and_describe(tmp_path):
    images, labels = small_idx()
    write_idx_set(tmp_path, images, labels, gz=True)
    info = dataset_info(load_dataset("fashion-mnist", root=tmp_path, split="test", resolution=32))
    assert {k: info[k] for k in ("name", "split", "size", "num_classes", "channels", "resolution")} == {
        "name": "fashion-mnist",
        "split": "test",
        "size": 4,
        "num_classes": 10,
        "channels": 1,
        "resolution": 32,
    }
    assert len(info["classes"]) == 10 and len(info["mean"]) == 1 and len(info["std"]) == 1
    assert info["storage"].startswith("memory")
    text = describe_dataset("fashion-mnist", root=tmp_path)
    assert "train" in text and "test" in text and "Ankle boot" in text
