"""The op registry: one :class:`OpDef` per node kind, and the per-op tables of each backend.

Every node kind of the integer graph is defined once, in its own module of
:mod:`hwbed.ir.ops` (found by :func:`load_ops`): its FINN name, shape inference, checks, proven
output range, reference semantics and FINN attributes. A backend (the fast kernels, the slice
maps and slice execution, the QONNX renderers, the FINN cost model) keeps a :class:`Backend`
table (:class:`hwbed.ir.backend.Backend`) keyed by op and registers one entry per op.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hwbed.ir.opkit import Proven, Shape
from hwbed.ir.types import GraphError

if TYPE_CHECKING:
    from hwbed.ir.graph import Graph, Node


@dataclass(frozen=True)
class OpDef:
    """Everything the IR knows about one node kind.

    ``finn`` is FINN's name of the hardware node (the node-name prefix ``<finn>_<i>``);
    ``None`` marks an op with no hardware node (``Flatten``: its consumer reads the producer's
    stream). ``arity`` is the number of inputs (``None``: one or more). ``shape`` checks the
    attributes and returns the output shape from the input shapes; ``proven`` checks the params
    and returns the output's proven range from the inputs' (``None`` for a float output; an
    input's range is ``None`` only where ``float_inputs``); ``reference`` is the int64 numpy
    semantics on batched inputs; ``finn_attrs`` the FINN attributes of the hardware node
    (``op_type`` among them where it differs from ``finn``). ``float_params``: the params are
    float32 constants, not integers.
    """

    op: str
    finn: str | None
    shape: Callable[[Node, list[Shape]], Shape]
    proven: Callable[[Graph, Node, list[Proven]], Proven | None]
    reference: Callable[[Node, list[np.ndarray]], np.ndarray]
    finn_attrs: Callable[[Graph, Node], dict[str, Any]] | None = None
    arity: int | None = 1
    float_inputs: bool = False
    float_params: bool = False


OPS: dict[str, OpDef] = {}
"""Op name -> definition, filled by :func:`register` as :mod:`hwbed.ir.ops` is imported."""


def register(opdef: OpDef) -> OpDef:
    """Add a node kind to the registry (once)."""
    if opdef.op in OPS:
        raise ValueError(f"op {opdef.op!r} is registered twice")
    OPS[opdef.op] = opdef
    return opdef


OPS_PACKAGE = "hwbed.ir.ops"
"""Where the op modules live; they import this module, never the reverse (found by name)."""


@functools.cache
def load_ops() -> dict[str, OpDef]:
    """Import every module of :mod:`hwbed.ir.ops` (each registers its op), once; the registry."""
    ops = importlib.import_module(OPS_PACKAGE)
    for info in pkgutil.iter_modules(ops.__path__):
        importlib.import_module(f"{OPS_PACKAGE}.{info.name}")
    return OPS


def op_def(node: Node) -> OpDef:
    """The definition of ``node.op``; an unknown op is a :class:`GraphError` naming the node."""
    opdef = load_ops().get(node.op)
    if opdef is None:
        raise GraphError(f"node {node.name}: unknown op {node.op!r}")
    return opdef
