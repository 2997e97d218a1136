"""`cifar10`: the user's own copy of CIFAR-10 (python version), read without extracting.

Put `cifar-10-python.tar.gz` (170,498,071 bytes, from https://www.cs.toronto.edu/~kriz/cifar.html)
in a folder and pass that folder (or the archive, or an extracted `cifar-10-batches-py`) as
`data_dir`, or set `HWBED_DATA_DIR`. hwbed never downloads it.

The batches are pickles and unpickling can run code, so the MD5 of the archive, or of each
batch file, is checked against `MD5` before anything is unpickled (the same digests as
torchvision), and the unpickler only accepts the numpy globals that an image batch needs.
There is deliberately no switch to skip the check; tests that use a fake archive replace the
entries of `MD5` with the fake's digests.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np

from .info import DataInfo, DataShape, LoadRequest, Split

NAME = "cifar10"
SHAPE = DataShape(NAME, 3, 32, 32, 10)
ENV_VAR = "HWBED_DATA_DIR"
ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
META = "batches.meta"
MEMBERS: dict[str, tuple[str, ...]] = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
MD5: dict[str, str] = {
    ARCHIVE: "c58f30108f718f92721af3b95e74349a",
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    META: "5ff9c542aee3614f3951f8cda6e48888",
}
CLASS_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


def info(size: int | None = None, data_dir: Path | None = None) -> DataInfo:
    """Metadata; needs no file (`data_dir` is ignored)."""
    return SHAPE.info(CLASS_NAMES).with_size(size)


def find_cifar10(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The archive or batches folder under `data_dir` (else `$HWBED_DATA_DIR`).

    Accepts the archive itself, a folder holding `cifar-10-batches-py/` (preferred when
    both are present, as it needs no decompression) or the archive, or the batches folder.
    """
    base = data_dir if data_dir is not None else os.environ.get(ENV_VAR)
    if base is None:
        raise FileNotFoundError(
            f"CIFAR-10 not found: no data_dir given and ${ENV_VAR} is not set. Put {ARCHIVE} "
            f"in a folder and pass data_dir=<folder> or set {ENV_VAR}=<folder>; "
            "hwbed never downloads data."
        )
    root = Path(base).expanduser()
    if root.is_file():
        return root
    for folder in (root / FOLDER, root):
        if (folder / META).is_file():
            return folder
    if (root / ARCHIVE).is_file():
        return root / ARCHIVE
    raise FileNotFoundError(
        f"CIFAR-10 not found: put {ARCHIVE} (170,498,071 bytes) at {root / ARCHIVE}, or its "
        f"extracted {FOLDER}/ at {root / FOLDER}; hwbed never downloads data."
    )


def _verify(data: bytes, key: str, origin: Path) -> None:
    digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
    if digest != MD5[key]:
        raise ValueError(
            f"MD5 mismatch for {origin}: got {digest}, expected {MD5[key]}. The file is corrupt "
            "or not the official CIFAR-10 python version; it was not unpickled."
        )


class _BatchUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals found in CIFAR-10 batch files."""

    ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"CIFAR-10 batch refers to {module}.{name}; refused")
        return super().find_class(module, name)


def _unpickle(data: bytes) -> dict:
    return _BatchUnpickler(io.BytesIO(data), encoding="bytes").load()


def _read_members(source: Path, names: tuple[str, ...]) -> dict[str, bytes]:
    """Raw bytes of the named batch files, after their MD5 (or the archive's) is checked."""
    if source.is_dir():
        raw = {}
        for name in names:
            path = source / name
            if not path.is_file():
                raise FileNotFoundError(f"CIFAR-10 batch file missing: {path}")
            raw[name] = path.read_bytes()
            _verify(raw[name], name, path)
        return raw
    archive = source.read_bytes()
    _verify(archive, ARCHIVE, source)
    wanted = {f"{FOLDER}/{name}": name for name in names}
    raw = {}
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        for member in tar:
            if member.name in wanted and member.isfile():
                raw[wanted[member.name]] = tar.extractfile(member).read()
    missing = [f"{FOLDER}/{name}" for name in names if name not in raw]
    if missing:
        raise ValueError(f"{source} lacks {', '.join(missing)}; is it the CIFAR-10 python version?")
    return raw


def _parse_batch(batch: dict, name: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        data, labels = batch[b"data"], batch[b"labels"]
    except KeyError as err:
        raise ValueError(f"CIFAR-10 batch {name} has no key {err}") from None
    x = np.asarray(data, dtype=np.uint8)
    y = np.asarray(labels, dtype=np.int64)
    if x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or len(y) != len(x):
        raise ValueError(f"CIFAR-10 batch {name}: data {x.shape} and {len(y)} labels do not match")
    # Each row is 1,024 R, then G, then B bytes, row-major: reshaping gives NCHW.
    return x.reshape(-1, 3, 32, 32), y


def load_cifar10(source: Path, split: Split) -> tuple[np.ndarray, np.ndarray]:
    """Images [N, 3, 32, 32] uint8 and labels from `find_cifar10`'s archive or folder."""
    names = MEMBERS[split]
    raw = _read_members(source, (*names, META))
    label_names = tuple(n.decode() for n in _unpickle(raw[META]).get(b"label_names", ()))
    if label_names != CLASS_NAMES:
        raise ValueError(f"{source}: {META} names classes {label_names}, expected {CLASS_NAMES}")
    parts = [_parse_batch(_unpickle(raw[name]), name) for name in names]
    return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])


def load(request: LoadRequest) -> tuple[np.ndarray, np.ndarray]:
    """The requested split from `request.data_dir` or `$HWBED_DATA_DIR`."""
    return load_cifar10(find_cifar10(request.data_dir), request.split)
