"""`digits`: scikit-learn's 1,797 real 8x8 handwritten digits, with a fixed stratified split.

The images are the UCI "Optical Recognition of Handwritten Digits" test set (CC BY 4.0),
shipped inside scikit-learn. Pixel values 0..16 are scaled to 0..255 by round(v * 255 / 16).
The split is fixed and independent of `load_dataset`'s seed: for each class, a permutation
from `numpy.random.default_rng(0)` (PCG64, identical on every platform) picks 30 test images,
giving 300 test and 1,497 train images, each kept in the original file order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .info import DataInfo, DataShape, LoadRequest

NAME = "digits"
SHAPE = DataShape(NAME, 1, 8, 8, 10)
NUM_IMAGES = 1797
TEST_PER_CLASS = 30
SPLIT_SEED = 0
CLASS_NAMES = tuple(str(d) for d in range(10))


def info(size: int | None = None, data_dir: Path | None = None) -> DataInfo:
    """Metadata; `data_dir` is ignored (the data ships with scikit-learn)."""
    return SHAPE.info(CLASS_NAMES).with_size(size)


def _read() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ModuleNotFoundError(
            "the 'digits' data set needs scikit-learn: pip install 'scikit-learn>=1.4'"
        ) from err
    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float64)
    if images.shape != (NUM_IMAGES, 8, 8):
        raise RuntimeError(
            f"scikit-learn's digits changed: expected (1797, 8, 8), got {images.shape}"
        )
    x = np.rint(images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return x, np.asarray(bunch.target, dtype=np.int64)


def test_mask(y: np.ndarray) -> np.ndarray:
    """Boolean mask of the fixed test split: 30 seeded picks per class."""
    rng = np.random.default_rng(SPLIT_SEED)
    mask = np.zeros(len(y), dtype=bool)
    for label in range(10):
        members = np.flatnonzero(y == label)
        mask[rng.permutation(members)[:TEST_PER_CLASS]] = True
    return mask


def load(request: LoadRequest) -> tuple[np.ndarray, np.ndarray]:
    """Images [N, 1, 8, 8] uint8 and labels of the requested split."""
    x, y = _read()
    mask = test_mask(y)
    keep = mask if request.split == "test" else ~mask
    return x[keep], y[keep]
