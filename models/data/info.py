"""Metadata shared by every data set: `DataShape`, `DataInfo`, split names, a load request."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

Split = Literal["train", "test"]
SPLITS: tuple[str, ...] = get_args(Split)


@dataclass(frozen=True)
class DataShape:
    """A data set's declared image shape and class count: known without any of its files.

    Each data set module declares one (`SHAPE`) at its native size; what costs and model
    construction need. `imagenet` declares ILSVRC-2012 (3 x 224 x 224, 1,000 classes); a local
    folder with fewer class folders loads with fewer (`DataInfo.num_classes`).
    """

    name: str
    channels: int
    height: int
    width: int
    num_classes: int

    @property
    def chw(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image."""
        return (self.channels, self.height, self.width)

    def with_size(self, size: int | None) -> DataShape:
        """The same data set resized to `size` x `size` (unchanged for None)."""
        if size is None:
            return self
        return dataclasses.replace(self, height=size, width=size)

    def info(self, class_names: tuple[str, ...]) -> DataInfo:
        """The `DataInfo` of this shape with these class names (one per class)."""
        if len(class_names) != self.num_classes:
            raise ValueError(
                f"{self.name}: {len(class_names)} class names, {self.num_classes} classes"
            )
        return DataInfo(self.name, *self.chw, self.num_classes, tuple(class_names))


@dataclass(frozen=True)
class DataInfo:
    """What a model needs to know about a data set; images are uint8 NCHW."""

    name: str
    channels: int
    height: int
    width: int
    num_classes: int
    class_names: tuple[str, ...]

    def with_size(self, size: int | None) -> DataInfo:
        """The same data set resized to `size` x `size` (unchanged for None)."""
        if size is None:
            return self
        return dataclasses.replace(self, height=size, width=size)


@dataclass(frozen=True)
class LoadRequest:
    """Arguments of `load_dataset` as handed to each data set's `load` function."""

    split: Split
    data_dir: Path | None = None
    size: int | None = None
    limit: int | None = None
    seed: int = 0


def check_split(split: str) -> Split:
    """Return `split` unchanged, or raise ValueError if it is not "train" or "test"."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split  # type: ignore[return-value]
