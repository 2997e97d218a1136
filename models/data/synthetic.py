"""`synthetic`: seeded CIFAR-shaped images with learnable class structure; no files needed.

Each class has a base colour (one value per channel) and an oriented sine grating (angle
pi * k / num_classes, 2 to 4 cycles per image). A sample adds a random phase, contrast,
colour jitter and per-pixel Gaussian noise, then clips to uint8. Class prototypes depend
only on `seed`, so the train and test splits (drawn from separate streams) share them.
Default sizes: 5,000 train and 1,000 test images; `limit` sets the count instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .info import DataInfo, DataShape, LoadRequest, Split, check_split

NAME = "synthetic"
SHAPE = DataShape(NAME, 3, 32, 32, 10)
DEFAULT_COUNTS = {"train": 5000, "test": 1000}
_SPLIT_STREAM = {"train": 1, "test": 2}


def info(size: int | None = None, data_dir: Path | None = None) -> DataInfo:
    """Metadata of the registered variant (3 x 32 x 32, 10 classes)."""
    names = tuple(f"class_{k}" for k in range(10))
    return SHAPE.info(names).with_size(size)


def make_synthetic(
    n: int,
    *,
    split: Split = "train",
    size: int = 32,
    channels: int = 3,
    num_classes: int = 10,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """`n` images [n, channels, size, size] uint8 and balanced, shuffled int64 labels."""
    check_split(split)
    if min(n, size, channels, num_classes) < 1:
        raise ValueError("n, size, channels and num_classes must be positive")
    prototypes = np.random.default_rng(seed)
    colours = prototypes.uniform(0.2, 0.8, (num_classes, channels))
    cycles = prototypes.integers(2, 5, num_classes)
    angles = np.pi * np.arange(num_classes) / num_classes

    rng = np.random.default_rng([seed, _SPLIT_STREAM[split]])
    y = rng.permutation(np.arange(n) % num_classes)
    grid = np.arange(size, dtype=np.float32) / size
    u, v = grid[None, :, None], grid[None, None, :]
    phase = rng.uniform(0, 2 * np.pi, (n, 1, 1))
    theta = angles[y, None, None]
    along = np.cos(theta) * u + np.sin(theta) * v  # [n, size, size], position along the wave
    wave = np.sin(2 * np.pi * cycles[y, None, None] * along + phase).astype(np.float32)
    contrast = rng.uniform(0.15, 0.3, (n, 1, 1, 1)).astype(np.float32)
    colour = colours[y] + rng.normal(0.0, 0.05, (n, channels))
    images = colour[:, :, None, None].astype(np.float32) + contrast * wave[:, None]
    images += rng.normal(0.0, 0.06, images.shape).astype(np.float32)
    return np.rint(np.clip(images, 0.0, 1.0) * 255).astype(np.uint8), y.astype(np.int64)


def load(request: LoadRequest) -> tuple[np.ndarray, np.ndarray]:
    """`limit` (default 5,000 train / 1,000 test) images at `size` (default 32)."""
    n = request.limit or DEFAULT_COUNTS[request.split]
    return make_synthetic(n, split=request.split, size=request.size or 32, seed=request.seed)
