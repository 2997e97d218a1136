"""`fashion-mnist`: Zalando's Fashion-MNIST (MIT) from Debian's `dataset-fashion-mnist` package.

The package installs the original gzipped IDX files in /usr/share/datasets/fashion-mnist/:
60,000 train and 10,000 test images of 28x28 gray. `data_dir` may point to another folder
holding the same four files.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from .info import DataInfo, DataShape, LoadRequest

NAME = "fashion-mnist"
SHAPE = DataShape(NAME, 1, 28, 28, 10)
DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


def info(size: int | None = None, data_dir: Path | None = None) -> DataInfo:
    """Metadata; needs no file (`data_dir` is ignored)."""
    return SHAPE.info(CLASS_NAMES).with_size(size)


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """A gzipped IDX file of unsigned bytes with `ndim` dimensions (magic 0x0800 + ndim)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    if magic != 0x0800 + ndim:
        raise ValueError(f"{path}: IDX magic {magic:#06x}, expected {0x0800 + ndim:#06x}")
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(data) - header != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape}, payload has {len(data) - header} bytes")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def load(request: LoadRequest) -> tuple[np.ndarray, np.ndarray]:
    """Images [N, 1, 28, 28] uint8 and labels of the requested split."""
    folder = request.data_dir if request.data_dir is not None else DEFAULT_DIR
    image_file, label_file = (folder / name for name in FILES[request.split])
    for path in (image_file, label_file):
        if not path.is_file():
            hint = (
                "install it with: apt-get install dataset-fashion-mnist"
                if folder == DEFAULT_DIR
                else f"put the Fashion-MNIST IDX files ({', '.join(FILES[request.split])}) there"
            )
            raise FileNotFoundError(f"Fashion-MNIST file {path} not found; {hint}")
    x = read_idx(image_file, 3)
    y = read_idx(label_file, 1)
    if len(x) != len(y):
        raise ValueError(f"{image_file} has {len(x)} images but {label_file} {len(y)} labels")
    return x[:, None].copy(), y.astype(np.int64)
