"""Tests for hwbed.models.data: every loader on real or faked local files, and the helpers."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import pickle
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from hwbed.models.data import (
    CIFAR_AUGMENT,
    Augment,
    Batches,
    DataInfo,
    available_datasets,
    cifar10,
    dataset_info,
    dataset_shape,
    digits,
    fashion_mnist,
    load_dataset,
    make_synthetic,
    resize_images,
    to_float,
)

SAMPLE_LABELS = [3, 8, 8, 0, 6, 6, 1, 6, 3, 1, 0, 9, 5, 7, 9, 8, 5, 7, 8, 6]
# SHA-256 of each digits split (pixels, then labels): pins the split across machines.
DIGITS_SHA256 = {
    "train": "831be471062a00a5391e2fbdced7e544cc1a5c2ac446c42e098b6815a87403ee",
    "test": "fe23aad66e19fe5e849678cc6620ffeffaa2ea24f45f240fb07cfab38417f0f1",
}
FAKE_BATCH = 6  # images per fake CIFAR-10 batch file
HAS_FOOLBOX = importlib.util.find_spec("foolbox") is not None
HAS_FASHION = all((fashion_mnist.DEFAULT_DIR / f).is_file() for f in fashion_mnist.FILES["test"])


def _sha256(x: np.ndarray, y: np.ndarray) -> str:
    return hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()


# --- registry -------------------------------------------------------------------------------


def test_unknown_name_lists_known_ones() -> None:
    with pytest.raises(ValueError, match="known: cifar10, cifar10-samples, digits"):
        load_dataset("mnist", "test")
    with pytest.raises(ValueError, match="fashion-mnist, imagenet, synthetic"):
        dataset_info("mnist")
    assert len(available_datasets()) == 6


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="split must be one of"):
        load_dataset("synthetic", "val")
    with pytest.raises(ValueError, match="limit must be a positive integer"):
        load_dataset("synthetic", "test", limit=0)
    with pytest.raises(ValueError, match="size must be a positive integer"):
        dataset_info("digits", size=-1)


def test_dataset_info_needs_no_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HWBED_DATA_DIR", raising=False)
    assert dataset_info("cifar10") == DataInfo("cifar10", 3, 32, 32, 10, cifar10.CLASS_NAMES)
    info = dataset_info("digits", size=32)
    assert (info.channels, info.height, info.width, info.num_classes) == (1, 32, 32, 10)
    assert dataset_info("fashion-mnist").class_names[-1] == "Ankle boot"
    assert dataset_info("synthetic").num_classes == 10


DECLARED = {
    "cifar10": (3, 32, 32, 10),
    "cifar10-samples": (3, 32, 32, 10),
    "digits": (1, 8, 8, 10),
    "fashion-mnist": (1, 28, 28, 10),
    "imagenet": (3, 224, 224, 1000),
    "synthetic": (3, 32, 32, 10),
}


def test_dataset_shape_of_every_data_set_needs_no_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HWBED_DATA_DIR", str(tmp_path))  # an empty data folder
    assert set(DECLARED) == set(available_datasets())
    for name, (c, h, w, classes) in DECLARED.items():
        shape = dataset_shape(name)
        assert (shape.name, *shape.chw, shape.num_classes) == (name, c, h, w, classes)
        assert dataset_shape(name, size=16).chw == (c, 16, 16)
        if name != "imagenet":  # the other data sets' info reads no file either: they agree
            info = dataset_info(name, size=16)
            assert (info.channels, info.height, info.width, info.num_classes) == (c, 16, 16, 10)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dataset_info("imagenet")  # its class list needs the folder; its shape does not
    with pytest.raises(ValueError, match="unknown data set 'mnist'; known: cifar10, "):
        dataset_shape("mnist")
    with pytest.raises(ValueError, match="size must be a positive integer"):
        dataset_shape("digits", size=0)


# --- digits ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("split", "count"), [("train", 1497), ("test", 300)])
def test_digits_split(split: str, count: int) -> None:
    x, y, info = load_dataset("digits", split)
    assert x.shape == (count, 1, 8, 8) and x.dtype == np.uint8
    assert y.shape == (count,) and y.dtype == np.int64
    assert info == dataset_info("digits")
    assert x.min() == 0 and x.max() == 255
    assert set(np.unique(x)) <= {round(v * 255 / 16) for v in range(17)}
    assert np.bincount(y, minlength=10).min() >= 30
    assert _sha256(x, y) == DIGITS_SHA256[split]


def test_digits_split_is_stratified_and_disjoint() -> None:
    _, y_test, _ = load_dataset("digits", "test")
    assert np.bincount(y_test).tolist() == [30] * 10
    x_all, y_all = digits._read()
    mask = digits.test_mask(y_all)
    assert mask.sum() == 300 and len(y_all) == 1797
    x_train, _, _ = load_dataset("digits", "train", seed=5)
    np.testing.assert_array_equal(x_train, x_all[~mask])


def test_limit_is_seeded_subset_in_order() -> None:
    x_full, y_full, _ = load_dataset("digits", "test")
    x, y, _ = load_dataset("digits", "test", limit=50, seed=1)
    x2, y2, _ = load_dataset("digits", "test", limit=50, seed=1)
    x3, _, _ = load_dataset("digits", "test", limit=50, seed=2)
    assert x.shape == (50, 1, 8, 8)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    assert not np.array_equal(x, x3)
    rows = [np.flatnonzero((x_full == image).all(axis=(1, 2, 3)))[0] for image in x]
    assert rows == sorted(rows)


# --- resizing -------------------------------------------------------------------------------


def test_resize_through_load_dataset() -> None:
    x, y, info = load_dataset("digits", "test", size=32)
    assert x.shape == (300, 1, 32, 32) and x.dtype == np.uint8 and x.flags.c_contiguous
    assert (info.height, info.width) == (32, 32)
    assert len(y) == 300


def test_resize_images() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3, 2, 8, 8), dtype=np.uint8)
    near = resize_images(x, 32, mode="nearest")
    np.testing.assert_array_equal(near, x.repeat(4, axis=2).repeat(4, axis=3))
    assert resize_images(x, 8) is x
    small = resize_images(x, 4)
    assert small.shape == (3, 2, 4, 4)
    ramp = np.broadcast_to(16 * np.arange(8, dtype=np.uint8) + 8, (1, 1, 8, 8))
    # A linear ramp keeps its value at each output pixel's centre (away from the borders).
    np.testing.assert_array_equal(resize_images(ramp, 4)[0, 0, :, 1:3], [[48, 80]] * 4)
    flat = np.full((1, 3, 5, 7), 200, dtype=np.uint8)
    assert (resize_images(flat, 11) == 200).all()
    with pytest.raises(ValueError, match="uint8"):
        resize_images(x.astype(np.float32), 4)
    with pytest.raises(ValueError, match="mode"):
        resize_images(x, 4, mode="cubic")  # type: ignore[arg-type]


# --- cifar10 on a fake archive --------------------------------------------------------------


def _batch(offset: int, count: int) -> dict[bytes, object]:
    rng = np.random.default_rng(offset)
    return {
        b"batch_label": b"fake batch",
        b"labels": [(offset + i) % 10 for i in range(count)],
        b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
        b"filenames": [b"img%d.png" % i for i in range(count)],
    }


def _members() -> dict[str, bytes]:
    members = {f"data_batch_{i}": pickle.dumps(_batch(i, FAKE_BATCH), 2) for i in range(1, 6)}
    members["test_batch"] = pickle.dumps(_batch(0, FAKE_BATCH + 1), 2)
    meta = {b"label_names": [n.encode() for n in cifar10.CLASS_NAMES], b"num_vis": 3072}
    members["batches.meta"] = pickle.dumps(meta, 2)
    return members


def _write_archive(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            entry = tarfile.TarInfo(f"{cifar10.FOLDER}/{name}")
            entry.size = len(data)
            tar.addfile(entry, io.BytesIO(data))
    return path


@pytest.fixture
def fake_cifar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake cifar-10-python.tar.gz in its own folder, with the real member names and keys.

    The archive cannot match the real MD5s, so `cifar10.MD5` is patched with its digests;
    the loader has no switch to skip the check because unpickling can run code.
    """
    monkeypatch.delenv("HWBED_DATA_DIR", raising=False)
    members = _members()
    archive = _write_archive(tmp_path / cifar10.ARCHIVE, members)
    digests = {name: hashlib.md5(data).hexdigest() for name, data in members.items()}
    digests[cifar10.ARCHIVE] = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setattr(cifar10, "MD5", digests)
    return archive


