"""The DSP48 simulator as an :class:`~hwbed.attacks.executable.Executable`.

``SimExecutable(graph)`` runs the fast exact path (:mod:`hwbed.sim.fast`);
``ReferenceExecutable(graph)`` the plain numpy reference executor. Both take uint8 (or
[0, 1] float) NCHW images and return the graph's float32 logits, bit for bit equal.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hwbed.attacks.executable import BaseExecutable
from hwbed.ir import reference
from hwbed.ir.graph import Graph
from hwbed.ir.types import GraphError
from hwbed.sim.fast import Plan

PATHS = ("fast", "reference")


def load_graph(source: str | Path) -> Graph:
    """A graph from a build folder (``graph.json``), a saved graph, or a checkpoint (.pt)."""
    path = Path(source)
    if path.is_dir():
        if not (path / "graph.json").is_file():
            if (path / "model.pt").is_file():
                return load_graph(path / "model.pt")
            raise GraphError(f"{path}: no graph.json or model.pt in this folder")
        path = path / "graph.json"
    if path.suffix == ".pt":
        from hwbed.fpga.lowering.lower import lower_checkpoint

        return lower_checkpoint(path)
    if path.suffix not in (".json", ".npz", ""):
        raise GraphError(f"{path}: expected a build folder, graph .json/.npz or checkpoint .pt")
    graph = Graph.load(path)
    if "checkpoint" not in graph.meta and (path.parent / "model.pt").is_file():
        graph.meta["checkpoint"] = str(path.parent / "model.pt")
    return graph


class SimExecutable(BaseExecutable):
    """The integer graph on the simulator's ``path`` ("fast" or "reference")."""

    bit_exact = True

    def __init__(self, graph: Graph, path: str = "fast", name: str | None = None):
        if path not in PATHS:
            raise ValueError(f"unknown simulator path {path!r}; choose one of {', '.join(PATHS)}")
        h, w, c = graph.tensors[graph.input].shape
        classes = graph.tensors[graph.output].shape[-1]
        model = graph.meta.get("model", "graph")
        super().__init__(name or f"dsp48-{path}:{model}", (c, h, w), classes)
        self.graph = graph
        self.path = path
        self.plan = Plan(graph) if path == "fast" else None

    @classmethod
    def load(cls, source: str | Path, path: str = "fast") -> SimExecutable:
        """From a build folder, saved graph (``Graph.save``) or checkpoint."""
        return cls(load_graph(source), path)

    def forward(self, pixels: np.ndarray) -> np.ndarray:
        nhwc = np.ascontiguousarray(pixels.transpose(0, 2, 3, 1))
        if self.plan is not None:
            return self.plan.run(nhwc)
        return reference.execute(self.graph, nhwc)


class ReferenceExecutable(SimExecutable):
    """The graph on :func:`hwbed.ir.reference.execute` (slow, obviously correct)."""

    def __init__(self, graph: Graph, name: str | None = None):
        super().__init__(graph, "reference", name)

    @classmethod
    def load(cls, source: str | Path, path: str = "reference") -> ReferenceExecutable:
        return cls(load_graph(source))
