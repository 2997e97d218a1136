"""The integer dataflow graph: the contract between lowering, simulator, estimator and writer.

A DAG of hardware nodes over NHWC integer tensors. Every tensor has an :class:`IntType`; every
node has exact integer semantics (``docs/architecture.md`` lists them), so a node's output is
a pure function of its integer inputs. The only float is the final ``Affine`` to logits,
computed in float32 exactly as the Brevitas twin computes it from the integer accumulator.

Node kinds (``op``) are defined in :mod:`hwbed.ir.ops`, one module each (:mod:`hwbed.ir.opdef`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hwbed.ir.opdef import op_def
from hwbed.ir.types import GraphError, IntType

SCHEMA = "hwbed-graph"
SCHEMA_VERSION = 2
"""2: ``Flatten`` is a node (version 1 declared a flat tensor for a spatial producer)."""
PATH_META = ("checkpoint",)
"""Meta keys holding file paths: stored relative to the graph's folder, absolute when loaded."""


@dataclass
class Tensor:
    """A named tensor: NHWC (or N,C for flat) shape without the batch dimension, and type."""

    name: str
    shape: tuple[int, ...]
    dtype: IntType


@dataclass
class Node:
    """One hardware node; ``params`` hold integer (or float32 for Affine) arrays."""

    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Graph:
    """Nodes in topological order, their tensors, and provenance metadata."""

    nodes: list[Node]
    tensors: dict[str, Tensor]
    input: str
    output: str
    meta: dict[str, Any] = field(default_factory=dict)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def producer(self, tensor: str) -> Node | None:
        return next((n for n in self.nodes if tensor in n.outputs), None)

    def consumers(self, tensor: str) -> list[Node]:
        return [n for n in self.nodes if tensor in n.inputs]

    def check_input(self, pixels: np.ndarray) -> None:
        """Refuse a batch whose shape is not [N, *input shape]."""
        expect = self.tensors[self.input].shape
        if pixels.ndim != 1 + len(expect) or tuple(pixels.shape[1:]) != tuple(expect):
            raise GraphError(
                f"input shape {tuple(pixels.shape)} does not match the graph's "
                f"[N, {', '.join(map(str, expect))}]"
            )

    def validate(self) -> None:
        """Check structure: known ops, defined tensors, topological order, param types.

        :func:`~hwbed.ir.checks.check_graph` starts with this, then checks the semantics.
        """
        known = {self.input}
        for node in self.nodes:
            opdef = op_def(node)
            for t in node.inputs:
                if t not in self.tensors:
                    raise GraphError(f"node {node.name}: input tensor {t!r} is not declared")
                if t not in known:
                    raise GraphError(f"node {node.name}: input {t!r} is used before it is produced")
            if len(node.outputs) != 1:
                raise GraphError(f"node {node.name}: {len(node.outputs)} outputs, expected 1")
            for t in node.outputs:
                if t not in self.tensors:
                    raise GraphError(f"node {node.name}: output tensor {t!r} is not declared")
                if t in known:
                    raise GraphError(f"node {node.name}: output {t!r} is already produced")
                known.add(t)
            for key, value in node.params.items():
                if not isinstance(value, np.ndarray):
                    raise GraphError(f"node {node.name}: param {key!r} is not an array")
                if not opdef.float_params and value.dtype.kind not in "iu":
                    raise GraphError(
                        f"node {node.name}: param {key!r} has dtype {value.dtype}, "
                        "expected integers"
                    )
        if self.output not in known:
            raise GraphError(f"graph output {self.output!r} is never produced")
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            raise GraphError("node names are not unique")

    # -- serialisation -------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``<path>.json`` (structure) and ``<path>.npz`` (parameters).

        Paths in the meta (:data:`PATH_META`) are stored relative to the graph's folder when
        they lie inside it, so that the folder can be copied or moved.
        """
        path = Path(path).with_suffix("")
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {
            f"{n.name}/{k}": v for n in self.nodes for k, v in n.params.items()
        }
        meta = {
            k: portable_path(v, path.parent) if k in PATH_META and isinstance(v, str) else v
            for k, v in self.meta.items()
        }
        doc = {
            "schema": SCHEMA,
            "version": SCHEMA_VERSION,
            "input": self.input,
            "output": self.output,
            "meta": meta,
            "tensors": [
                {"name": t.name, "shape": list(t.shape), "dtype": t.dtype.finn}
                for t in self.tensors.values()
            ],
            "nodes": [
                {
                    "name": n.name,
                    "op": n.op,
                    "inputs": n.inputs,
                    "outputs": n.outputs,
                    "attrs": n.attrs,
                    "params": {
                        k: {"dtype": str(v.dtype), "shape": list(v.shape)}
                        for k, v in n.params.items()
                    },
                }
                for n in self.nodes
            ],
        }
        path.with_suffix(".json").write_text(json.dumps(doc, indent=1, default=_jsonable) + "\n")
        np.savez_compressed(path.with_suffix(".npz"), **arrays)
        return path.with_suffix(".json")

    @staticmethod
    def load(path: str | Path) -> Graph:
        """Read a saved graph and check it (:func:`~hwbed.ir.checks.check_graph`).

        A file of an older schema version is refused: rebuild it (``python -m hwbed.build``).

        A corrupt or hand-edited file fails with one line naming the file, the node and the
        field; meta paths are resolved against the graph's folder.
        """
        from hwbed.ir.checks import check_graph  # semantic checks: shapes, types, proven ranges

        path = Path(path).with_suffix("")
        jpath, npath = path.with_suffix(".json"), path.with_suffix(".npz")
        doc = _read_json(jpath)
        arrays = _read_npz(npath)
        try:
            graph = _from_doc(doc, arrays, npath.name)
            check_graph(graph)
        except GraphError as err:
            raise GraphError(f"{jpath}: {err}") from err
        for key in PATH_META:
            if isinstance(graph.meta.get(key), str):
                graph.meta[key] = os.path.abspath(jpath.parent / graph.meta[key])
        return graph


def portable_path(path: str | Path, folder: str | Path) -> str:
    """``path`` as a file in ``folder`` stores it: relative (POSIX) inside it, else absolute."""
    target, base = Path(path).resolve(), Path(folder).resolve()
    if target.is_relative_to(base):
        return target.relative_to(base).as_posix()
    return str(target)


def _read_json(jpath: Path) -> dict:
    """The graph document; a missing, truncated or foreign file fails saying which."""
    try:
        text = jpath.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise GraphError(f"{jpath}: cannot read graph JSON: {err}") from err
    if not text.strip():
        raise GraphError(f"{jpath}: cannot read graph JSON: the file is empty")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        cut = err.pos >= len(text.rstrip()) or err.msg.startswith("Unterminated string")
        what = "truncated" if cut else "not valid JSON"
        raise GraphError(
            f"{jpath}: cannot read graph JSON: {what} at line {err.lineno} "
            f"column {err.colno} ({err.msg})"
        ) from err
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise GraphError(f"{jpath}: not an hwbed graph (schema field)")
    version = doc.get("version")
    if version != SCHEMA_VERSION:
        rebuild = " (an older hwbed wrote it: rebuild it with python -m hwbed.build)"
        old = isinstance(version, int) and 0 < version < SCHEMA_VERSION
        raise GraphError(
            f"{jpath}: schema version {version}, expected {SCHEMA_VERSION}{rebuild if old else ''}"
        )
    return doc


def _read_npz(npath: Path) -> dict[str, np.ndarray]:
    try:
        return dict(np.load(npath, allow_pickle=False))
    except Exception as err:  # zip/npy errors come in many types
        raise GraphError(f"{npath}: cannot read graph parameters: {err}") from err


def _from_doc(doc: dict, arrays: dict[str, np.ndarray], npz: str) -> Graph:
    """Build the graph a document describes; each error names the tensor or node and field."""
    tensors = {}
    for i, t in enumerate(_field(doc, "tensors", list, "graph")):
        name = _field(t, "name", str, f"tensor #{i}")
        if name in tensors:
            raise GraphError(f"tensor {name}: declared twice")
        tensors[name] = Tensor(name, _shape(t, name), _dtype(t, name))
    nodes = [_node(n, i, arrays, npz) for i, n in enumerate(_field(doc, "nodes", list, "graph"))]
    used = {f"{n.name}/{k}" for n in nodes for k in n.params}
    extra = sorted(set(arrays) - used)
    if extra:
        raise GraphError(f"{npz} holds {extra[0]!r}, which the JSON does not declare")
    return Graph(
        nodes,
        tensors,
        _field(doc, "input", str, "graph"),
        _field(doc, "output", str, "graph"),
        _field(doc, "meta", dict, "graph") if "meta" in doc else {},
    )


def _shape(t: dict, name: str) -> tuple[int, ...]:
    shape = _field(t, "shape", list, f"tensor {name}")
    if not shape or not all(_is_int(s) and s > 0 for s in shape):
        raise GraphError(f"tensor {name}: field shape {shape} must be a list of positive integers")
    return tuple(shape)


def _dtype(t: dict, name: str) -> IntType:
    try:
        return IntType.parse(_field(t, "dtype", str, f"tensor {name}"))
    except GraphError as err:
        raise GraphError(f"tensor {name}: field dtype: {err}") from err


def _node(n: dict, i: int, arrays: dict[str, np.ndarray], npz: str) -> Node:
    name = _field(n, "name", str, f"node #{i}")
    where = f"node {name}"
    params = {}
    for key, spec in _field(n, "params", dict, where).items():
        arr = arrays.get(f"{name}/{key}")
        if arr is None:
            raise GraphError(f"{where}: param {key!r} missing from {npz}")
        shape = _field(spec, "shape", list, f"{where} param {key!r}")
        dtype = _field(spec, "dtype", str, f"{where} param {key!r}")
        if list(arr.shape) != shape or str(arr.dtype) != dtype:
            raise GraphError(
                f"{where}: param {key!r} is {arr.dtype}{list(arr.shape)} in "
                f"{npz} but the JSON says {dtype}{shape}"
            )
        params[key] = arr
    return Node(
        name,
        _field(n, "op", str, where),
        _names(n, "inputs", where),
        _names(n, "outputs", where),
        _field(n, "attrs", dict, where),
        params,
    )


def _names(n: dict, key: str, where: str) -> list[str]:
    names = _field(n, key, list, where)
    if not all(isinstance(t, str) for t in names):
        raise GraphError(f"{where}: field {key!r} must list tensor names, got {names}")
    return names


def _is_int(value) -> bool:
    """An integer (JSON ``true`` is not one)."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _field(obj: dict, key: str, kind: type, where: str):
    if not isinstance(obj, dict) or key not in obj:
        raise GraphError(f"{where}: missing field {key!r}")
    if not isinstance(obj[key], kind):
        raise GraphError(
            f"{where}: field {key!r} must be {kind.__name__}, got {type(obj[key]).__name__}"
        )
    return obj[key]


def _jsonable(value):
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, IntType):
        return value.finn
    raise TypeError(f"cannot serialise {type(value).__name__}")
