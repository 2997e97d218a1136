"""The data set registry: `load_dataset`, `dataset_info`, `dataset_shape`, the names they know."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import cifar10, digits, fashion_mnist, imagenet, samples, synthetic
from .arrays import resize_images, subset_indices
from .info import DataInfo, DataShape, LoadRequest, Split, check_split


@dataclass(frozen=True)
class DatasetEntry:
    """How to describe and load one data set at its native size."""

    info: Callable[[int | None, Path | None], DataInfo]
    load: Callable[[LoadRequest], tuple[np.ndarray, np.ndarray]]
    shape: DataShape
    """The declared shape: needs none of the data set's files."""


DATASETS: dict[str, DatasetEntry] = {
    module.NAME: DatasetEntry(module.info, module.load, module.SHAPE)
    for module in (digits, cifar10, samples, fashion_mnist, imagenet, synthetic)
}


def available_datasets() -> tuple[str, ...]:
    """Registered data set names, sorted."""
    return tuple(sorted(DATASETS))


def _entry(name: str) -> DatasetEntry:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(
            f"unknown data set {name!r}; known: {', '.join(available_datasets())}"
        ) from None


def _check_positive(label: str, value: int | None) -> None:
    if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
        raise ValueError(f"{label} must be a positive integer or None, got {value!r}")


def dataset_info(
    name: str, size: int | None = None, *, data_dir: str | os.PathLike[str] | None = None
) -> DataInfo:
    """Metadata of data set `name` as `load_dataset(name, ..., size=size)` returns it.

    Loads no pixels; only `imagenet` reads `data_dir` (to list its class folders).
    """
    _check_positive("size", size)
    return _entry(name).info(size, None if data_dir is None else Path(data_dir))


def dataset_shape(name: str, size: int | None = None) -> DataShape:
    """Declared shape (channels, height, width, classes) of data set `name`, resized to `size`.

    Reads no file and no folder, for every registered data set (ImageNet: ILSVRC-2012's
    3 x 224 x 224 and 1,000 classes): what a cost or a model's construction needs. Unknown
    names raise the same ValueError as `load_dataset`.
    """
    entry = _entry(name)
    _check_positive("size", size)
    return entry.shape.with_size(size)


def load_dataset(
    name: str,
    split: Split,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    size: int | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, DataInfo]:
    """Images uint8 [N, C, H, W], labels int64 [N] and metadata of one split.

    `split` is "train" or "test". `size` resizes to size x size (bilinear, see
    `resize_images`; `imagenet` crops instead). `limit` keeps a random subset of that many
    images chosen with `seed`, in their original order (`synthetic` generates that many).
    `seed` also seeds `synthetic`; the other data sets' splits are fixed.
    """
    entry = _entry(name)
    _check_positive("size", size)
    _check_positive("limit", limit)
    request = LoadRequest(
        split=check_split(split),
        data_dir=None if data_dir is None else Path(data_dir),
        size=size,
        limit=limit,
        seed=seed,
    )
    x, y = entry.load(request)
    keep = subset_indices(len(y), limit, seed)
    if keep is not None:
        x, y = x[keep], y[keep]
    if size is not None:
        x = resize_images(x, size)
    return np.ascontiguousarray(x), y, entry.info(size, request.data_dir)
