"""A small helper that appends nodes and their output tensors to a graph under construction."""

from __future__ import annotations

import numpy as np

from hwbed.ir.graph import Graph, Node, Tensor
from hwbed.ir.types import IntType


class GraphBuilder:
    """Append-only construction of a :class:`Graph` with provisional node names."""

    def __init__(
        self, input_shape: tuple[int, ...], input_type: IntType, input_name: str = "pixels"
    ):
        self.nodes: list[Node] = []
        self.tensors = {input_name: Tensor(input_name, tuple(input_shape), input_type)}
        self.input = input_name

    def shape(self, tensor: str) -> tuple[int, ...]:
        return self.tensors[tensor].shape

    def dtype(self, tensor: str) -> IntType:
        return self.tensors[tensor].dtype

    def producer(self, tensor: str) -> Node:
        """The node that produces ``tensor``."""
        return next(n for n in self.nodes if tensor in n.outputs)

    def add(
        self,
        op: str,
        inputs: list[str],
        shape: tuple[int, ...],
        dtype: IntType,
        attrs: dict | None = None,
        params: dict[str, np.ndarray] | None = None,
        label: str = "",
    ) -> str:
        """Append a node; return the name of its single output tensor."""
        index = len(self.nodes)
        out = f"t{index}_{label or op.lower()}"
        self.tensors[out] = Tensor(out, tuple(int(s) for s in shape), dtype)
        self.nodes.append(Node(f"{op}_{index}", op, list(inputs), [out], attrs or {}, params or {}))
        return out

    def finish(self, output: str, meta: dict) -> Graph:
        graph = Graph(self.nodes, self.tensors, self.input, output, meta)
        graph.validate()
        return graph
