"""`imagenet`: an ImageNet-style folder `<root>/{train,val}/<wnid>/*.JPEG`, decoded with Pillow.

`root` is `data_dir`, else `$HWBED_DATA_DIR/imagenet`. The split "test" reads `val/`, which
must be sorted into class folders like `train/`. Class indices follow the sorted folder names
of `train/` (of `val/` when there is no `train/`). Each image is converted to RGB, its shorter
side scaled bilinearly to round(size / 0.875) (256 for the default size 224) and center-cropped
to size x size. With `limit`, only the seeded subset of files is decoded.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .arrays import subset_indices
from .info import DataInfo, DataShape, LoadRequest

NAME = "imagenet"
DEFAULT_SIZE = 224
SHAPE = DataShape(NAME, 3, DEFAULT_SIZE, DEFAULT_SIZE, 1000)
"""ILSVRC-2012, assumed without reading a folder (a local subset may hold fewer classes)."""
CROP_FRACTION = 0.875
EXTENSIONS = frozenset({".jpeg", ".jpg", ".png"})
SPLIT_DIRS = {"train": "train", "test": "val"}


def find_root(data_dir: Path | None) -> Path:
    """`data_dir`, else `$HWBED_DATA_DIR/imagenet`; raises FileNotFoundError if absent."""
    if data_dir is None:
        base = os.environ.get("HWBED_DATA_DIR")
        if base is None:
            raise FileNotFoundError(
                "ImageNet not found: pass data_dir=<root> holding train/<wnid>/*.JPEG and "
                "val/<wnid>/*.JPEG, or set HWBED_DATA_DIR so that $HWBED_DATA_DIR/imagenet is it"
            )
        data_dir = Path(base) / "imagenet"
    if not data_dir.is_dir():
        raise FileNotFoundError(f"ImageNet folder {data_dir} does not exist")
    return data_dir


def class_names(root: Path) -> tuple[str, ...]:
    """Sorted class folder names of `root/train` (or `root/val`)."""
    split_dir = root / "train" if (root / "train").is_dir() else root / "val"
    if not split_dir.is_dir():
        raise FileNotFoundError(f"{root} has neither train/ nor val/")
    names = tuple(sorted(p.name for p in split_dir.iterdir() if p.is_dir()))
    if not names:
        raise FileNotFoundError(f"no class folders in {split_dir}")
    return names


def info(size: int | None = None, data_dir: Path | None = None) -> DataInfo:
    """Metadata; lists the class folders but decodes no image."""
    names = class_names(find_root(data_dir))
    side = size or DEFAULT_SIZE
    return DataInfo(NAME, 3, side, side, len(names), names)


def decode(path: Path, size: int) -> np.ndarray:
    """One image as uint8 [3, size, size]: shorter side to round(size / 0.875), center crop."""
    try:
        from PIL import Image
    except ImportError as err:
        raise ModuleNotFoundError("'imagenet' needs Pillow: pip install pillow") from err
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    scale = round(size / CROP_FRACTION) / min(rgb.size)
    width, height = max(size, round(rgb.width * scale)), max(size, round(rgb.height * scale))
    rgb = rgb.resize((width, height), Image.Resampling.BILINEAR)
    left, top = (width - size) // 2, (height - size) // 2
    rgb = rgb.crop((left, top, left + size, top + size))
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def load(request: LoadRequest) -> tuple[np.ndarray, np.ndarray]:
    """Images [N, 3, size, size] uint8 and labels; only the `limit` subset is decoded."""
    root = find_root(request.data_dir)
    names = class_names(root)
    split_dir = root / SPLIT_DIRS[request.split]
    files = [
        (path, label)
        for label, name in enumerate(names)
        if (split_dir / name).is_dir()
        for path in sorted((split_dir / name).iterdir())
        if path.suffix.lower() in EXTENSIONS
    ]
    if not files:
        raise FileNotFoundError(f"no images in {split_dir}/<class>/ (expected *.JPEG files)")
    extra = sorted({p.name for p in split_dir.iterdir() if p.is_dir()} - set(names))
    if extra:
        raise ValueError(f"{split_dir} has class folders missing from train/: {extra[:5]}")
    keep = subset_indices(len(files), request.limit, request.seed)
    if keep is not None:
        files = [files[i] for i in keep]
    size = request.size or DEFAULT_SIZE
    x = np.stack([decode(path, size) for path, _ in files])
    return x, np.array([label for _, label in files], dtype=np.int64)
