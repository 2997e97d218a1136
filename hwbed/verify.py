"""``python -m hwbed.verify SOURCE [--n N] [--data NAME]``: do all execution paths agree?

SOURCE is a build folder (``graph.json`` + ``.npz``, optionally ``model.pt``), a saved graph
or a checkpoint. N images (``--data``; by default the graph's data set, else digits, and
random uint8 pixels where that does not fit the graph's input; ``--data random`` asks for
them) run through the fast path, the slice-level path, qonnx's execution of the rendered
graph, the numpy reference and, when a checkpoint is known, the Brevitas twin. Each path is
compared with the reference: % of images with identical scores and % with identical top-1.
Exit status: 0 when all agree, 1 when a path that must be exact (fast, slice, qonnx-render)
differs, 2 on a bad input (one ``error:`` line), 3 when only the twin differs.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hwbed.cli import InputError, add_debug, command, quiet_known_warnings
from hwbed.ir import reference
from hwbed.ir.graph import Graph
from hwbed.ir.types import GraphError
from hwbed.sim.executable import load_graph
from hwbed.sim.fast import Plan

EXACT_PATHS = ("fast", "slice", "qonnx-render")
RANDOM = "random"
"""``--data`` value for uniform random uint8 pixels."""
TWIN_ONLY = 3
"""Exit status when only the twin (not required to be exact) differs."""


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

    ok = exact


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

    def to_dict(self, source: str) -> dict:
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


def check_data(name: str | None) -> None:
    """Refuse a ``--data`` name that is neither a known data set nor ``random``."""
    from hwbed.models.data import available_datasets

    known = (*available_datasets(), RANDOM)
    if name is not None and name not in known:
        raise InputError(f"unknown data set; known: {', '.join(known)}", f"--data {name}")


def input_pixels(
    graph: Graph, n: int, data: str | None, seed: int = 0, *, strict: bool = False
) -> tuple[np.ndarray, str]:
    """N uint8 NCHW images for the graph, and where they came from.

    A data set that cannot be read or does not fit the graph's input gives random pixels
    (said in the origin); with ``strict`` an explicit ``data`` raises :class:`InputError`.
    """
    h, w, c = graph.tensors[graph.input].shape
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
        raise InputError(f"data set {problem}", f"--data {name}")
    reason = f"data set {name!r} {problem}"
    return rng.integers(0, 256, (n, c, h, w), dtype=np.uint8), f"random uint8 pixels: {reason}"


def _compare(
    path: str, got: np.ndarray, ref: np.ndarray, seconds: float, exactness_required: bool
) -> Agreement:
    ref = ref[: len(got)]
    same = np.array([np.array_equal(a, b) for a, b in zip(got, ref, strict=True)])
    top1 = got.argmax(axis=-1) == ref.argmax(axis=-1)
    scores, labels = float(100.0 * same.mean()), float(100.0 * top1.mean())
    return Agreement(path, len(got), scores, labels, seconds, exactness_required)


def _timed(fn: Callable[[], np.ndarray]) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    out = np.asarray(fn())
    return out, time.perf_counter() - t0


def load_twin(graph: Graph):
    """The Brevitas twin of the checkpoint the graph names, or None when it names none."""
    ckpt = graph.meta.get("checkpoint")
    if not ckpt:
        return None
    from hwbed.attacks.executable import TorchTwin
    from hwbed.models.checkpoint import load_checkpoint

    quiet_known_warnings()
    model, meta = load_checkpoint(ckpt)
    return TorchTwin(model, "twin", meta.input_shape, meta.classes)


def verify(
    graph: Graph, pixels: np.ndarray, slice_n: int = 16, qonnx_n: int = 8, twin=None
) -> Report:
    """Run uint8 NCHW ``pixels`` through every available path and compare with the reference.

    ``twin`` (see :func:`load_twin`) defaults to the twin of the graph's checkpoint.
    """
    report = Report()
    nhwc = np.ascontiguousarray(pixels.transpose(0, 2, 3, 1))
    ref, _ = _timed(lambda: reference.execute(graph, nhwc))
    plan = Plan(graph)
    got, sec = _timed(lambda: plan.run(nhwc))
    report.rows.append(_compare("fast", got, ref, sec, True))
    if importlib.util.find_spec("hwbed.sim.slice_path") is not None:
        from hwbed.sim.slice_path import execute_slices

        got, sec = _timed(lambda: execute_slices(graph, nhwc[:slice_n]))
        report.rows.append(_compare("slice", got, ref, sec, True))
    else:
        report.notes.append("slice path skipped: hwbed.sim.slice_path is not importable")
    if importlib.util.find_spec("hwbed.fpga.export.qonnx_render") is not None:
        from hwbed.fpga.export.qonnx_render import run_qonnx_render

        try:
            got, sec = _timed(lambda: run_qonnx_render(graph, nhwc[:qonnx_n]))
        except GraphError as err:  # a graph the float32 rendering refuses: not a mismatch
            report.notes.append(f"qonnx-render refused the graph: {err}")
        else:
            report.rows.append(_compare("qonnx-render", got, ref, sec, True))
    else:
        report.notes.append(
            "qonnx-render skipped: hwbed.fpga.export.qonnx_render is not importable"
        )
    twin = twin if twin is not None else load_twin(graph)
    if twin is not None:
        got, sec = _timed(lambda: twin(pixels))
        report.rows.append(_compare("twin", got, ref, sec, False))
    else:
        report.notes.append("twin skipped: the graph names no checkpoint")
    return report


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hwbed.verify", description=__doc__.split("\n")[0]
    )
    parser.add_argument("source", help="build folder, saved graph (.json) or checkpoint (.pt)")
    parser.add_argument("--n", type=int, default=100, help="images (default 100)")
    parser.add_argument("--data", help="data set, or random (default: the graph's, else digits)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slice-n", type=int, default=16, help="images for the slice path")
    parser.add_argument("--qonnx-n", type=int, default=8, help="images for qonnx (slow)")
    add_debug(parser)
    args = parser.parse_args(argv)
    counts = {"--n": (args.n, 1), "--slice-n": (args.slice_n, 0), "--qonnx-n": (args.qonnx_n, 0)}
    for flag, (value, least) in counts.items():
        if value < least:
            raise InputError(f"must be at least {least}", f"{flag} {value}")
    check_data(args.data)
    source = Path(args.source)
    if not source.exists() and not source.with_suffix(".json").is_file():
        raise InputError("no such build folder, graph or checkpoint", source)
    graph = load_graph(source)
    twin = load_twin(graph)  # a missing or corrupt checkpoint fails now, not after the paths
    pixels, origin = input_pixels(graph, args.n, args.data, args.seed, strict=True)
    report = verify(graph, pixels, args.slice_n, args.qonnx_n, twin)
    print(f"{graph.meta.get('model', 'graph')}: {len(pixels)} images ({origin})")
    print(report.table())
    return report.status


if __name__ == "__main__":
    sys.exit(main())