def _check_fake(x: np.ndarray, y: np.ndarray, split: str) -> None:
    batches = (
        [_batch(0, FAKE_BATCH + 1)]
        if split == "test"
        else [_batch(i, FAKE_BATCH) for i in range(1, 6)]
    )
    rows = np.concatenate([b[b"data"] for b in batches])
    assert x.shape == (len(rows), 3, 32, 32) and x.dtype == np.uint8
    np.testing.assert_array_equal(y, np.concatenate([b[b"labels"] for b in batches]))
    # Row layout: 1,024 R, then G, then B values, each 32 x 32 row-major.
    np.testing.assert_array_equal(x[:, 1], rows[:, 1024:2048].reshape(-1, 32, 32))


@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar10_archive_forms(fake_cifar: Path, split: str) -> None:
    for data_dir in (fake_cifar, fake_cifar.parent, str(fake_cifar.parent)):
        x, y, info = load_dataset("cifar10", split, data_dir=data_dir)
        _check_fake(x, y, split)
        assert info == dataset_info("cifar10")


def test_cifar10_extracted_folder_forms(fake_cifar: Path, tmp_path: Path) -> None:
    with tarfile.open(fake_cifar) as tar:
        tar.extractall(tmp_path / "extracted", filter="data")
    folder = tmp_path / "extracted" / cifar10.FOLDER
    for data_dir in (folder.parent, folder):
        x, y, _ = load_dataset("cifar10", "test", data_dir=data_dir)
        _check_fake(x, y, "test")


