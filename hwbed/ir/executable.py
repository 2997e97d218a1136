"""The ``Executable`` protocol: a network at the hardware boundary, as attacks see it.

An executable takes a batch of images [N, C, H, W] and returns class scores [N, classes].
uint8 pixels pass unchanged; float images in [0, 1] are put on the 8-bit grid first
(``round(255 x)``, half to even, saturated to 0..255), because that is all the hardware can
receive. Every image counts as one query.

``returns`` says what the scores mean: ``"scores"`` (logits, comparable across classes) or
``"labels"`` (a label-only device such as a FINN build ending in LabelSelect: its rows are
rank codes k, k-1, ..., 1 for the top-k labels and 0 elsewhere, good for argmax only).

Here: the protocol, :class:`BaseExecutable` (input checks, query counting),
:class:`TorchTwin` (torch imported lazily: the board-side query server runs without it), the
executables of an integer graph (:class:`GraphExecutable`, :class:`ReferenceExecutable`) and
the one graph locator (:func:`find_graph`, :func:`load_graph`). The other kinds (built by
:func:`hwbed.attacks.backends.make_executable`): ``sim`` (:mod:`hwbed.sim.executable`),
``ort`` and ``qonnx`` (:mod:`hwbed.attacks.backends`), ``remote``
(:mod:`hwbed.fpga.deploy.remote`) and ``finn`` (:mod:`hwbed.fpga.deploy.board_backend`).
"""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from hwbed.ir import reference
from hwbed.ir.graph import SCHEMA, Graph
from hwbed.ir.types import GraphError

if TYPE_CHECKING:
    import torch
    from torch import nn

GRAPH_SUFFIXES = (".json", ".npz", "")
"""What a saved graph's path may end with (``Graph.save`` writes ``.json`` + ``.npz``)."""


@runtime_checkable
class Executable(Protocol):
    """What every backend (twin, onnxruntime, qonnx, DSP48 sim, FINN, remote board) offers."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    bit_exact: bool
    returns: str
    queries: int

    def __call__(self, images: np.ndarray | torch.Tensor) -> np.ndarray: ...


def to_pixels(images: Any, input_shape: tuple[int, ...], clip: bool = False) -> np.ndarray:
    """Validate a batch and put it on the uint8 grid; errors name the culprit.

    Float images are rounded to the nearest of the 256 levels of [0, 1]. A value that does not
    round into 0..255 is refused (the classic mistakes: 0..255 floats, or normalised images
    with negative values) unless ``clip`` asks for saturation explicitly.
    """
    if hasattr(images, "detach"):  # a torch tensor
        images = images.detach().cpu().numpy()
    x = np.asarray(images)
    if x.ndim == len(input_shape):
        x = x[None]
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(input_shape):
        raise ValueError(
            f"expected images [N, {', '.join(map(str, input_shape))}], got shape {tuple(x.shape)}"
        )
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind != "f":
        raise ValueError(f"expected uint8 pixels or float images in [0, 1], got dtype {x.dtype}")
    bad = ~np.isfinite(x)
    if bad.any():
        raise ValueError(f"image {int(np.argwhere(bad)[0][0])} holds NaN or infinite pixels")
    levels = np.rint(x.astype(np.float64) * 255.0)
    outside = (levels < 0) | (levels > 255)
    if outside.any() and not clip:
        raise ValueError(_out_of_range(x, outside))
    return np.clip(levels, 0, 255).astype(np.uint8)


def _out_of_range(x: np.ndarray, outside: np.ndarray) -> str:
    """What a float batch outside [0, 1] looks like, and what to pass instead."""
    lo, hi = float(x.min()), float(x.max())
    first = int(np.argwhere(outside)[0][0])
    hint = "clip it, or pass clip=True to saturate"
    if lo >= 0 and 2 <= hi <= 255:
        hint = "looks like 0..255 pixels: pass uint8, or divide by 255"
    elif lo < 0:
        hint = "looks normalised (mean/std): pass images in [0, 1]; the network normalises"
    return (
        f"float images must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}] "
        f"(first at image {first}): {hint}"
    )


class BaseExecutable:
    """Input checking and query counting around a backend's ``forward(pixels)``."""

    bit_exact = False
    returns = "scores"

    def __init__(self, name: str, input_shape: tuple[int, ...], num_classes: int):
        self.name = name
        self.input_shape = tuple(int(v) for v in input_shape)
        self.num_classes = int(num_classes)
        self.queries = 0

    def __call__(self, images: Any, clip: bool = False) -> np.ndarray:
        """Scores [N, classes] of uint8 images or float images in [0, 1] (``clip``: saturate
        floats outside it instead of refusing them)."""
        pixels = to_pixels(images, self.input_shape, clip=clip)
        scores = np.asarray(self.forward(pixels), dtype=np.float32)
        self.queries += len(pixels)
        return scores

    def forward(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 [N, C, H, W] -> float32 scores [N, classes]; every backend defines it."""
        raise TypeError(f"{type(self).__name__} does not define forward()")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, queries={self.queries})"


class TorchTwin(BaseExecutable):
    """The Brevitas (or float) twin on the CPU/GPU: pixels / 255 -> logits."""

    def __init__(
        self,
        model: nn.Module,
        name: str,
        input_shape: tuple[int, ...],
        num_classes: int,
        device: str = "cpu",
    ):
        super().__init__(name, input_shape, num_classes)
        self.model = model.to(device).eval()
        self.device = device

    def forward(self, pixels: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(pixels).to(self.device, torch.float32).div_(255.0)
        with torch.no_grad():
            return self.model(x).float().cpu().numpy()


class GraphExecutable(BaseExecutable):
    """An integer graph as an Executable: uint8 NCHW pixels in, the graph's logits out.

    Subclasses define :meth:`run` on the graph's input frames (NHWC, or the flat frame of a
    graph whose input is flat); the output tensor holds the logits.
    """

    bit_exact = True

    def __init__(self, graph: Graph, name: str):
        super().__init__(name, graph_input_chw(graph), graph.tensors[graph.output].shape[-1])
        self.graph = graph

    @classmethod
    def load(cls, source: str | Path, *args: Any, **options: Any) -> GraphExecutable:
        """From a build folder or a saved graph (:func:`load_graph`)."""
        return cls(load_graph(source), *args, **options)

    def forward(self, pixels: np.ndarray) -> np.ndarray:
        frame = self.graph.tensors[self.graph.input].shape
        frames = np.ascontiguousarray(pixels.transpose(0, 2, 3, 1)).reshape(len(pixels), *frame)
        return np.asarray(self.run(frames), dtype=np.float32).reshape(len(pixels), -1)

    def run(self, frames: np.ndarray) -> np.ndarray:
        """The graph's output for a batch of its input frames."""
        raise TypeError(f"{type(self).__name__} does not define run()")


