"""The board as an Executable: FINN's generated PYNQ driver behind the query server.

FINN's ``deploy/driver`` folder holds ``driver.py`` (the ``io_shape_dict`` of the build) and
``driver_base.py`` (``FINNExampleOverlay``, a ``pynq.Overlay``). The overlay's ``execute``
folds, packs and DMAs a batch shaped ``(batch_size, *ishape_normal[0][1:])`` (NHWC, or flat
for TFC) and returns it unpacked as ``(batch_size, *oshape_normal[0][1:])``. This module only
lays uint8 [N, C, H, W] pixels out as the driver's normal input, runs fixed-size hardware
batches (so that the overlay never re-allocates its DMA buffers) and turns outputs into scores.

BNN-PYNQ (CNV/TFC) builds end in LabelSelect: the board returns the top-k class labels, not
logits. With ``outputs="labels"`` label ``l_i`` at rank i (0 = best) scores ``k - i`` and the
other classes 0, so top-1 builds give one-hot scores: attacks see decisions only. Builds that
stream their last layer's integer outputs use ``outputs="scores"``.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from hwbed.ir.executable import BaseExecutable


class BoardError(RuntimeError):
    """The driver folder, its io_shape_dict or the board's output is not what we expect."""


def dtype_name(dt: Any) -> str:
    """A qonnx DataType's canonical name (``UINT8``); plain strings pass through."""
    return str(getattr(dt, "name", dt))


def board_input(pixels: np.ndarray, ishape_normal: tuple[int, ...]) -> np.ndarray:
    """uint8 [N, C, H, W] -> the driver's normal input [N, *ishape_normal[1:]] (NHWC order)."""
    nhwc = np.ascontiguousarray(pixels.transpose(0, 2, 3, 1))
    frame = tuple(int(v) for v in ishape_normal[1:])
    if math.prod(frame) != math.prod(nhwc.shape[1:]):
        raise BoardError(
            f"driver input {list(ishape_normal)} holds {math.prod(frame)} values "
            f"per frame, images [C, H, W] = {list(pixels.shape[1:])} hold "
            f"{math.prod(nhwc.shape[1:])}"
        )
    return nhwc.reshape(len(pixels), *frame)


def labels_to_scores(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Top-k labels [N, k] (best first) -> float32 scores [N, classes]: k, k-1, ..., 1, else 0."""
    labels = np.rint(np.asarray(labels, dtype=np.float64)).astype(np.int64)
    labels = labels.reshape(len(labels), -1)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise BoardError(
            f"board returned labels in [{labels.min()}, {labels.max()}], "
            f"outside 0..{num_classes - 1}"
        )
    n, k = labels.shape
    scores = np.zeros((n, num_classes), dtype=np.float32)
    np.put_along_axis(scores, labels, np.arange(k, 0, -1, dtype=np.float32)[None], axis=1)
    return scores


class FinnBoardExecutable(BaseExecutable):
    """A loaded ``FINNExampleOverlay`` (or any object with its ``execute``/``batch_size``)."""

    bit_exact = True

    def __init__(
        self,
        overlay: Any,
        io_shape_dict: dict,
        num_classes: int,
        input_shape: tuple[int, int, int] | None = None,
        name: str = "pynq-board",
        outputs: str = "labels",
        hw_batch: int = 64,
    ):
        if outputs not in ("labels", "scores"):
            raise ValueError(f"outputs must be 'labels' or 'scores', got {outputs!r}")
        if io_shape_dict.get("num_inputs", 1) != 1 or io_shape_dict.get("num_outputs", 1) != 1:
            raise BoardError("only single-input, single-output accelerators are supported")
        idt = dtype_name(io_shape_dict["idt"][0])
        if idt != "UINT8":
            raise BoardError(
                f"the accelerator takes {idt} input; the query protocol carries "
                "uint8 pixels (UINT8)"
            )
        self.ishape = tuple(int(v) for v in io_shape_dict["ishape_normal"][0])
        if input_shape is None:
            if len(self.ishape) != 4:
                raise BoardError(
                    f"driver input shape {list(self.ishape)} is not NHWC; give "
                    "input_shape=(C, H, W)"
                )
            _, h, w, c = self.ishape
            input_shape = (c, h, w)
        super().__init__(name, input_shape, num_classes)
        self.overlay = overlay
        self.outputs = outputs
        self.returns = outputs
        self.hw_batch = int(hw_batch)
        board_input(np.zeros((1, *self.input_shape), np.uint8), self.ishape)  # sizes agree
        if self.overlay.batch_size != self.hw_batch:
            self.overlay.batch_size = self.hw_batch

    def forward(self, pixels: np.ndarray) -> np.ndarray:
        frames = board_input(pixels, self.ishape)
        parts = []
        for start in range(0, len(frames), self.hw_batch):
            chunk = frames[start : start + self.hw_batch]
            padded = np.zeros((self.hw_batch, *chunk.shape[1:]), dtype=np.uint8)
            padded[: len(chunk)] = chunk
            out = self.overlay.execute(padded)
            if isinstance(out, list):
                out = out[0]
            parts.append(np.asarray(out).reshape(self.hw_batch, -1)[: len(chunk)])
        out = np.concatenate(parts)
        if self.outputs == "labels":
            return labels_to_scores(out, self.num_classes)
        if out.shape[1] != self.num_classes:
            raise BoardError(
                f"board returned {out.shape[1]} outputs per image, expected "
                f"{self.num_classes} scores"
            )
        return out.astype(np.float32)


def load_driver(driver_dir: str | Path):
    """Import FINN's ``driver.py`` from ``driver_dir`` (its folder goes on ``sys.path``)."""
    driver_dir = Path(driver_dir).resolve()
    path = driver_dir / "driver.py"
    if not path.is_file():
        raise BoardError(f"{driver_dir}: no driver.py (FINN's deploy/driver folder expected)")
    if str(driver_dir) not in sys.path:
        sys.path.insert(0, str(driver_dir))  # driver.py imports driver_base and its helpers
    spec = importlib.util.spec_from_file_location("finn_driver", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for attr in ("io_shape_dict", "FINNExampleOverlay"):
        if not hasattr(module, attr):
            raise BoardError(f"{path} defines no {attr}; not a FINN-generated driver")
    return module


def open_board(
    bitfile: str | Path,
    driver_dir: str | Path,
    num_classes: int,
    input_shape: tuple[int, int, int] | None = None,
    outputs: str = "labels",
    hw_batch: int = 64,
    platform: str = "zynq-iodma",
    fclk_mhz: float = 100.0,
    name: str | None = None,
) -> FinnBoardExecutable:
    """Program the FPGA with ``bitfile`` through FINN's driver and wrap it (PYNQ only)."""
    driver = load_driver(driver_dir)
    overlay = driver.FINNExampleOverlay(
        bitfile_name=str(bitfile),
        platform=platform,
        io_shape_dict=driver.io_shape_dict,
        batch_size=hw_batch,
        fclk_mhz=fclk_mhz,
        runtime_weight_dir=str(Path(driver_dir) / "runtime_weights"),
    )
    return FinnBoardExecutable(
        overlay,
        driver.io_shape_dict,
        num_classes,
        input_shape,
        name or f"pynq:{Path(bitfile).stem}",
        outputs,
        hw_batch,
    )