def test_cifar10_env_var_size_and_limit(fake_cifar: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HWBED_DATA_DIR", str(fake_cifar.parent))
    x, y, info = load_dataset("cifar10", "train", size=16, limit=7)
    assert x.shape == (7, 3, 16, 16) and len(y) == 7 and info.height == 16


def test_cifar10_md5_mismatch_names_file(tmp_path: Path) -> None:
    archive = _write_archive(tmp_path / cifar10.ARCHIVE, _members())
    with pytest.raises(
        ValueError, match=f"MD5 mismatch for {re.escape(str(archive))}.*not unpickled"
    ):
        load_dataset("cifar10", "test", data_dir=tmp_path)
    folder = tmp_path / cifar10.FOLDER
    folder.mkdir()
    for name, data in _members().items():
        (folder / name).write_bytes(data)
    with pytest.raises(ValueError, match="MD5 mismatch for .*(test_batch|batches.meta)"):
        load_dataset("cifar10", "test", data_dir=folder)


def test_cifar10_refuses_foreign_pickle_globals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    members = _members()
    members["test_batch"] = pickle.dumps({b"data": Path("x"), b"labels": []}, 2)
    archive = _write_archive(tmp_path / cifar10.ARCHIVE, members)
    digests = dict(cifar10.MD5, **{cifar10.ARCHIVE: hashlib.md5(archive.read_bytes()).hexdigest()})
    monkeypatch.setattr(cifar10, "MD5", digests)
    with pytest.raises(pickle.UnpicklingError, match="refused"):
        load_dataset("cifar10", "test", data_dir=archive)


def test_cifar10_missing_member(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    members = _members()
    del members["data_batch_3"]
    archive = _write_archive(tmp_path / cifar10.ARCHIVE, members)
    digests = dict(cifar10.MD5, **{cifar10.ARCHIVE: hashlib.md5(archive.read_bytes()).hexdigest()})
    monkeypatch.setattr(cifar10, "MD5", digests)
    with pytest.raises(ValueError, match="lacks cifar-10-batches-py/data_batch_3"):
        load_dataset("cifar10", "train", data_dir=archive)


def test_cifar10_missing_file_says_where(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HWBED_DATA_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="HWBED_DATA_DIR is not set"):
        load_dataset("cifar10", "test")
    expected = re.escape(str(tmp_path / cifar10.ARCHIVE))
    with pytest.raises(FileNotFoundError, match=f"put cifar-10-python.tar.gz .* at {expected}"):
        load_dataset("cifar10", "test", data_dir=tmp_path)
    monkeypatch.setenv("HWBED_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=expected):
        load_dataset("cifar10", "test")


# --- cifar10-samples (foolbox wheel) --------------------------------------------------------


@pytest.mark.skipif(not HAS_FOOLBOX, reason="needs: pip install foolbox==3.3.4 pillow")
def test_cifar10_samples() -> None:
    x, y, info = load_dataset("cifar10-samples", "test")
    assert x.shape == (20, 3, 32, 32) and x.dtype == np.uint8
    assert y.tolist() == SAMPLE_LABELS
    assert info.class_names[3] == "cat" and x.std() > 20
    with pytest.raises(ValueError, match="only a test split"):
        load_dataset("cifar10-samples", "train")


# --- fashion-mnist --------------------------------------------------------------------------


@pytest.mark.skipif(not HAS_FASHION, reason="needs: apt-get install dataset-fashion-mnist")
def test_fashion_mnist_installed() -> None:
    x, y, info = load_dataset("fashion-mnist", "test")
    assert x.shape == (10000, 1, 28, 28) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [1000] * 10
    assert info.num_classes == 10
    x, y, _ = load_dataset("fashion-mnist", "train", limit=100)
    assert x.shape == (100, 1, 28, 28) and y.dtype == np.int64


def _write_idx(path: Path, array: np.ndarray, magic: int | None = None) -> None:
    header = (magic if magic is not None else 0x0800 + array.ndim).to_bytes(4, "big")
    header += b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_fashion_mnist_idx_reader(tmp_path: Path) -> None:
    images = np.arange(5 * 28 * 28).reshape(5, 28, 28) % 256
    image_file, label_file = (tmp_path / name for name in fashion_mnist.FILES["test"])
    _write_idx(image_file, images)
    _write_idx(label_file, np.arange(5))
    x, y, _ = load_dataset("fashion-mnist", "test", data_dir=tmp_path)
    np.testing.assert_array_equal(x[:, 0], images)
    assert y.tolist() == [0, 1, 2, 3, 4]
    _write_idx(label_file, np.arange(5), magic=0x0803)
    with pytest.raises(ValueError, match="IDX magic 0x0803, expected 0x0801"):
        load_dataset("fashion-mnist", "test", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz"):
        load_dataset("fashion-mnist", "train", data_dir=tmp_path)


def test_fashion_mnist_missing_says_apt_get(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(fashion_mnist, "DEFAULT_DIR", tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", "test")


# --- imagenet-style folder ------------------------------------------------------------------


def test_imagenet_folder(tmp_path: Path) -> None:
    image_module = pytest.importorskip("PIL.Image")
    shapes = {"n01": [(40, 30), (30, 50)], "n02": [(64, 64)], "n03": [(20, 90)]}
    for split in ("train", "val"):
        for wnid, sizes in shapes.items():
            (tmp_path / split / wnid).mkdir(parents=True)
            for i, (w, h) in enumerate(sizes):
                colour = (int(wnid[-1]) * 60, 10 * i, 200)
                image_module.new("RGB", (w, h), colour).save(tmp_path / split / wnid / f"{i}.JPEG")
    x, y, info = load_dataset("imagenet", "test", data_dir=tmp_path, size=24)
    assert x.shape == (4, 3, 24, 24) and y.tolist() == [0, 0, 1, 2]
    assert info.class_names == ("n01", "n02", "n03") and info.height == 24
    assert abs(int(x[2, 0].mean()) - 120) <= 3
    x, _, info = load_dataset("imagenet", "train", data_dir=tmp_path, limit=2)
    assert x.shape == (2, 3, 224, 224) and info.width == 224
    (tmp_path / "val" / "n99").mkdir()
    with pytest.raises(ValueError, match="missing from train"):
        load_dataset("imagenet", "test", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dataset_info("imagenet", data_dir=tmp_path / "nothing")


# --- synthetic ------------------------------------------------------------------------------


def test_synthetic_deterministic_and_seeded() -> None:
    x, y, info = load_dataset("synthetic", "train", limit=200)
    x2, y2, _ = load_dataset("synthetic", "train", limit=200)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    assert x.shape == (200, 3, 32, 32) and x.dtype == np.uint8 and info.num_classes == 10
    assert np.bincount(y).tolist() == [20] * 10
    assert not np.array_equal(x, load_dataset("synthetic", "train", limit=200, seed=1)[0])
    assert not np.array_equal(x, load_dataset("synthetic", "test", limit=200)[0])
    assert load_dataset("synthetic", "test")[0].shape == (1000, 3, 32, 32)
    gray, labels = make_synthetic(30, size=16, channels=1, num_classes=3, seed=4)
    assert gray.shape == (30, 1, 16, 16) and set(labels.tolist()) == {0, 1, 2}


def test_synthetic_is_learnable() -> None:
    x_train, y_train, _ = load_dataset("synthetic", "train", limit=1000)
    x_test, y_test, _ = load_dataset("synthetic", "test", limit=300)
    features = to_float(x_train).flatten(1).numpy()
    means = np.stack([features[y_train == k].mean(0) for k in range(10)])
    gaps = np.linalg.norm(means[:, None] - means[None], axis=-1)[~np.eye(10, dtype=bool)]
    assert gaps.min() > 1.0
    test = to_float(x_test).flatten(1).numpy()
    predicted = ((test[:, None] - means[None]) ** 2).sum(-1).argmin(1)
    assert (predicted == y_test).mean() > 0.8  # nearest class mean; chance is 0.1


# --- torch helpers --------------------------------------------------------------------------


def test_to_float() -> None:
    x = np.array([[[[0, 51, 255]]]], dtype=np.uint8)
    out = to_float(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([[[[0.0, 0.2, 1.0]]]]))
    assert x[0, 0, 0, 1] == 51
    with pytest.raises(TypeError, match="uint8"):
        to_float(x.astype(np.float32))


def test_batches_order_and_seed() -> None:
    x, y, _ = load_dataset("synthetic", "test", limit=50, size=8)
    plain = list(Batches(x, y, 16))
    assert len(Batches(x, y, 16)) == len(plain) == 4 and len(Batches(x, y, 16, drop_last=True)) == 3
    assert torch.equal(torch.cat([b for _, b in plain]), torch.as_tensor(y))
    assert plain[0][0].dtype == torch.float32 and plain[0][0].shape == (16, 3, 8, 8)
    first = [b for _, b in Batches(x, y, 16, shuffle=True, seed=3)]
    again = [b for _, b in Batches(x, y, 16, shuffle=True, seed=3)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert sorted(torch.cat(first).tolist()) == sorted(y.tolist())
    loader = Batches(x, y, 50, shuffle=True, seed=3)
    assert not torch.equal(next(iter(loader))[1], next(iter(loader))[1])


def test_augment() -> None:
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.uint8).reshape(2, 1, 4, 4).repeat(32, 1, 1, 1)
    generator = torch.Generator().manual_seed(0)
    flipped = Augment(pad=0, hflip=True)(x, generator)
    is_flipped = (flipped == x.flip(-1)).flatten(1).all(1)
    assert ((flipped == x).flatten(1).all(1) | is_flipped).all() and 0 < is_flipped.sum() < 64
    cropped = Augment(pad=1, hflip=False)(x, generator)
    assert cropped.shape == x.shape and cropped.dtype == torch.uint8
    assert (cropped == 0).any() and not torch.equal(cropped, x)
    inner = x[:, :, 1:3, 1:3]  # always inside a one-pixel crop window
    assert all(
        any(torch.equal(inner[i], c[:, 1 + dy : 3 + dy, 1 + dx : 3 + dx])
            for dy in (-1, 0, 1) for dx in (-1, 0, 1))
        for i, c in enumerate(cropped)
    )  # fmt: skip
    xb, _ = next(iter(Batches(x.numpy(), np.zeros(64, np.int64), 64, augment=CIFAR_AUGMENT)))
    assert xb.shape == (64, 1, 4, 4)