class ReferenceExecutable(GraphExecutable):
    """The graph on :func:`hwbed.ir.reference.execute` (slow, obviously correct).

    Bit-exact by definition: it states the graph's integer semantics that the simulator and
    the hardware must reproduce.
    """

    def __init__(self, graph: Graph, name: str | None = None):
        super().__init__(graph, name or f"reference:{graph.meta.get('model', 'graph')}")

    def run(self, frames: np.ndarray) -> np.ndarray:
        return np.asarray(reference.execute(self.graph, frames))


def graph_input_chw(graph: Graph) -> tuple[int, int, int]:
    """The (C, H, W) image a graph takes: ``meta['input_chw']``, else its NHWC input tensor."""
    if "input_chw" in graph.meta:
        c, h, w = (int(v) for v in graph.meta["input_chw"])
        return (c, h, w)
    shape = graph.tensors[graph.input].shape
    if len(shape) != 3:
        raise GraphError(
            f"graph input {graph.input!r} has shape {shape}; cannot tell (C, H, W) "
            "without meta['input_chw']"
        )
    h, w, c = shape
    return (c, h, w)


def find_graph(source: str | Path) -> Path:
    """The graph JSON of a saved graph, or of a build folder (``graph.json`` first, then any
    hwbed graph in it).

    A missing path or a folder without a graph is a FileNotFoundError; a path that is no
    graph's, or a graph file (a folder's ``graph.json``) that is not JSON (truncated, say), is
    a GraphError, not skipped.
    """
    path = Path(source)
    if not path.is_dir():
        if path.suffix not in GRAPH_SUFFIXES:
            raise GraphError(f"{path}: expected a build folder or a saved graph (.json/.npz)")
        if not path.with_suffix(".json").is_file():
            raise FileNotFoundError(errno.ENOENT, "no such graph or build folder", str(path))
        _read_json(path.with_suffix(".json"))
        return path.with_suffix(".json")
    not_json = []
    for candidate in [path / "graph.json", *sorted(path.glob("*.json"))]:
        if not candidate.is_file():
            continue
        try:
            doc = _read_json(candidate)
        except GraphError:
            if candidate.name == "graph.json":
                raise
            not_json.append(candidate.name)
            continue
        if isinstance(doc, dict) and doc.get("schema") == SCHEMA:
            return candidate
    hint = f"; not JSON: {', '.join(not_json)}" if not_json else ""
    raise FileNotFoundError(
        errno.ENOENT, f"no hwbed graph JSON (schema {SCHEMA!r}) in this folder{hint}", str(path)
    )


def load_graph(source: str | Path) -> Graph:
    """The checked graph :func:`find_graph` locates; a ``model.pt`` beside a graph that names
    no checkpoint becomes its ``meta['checkpoint']`` (the twin of a build folder)."""
    path = find_graph(source)
    graph = Graph.load(path)
    if "checkpoint" not in graph.meta and (path.parent / "model.pt").is_file():
        graph.meta["checkpoint"] = str(path.parent / "model.pt")
    return graph


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise GraphError(f"{path}: truncated or corrupt graph JSON: {err}") from err
