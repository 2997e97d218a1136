"""Metadata shared by every data set: `DataInfo`, the split names and a load request."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

Split = Literal["train", "test"]
SPLITS: tuple[str, ...] = get_args(Split)


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
