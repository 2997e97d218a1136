"""Feeding uint8 arrays to torch: `to_float`, `Augment` and the seeded `Batches` iterator."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def to_float(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 images to a float32 tensor in [0, 1] (a new tensor; the input is not changed)."""
    if isinstance(x, np.ndarray):
        x = np.require(x, requirements="W")  # torch cannot wrap read-only arrays
    tensor = torch.as_tensor(x)
    if tensor.dtype != torch.uint8:
        raise TypeError(f"to_float expects uint8 images, got {tensor.dtype}")
    return tensor.to(torch.float32).div_(255.0)


@dataclass(frozen=True)
class Augment:
    """Random crop from a zero-padded image, and optional horizontal flip, on uint8 NCHW.

    The defaults are the usual CIFAR recipe; use `DIGITS_AUGMENT` (no flip) for digits.
    """

    pad: int = 4
    hflip: bool = True

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augmented copy of the batch `x`, drawing offsets and flips from `generator`."""
        n, channels, height, width = x.shape
        if self.pad > 0:
            padded = F.pad(x, (self.pad,) * 4)
            top = torch.randint(0, 2 * self.pad + 1, (n,), generator=generator)
            left = torch.randint(0, 2 * self.pad + 1, (n,), generator=generator)
            rows = (top[:, None] + torch.arange(height))[:, None, :, None]
            cols = (left[:, None] + torch.arange(width))[:, None, None, :]
            batch = torch.arange(n)[:, None, None, None]
            x = padded[batch, torch.arange(channels)[None, :, None, None], rows, cols]
        if self.hflip:
            flip = torch.rand(n, generator=generator) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x


CIFAR_AUGMENT = Augment(pad=4, hflip=True)
DIGITS_AUGMENT = Augment(pad=1, hflip=False)


class Batches:
    """Re-iterable mini-batches of (float32 images in [0, 1], int64 labels).

    With `shuffle`, each pass draws a new order from one generator seeded with `seed`, so
    the sequence of epochs is reproducible; `augment` is applied to uint8 before scaling.
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        batch_size: int = 128,
        *,
        shuffle: bool = False,
        augment: Augment | None = None,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        if len(x) != len(y):
            raise ValueError(f"{len(x)} images but {len(y)} labels")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.x = torch.from_numpy(np.require(x, requirements="W"))
        self.y = torch.from_numpy(np.require(y, dtype=np.int64, requirements="W"))
        if self.x.dtype != torch.uint8 or self.x.ndim != 4:
            raise ValueError(
                f"expected uint8 images [N, C, H, W], got {self.x.dtype} {tuple(self.x.shape)}"
            )
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.drop_last = drop_last
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.y)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.y)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for i in range(len(self)):
            index = order[i * self.batch_size : (i + 1) * self.batch_size]
            images = self.x[index]
            if self.augment is not None:
                images = self.augment(images, self.generator)
            yield to_float(images), self.y[index]
