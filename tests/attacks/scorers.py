"""A small known scorer for the black-box attack tests (imported by name: ``scorers``)."""

from __future__ import annotations

import numpy as np

from hwbed.ir.executable import BaseExecutable


class Scorer(BaseExecutable):
    """Logits from a function of the [0, 1] pixels; records every batch it is sent."""

    def __init__(self, fn, classes=3, shape=(1, 6, 6)):
        super().__init__("scorer", shape, classes)
        self.fn = fn
        self.batches: list[int] = []

    def forward(self, pixels):
        self.batches.append(len(pixels))
        x = pixels.reshape(len(pixels), -1).astype(np.float64) / 255.0
        return np.asarray(self.fn(x), dtype=np.float32)
