"""`cifar10-samples`: the first 20 real CIFAR-10 test images, shipped in the foolbox wheel.

foolbox 3.3.4 stores them as foolbox/data/cifar10_<index>_<label>.png. They are found with
`importlib.util.find_spec` (foolbox itself is not imported) and decoded with Pillow. Only a
test split exists; 20 images are for smoke and golden tests, not training.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np

from .cifar10 import CLASS_NAMES
from .info import DataInfo, DataShape, LoadRequest

NAME = "cifar10-samples"
SHAPE = DataShape(NAME, 3, 32, 32, 10)
INSTALL_HINT = "pip install foolbox==3.3.4 pillow"
_FILE = re.compile(r"cifar10_(\d+)_(\d+)\.png")


def info(size: int | None = None, data_dir: Path | None = None) -> DataInfo:
    """Metadata; `data_dir` is ignored (the images ship with foolbox)."""
    return SHAPE.info(CLASS_NAMES).with_size(size)


def samples_dir() -> Path:
    """foolbox's data folder, without importing foolbox."""
    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"'{NAME}' needs the foolbox wheel: {INSTALL_HINT}")
    return Path(spec.submodule_search_locations[0]) / "data"


def load(request: LoadRequest) -> tuple[np.ndarray, np.ndarray]:
    """The 20 images [20, 3, 32, 32] uint8 in index order, and their labels."""
    if request.split != "test":
        raise ValueError(f"'{NAME}' has only a test split (20 images); use split='test'")
    try:
        from PIL import Image
    except ImportError as err:
        raise ModuleNotFoundError(f"'{NAME}' needs Pillow: {INSTALL_HINT}") from err
    folder = samples_dir()
    found = sorted(
        (int(m[1]), int(m[2]), path)
        for path in folder.glob("cifar10_*.png")
        if (m := _FILE.fullmatch(path.name))
    )
    if not found:
        raise FileNotFoundError(f"no cifar10_*.png in {folder}; reinstall with: {INSTALL_HINT}")
    images = []
    for _, _, path in found:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
        if pixels.shape != (32, 32, 3):
            raise ValueError(f"{path} is {pixels.shape}, expected 32x32 RGB")
        images.append(pixels.transpose(2, 0, 1))
    return np.stack(images), np.array([label for _, label, _ in found], dtype=np.int64)
