"""The uint8 boundary: floats in [0, 1] round to the grid; anything else is refused."""

from __future__ import annotations

import numpy as np
import pytest

from hwbed.ir.executable import BaseExecutable, to_pixels

SHAPE = (1, 2, 2)


class Echo(BaseExecutable):
    """Scores = the pixels it received, so a test sees exactly what crossed the boundary."""

    def forward(self, pixels):
        return pixels.reshape(len(pixels), -1).astype(np.float32)


def test_floats_round_to_the_nearest_level_and_uint8_passes_unchanged():
    x = np.array([[[[0.0, 1.0], [0.5, 2.4 / 255]]]])
    assert to_pixels(x, SHAPE).tolist() == [[[[0, 255], [128, 2]]]]
    u = np.array([[[[0, 255], [7, 9]]]], dtype=np.uint8)
    assert to_pixels(u, SHAPE) is u
    # within half a level of the range still rounds into 0..255: accepted
    edge = np.array([[[[-0.49 / 255, 1 + 0.49 / 255], [0, 0]]]])
    assert to_pixels(edge, SHAPE).tolist() == [[[[0, 255], [0, 0]]]]


@pytest.mark.parametrize(
    "x, hint",
    [
        (np.full((2, *SHAPE), 200.0), "looks like 0..255 pixels: pass uint8"),
        (np.full((1, *SHAPE), -0.4), "looks normalised"),
        (np.full((1, *SHAPE), 1.2), "clip=True"),
    ],
)
def test_floats_outside_the_unit_range_are_refused_with_what_they_look_like(x, hint):
    with pytest.raises(ValueError, match="float images must lie in \\[0, 1\\]") as err:
        to_pixels(x, SHAPE)
    assert hint in str(err.value) and "\n" not in str(err.value)


def test_clipping_only_when_asked_and_queries_count_only_answered_images():
    exe = Echo("echo", SHAPE, 4)
    x = np.array([[[[1.5, -0.2], [0.5, 1.0]]]])
    with pytest.raises(ValueError, match="outside|must lie"):
        exe(x)
    assert exe.queries == 0
    assert exe(x, clip=True).tolist() == [[255, 0, 128, 255]]
    assert exe.queries == 1
