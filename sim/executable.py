"""The DSP48 simulator as an :class:`~hwbed.ir.executable.Executable`.

``SimExecutable(graph)`` runs the fast exact path (:mod:`hwbed.sim.fast`),
``SimExecutable(graph, "slice")`` the slice-level path (:mod:`hwbed.sim.slice_path`). Both take
uint8 (or [0, 1] float) NCHW images and return the graph's float32 logits, bit for bit those
of :class:`~hwbed.ir.executable.ReferenceExecutable`.
"""

from __future__ import annotations

import numpy as np

from hwbed.ir.executable import GraphExecutable
from hwbed.ir.graph import Graph
from hwbed.sim.fast import Plan
from hwbed.sim.slice_path import execute_slices

PATHS = ("fast", "slice")


class SimExecutable(GraphExecutable):
    """The integer graph on the simulator's ``path`` ("fast" or "slice")."""

    def __init__(self, graph: Graph, path: str = "fast", name: str | None = None):
        if path not in PATHS:
            raise ValueError(f"unknown simulator path {path!r}; choose one of {', '.join(PATHS)}")
        super().__init__(graph, name or f"dsp48-{path}:{graph.meta.get('model', 'graph')}")
        self.path = path
        self.plan = Plan(graph) if path == "fast" else None

    def run(self, frames: np.ndarray) -> np.ndarray:
        if self.plan is not None:
            return self.plan.run(frames)
        return execute_slices(self.graph, frames)
