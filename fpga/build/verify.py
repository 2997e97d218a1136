"""Do all execution paths of a graph agree? The build's verify step and ``python -m hwbed.verify``.

Every path is an :class:`~hwbed.ir.executable.Executable` run on the same uint8 images and
compared with the reference executor (:class:`~hwbed.ir.executable.ReferenceExecutable`):
the simulator's fast and slice-level paths, qonnx's execution of the rendered graph (an
executor hwbed did not write; skipped without qonnx) and, when the graph names a checkpoint,
the Brevitas twin. Each gives the % of images with identical scores and with identical top-1.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from hwbed.fpga.build.sources import load_twin
from hwbed.ir.executable import (
    Executable,
    GraphExecutable,
    ReferenceExecutable,
    TorchTwin,
    graph_input_chw,
)
from hwbed.ir.graph import Graph
from hwbed.ir.types import GraphError
from hwbed.sim.executable import SimExecutable

RANDOM = "random"
"""``data`` value for uniform random uint8 pixels."""
TWIN_ONLY = 3
"""Report status when only the twin (not required to be exact) differs."""


class VerifyError(ValueError):
    """Images that cannot be had as asked: ``what (culprit)``."""


@dataclass
class Agreement:
    """One path against the reference on the images it ran."""

    path: str
    images: int
    same_scores: float
    same_top1: float
    seconds: float
    exactness_required: bool
    """Whether the path promises identical scores (the twin does not: float, not integer)."""

    @property
    def exact(self) -> bool:
        """Measured: identical scores on every image."""
        return bool(self.same_scores == 100.0)


@dataclass
class Report:
    rows: list[Agreement] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def status(self) -> int:
        """0: all exact; 1: a path required to be exact differs; 3: only the twin differs."""
        if any(not r.exact for r in self.rows if r.exactness_required):
            return 1
        return TWIN_ONLY if any(not r.exact for r in self.rows) else 0

    def to_dict(self, source: str) -> dict[str, Any]:
        """JSON-ready form (what the build's verify step writes to verify.json).

        Each row holds ``exactness_required`` (the path promises identical scores) and
        ``exact`` (it gave them on every image).
        """
        return {
            "source": source,
            "ok": self.status == 0,
            "status": self.status,
            "rows": [{**asdict(r), "exact": r.exact} for r in self.rows],
            "notes": self.notes,
        }

    def table(self) -> str:
        lines = [
            f"{'path':14s} {'images':>6s} {'same scores':>12s} {'same top-1':>11s} "
            f"{'seconds':>8s}  verdict"
        ]
        for r in self.rows:
            verdict = "ok" if r.exact else "MISMATCH" if r.exactness_required else "MISMATCH (twin)"
            lines.append(
                f"{r.path:14s} {r.images:6d} {r.same_scores:11.1f}% {r.same_top1:10.1f}% "
                f"{r.seconds:8.2f}  {verdict}"
            )
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


class QonnxRenderExecutable(GraphExecutable):
    """The graph rendered to QONNX and run by qonnx's ``execute_onnx`` (slow)."""

    def __init__(self, graph: Graph, name: str | None = None):
        super().__init__(graph, name or f"qonnx-render:{graph.meta.get('model', 'graph')}")

    def run(self, frames: np.ndarray) -> np.ndarray:
        from hwbed.fpga.export.qonnx_render import run_qonnx_render

        return np.asarray(run_qonnx_render(self.graph, frames))


def input_pixels(
    graph: Graph, n: int, data: str | None, seed: int = 0, *, strict: bool = False
) -> tuple[np.ndarray, str]:
    """N uint8 NCHW images for the graph, and where they came from.

    A data set that cannot be read or does not fit the graph's input gives random pixels
    (said in the origin); with ``strict`` an explicit ``data`` raises :class:`VerifyError`.
    """
    c, h, w = graph_input_chw(graph)
    rng = np.random.default_rng(seed)
    if data == RANDOM:
        return rng.integers(0, 256, (n, c, h, w), dtype=np.uint8), "random uint8 pixels"
    name = data or graph.meta.get("data") or "digits"
    from hwbed.models.data import load_dataset

    try:
        x, _, _ = load_dataset(name, "test", size=h, limit=n, seed=seed)
    except (ValueError, OSError) as err:
        problem = f"unavailable: {err}"
    else:
        if x.shape[1:] == (c, h, w):
            return x[:n], f"{name} test split"
        problem = f"has images {tuple(x.shape[1:])}, the graph takes {(c, h, w)}"
    if strict and data is not None:
        raise VerifyError(f"data set {problem} (--data {name})")
    reason = f"data set {name!r} {problem}"
    return rng.integers(0, 256, (n, c, h, w), dtype=np.uint8), f"random uint8 pixels: {reason}"


def graph_twin(graph: Graph) -> TorchTwin | None:
    """The twin of the checkpoint the graph names, or None when it names none."""
    ckpt = graph.meta.get("checkpoint")
    return load_twin(ckpt) if ckpt else None


def verify(
    graph: Graph,
    pixels: np.ndarray,
    slice_n: int = 16,
    qonnx_n: int = 8,
    twin: Executable | None = None,
) -> Report:
    """Run uint8 NCHW ``pixels`` through every available path and compare with the reference.

    ``twin`` (see :func:`graph_twin`) defaults to the twin of the graph's checkpoint.
    """
    report = Report()
    ref, _ = _timed(ReferenceExecutable(graph), pixels)
    report.rows.append(_compare("fast", *_timed(SimExecutable(graph), pixels), ref, True))
    slices = SimExecutable(graph, "slice")
    report.rows.append(_compare("slice", *_timed(slices, pixels[:slice_n]), ref, True))
    if importlib.util.find_spec("qonnx") is None:
        report.notes.append("qonnx-render skipped: qonnx is not installed (hwbed[export])")
    else:
        try:
            got, sec = _timed(QonnxRenderExecutable(graph), pixels[:qonnx_n])
        except GraphError as err:  # a graph the float32 rendering refuses: not a mismatch
            report.notes.append(f"qonnx-render refused the graph: {err}")
        else:
            report.rows.append(_compare("qonnx-render", got, sec, ref, True))
    twin = twin if twin is not None else graph_twin(graph)
    if twin is not None:
        report.rows.append(_compare("twin", *_timed(twin, pixels), ref, False))
    else:
        report.notes.append("twin skipped: the graph names no checkpoint")
    return report


def _timed(executable: Executable, pixels: np.ndarray) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    out = np.asarray(executable(pixels))
    return out, time.perf_counter() - t0


def _compare(
    path: str, got: np.ndarray, seconds: float, ref: np.ndarray, exactness_required: bool
) -> Agreement:
    ref = ref[: len(got)]
    same = np.array([np.array_equal(a, b) for a, b in zip(got, ref, strict=True)])
    top1 = got.argmax(axis=-1) == ref.argmax(axis=-1)
    scores, labels = float(100.0 * same.mean()), float(100.0 * top1.mean())
    return Agreement(path, len(got), scores, labels, seconds, exactness_required)
