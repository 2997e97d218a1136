"""Standard-op lowering of QONNX graphs so that plain onnxruntime runs them, and a batch runner.

onnxruntime has no kernels for qonnx's ``Quant``/``BipolarQuant``/``Trunc``. After folding
every constant subgraph (weight quantizers included) :func:`to_onnxruntime` rewrites the
remaining activation quantizers into standard ops with the same float32 arithmetic as qonnx's
numpy references:

- ``BipolarQuant(x, s)`` -> ``Where(x >= 0, 1, -1) * s``
- ``Quant(x, s, z, b)`` -> ``x / s + z``, ``Clip`` to the integer range, rounding, ``- z``, ``* s``
  (1-bit signed: the sign, as qonnx does)
- ``Trunc(x, s, z, bi, so, bo)`` -> ``round(x / s + z) / 2^round(log2(so / s))``, ``Clip``,
  rounding, ``- z / t``, ``* so``

The batch dimension is made symbolic where the graph allows it (checked numerically, see
:func:`to_onnxruntime`), so one :class:`OrtRunner` session serves any batch size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper
from qonnx.core.modelwrapper import ModelWrapper

from hwbed.fpga.export.qonnx_io import ExportError, batches, fix_opset_order, load_qonnx

log = logging.getLogger(__name__)

BATCH = "batch"
"""dim_param of the symbolic batch dimension."""

QONNX_DOMAIN = "qonnx.custom_op.general"
MIN_OPSET = 12
"""GreaterOrEqual needs opset 12."""


def to_onnxruntime(
    qonnx_model: ModelWrapper | onnx.ModelProto | str | Path, *, dynamic_batch: bool = True
) -> onnx.ModelProto:
    """A standard-ops copy of a QONNX model that plain onnxruntime can run.

    With ``dynamic_batch`` the input/output batch dimension becomes ``"batch"`` and constant
    ``Reshape`` shapes that lead with the batch become 0 (copy). A graph whose reshapes fold
    the batch elsewhere (ABC's bases) keeps its fixed batch: the symbolic copy is accepted only
    when a batch of B+1 random images gives the same rows as the fixed graph, B the export
    batch. :func:`is_dynamic` tells which one came back.
    """
    from qonnx.transformation.fold_constants import FoldConstantsFiltered
    from qonnx.transformation.general import RemoveUnusedTensors
    from qonnx.transformation.infer_shapes import InferShapes

    model = ModelWrapper(_clone(load_qonnx(qonnx_model).model))
    fix_opset_order(model.model)
    opset = _onnx_opset(model.model)
    if opset < MIN_OPSET:
        raise ExportError(f"onnx opset {opset} < {MIN_OPSET}; export with a newer opset")
    model = model.transform(InferShapes())
    model = model.transform(FoldConstantsFiltered(lambda _m, _n: True))
    model = model.transform(RemoveUnusedTensors())
    shapes = {vi.name: _dims(vi) for vi in (*model.graph.value_info, *model.graph.input)}
    lower_quant_nodes(model)
    fixed = model.model
    onnx.checker.check_model(fixed)
    if not dynamic_batch:
        return fixed
    symbolic = _symbolic_batch(fixed, shapes)
    return symbolic if _same_rows(fixed, symbolic) else fixed


def lower_quant_nodes(model: ModelWrapper) -> None:
    """Rewrite qonnx ``Quant``/``BipolarQuant``/``Trunc`` nodes into standard ops, in place.

    Also drops unused and input-listed initializers, ``value_info`` and the qonnx opset
    import. Bit widths (and Trunc's scales) must be initializers.
    """
    graph = model.graph
    rewriter = _Rewriter(model)
    nodes = []
    for node in graph.node:
        if node.domain == QONNX_DOMAIN:
            nodes.extend(rewriter.rewrite(node))
        elif node.domain not in ("", "ai.onnx"):
            raise ExportError(f"node {node.name} ({node.domain}:{node.op_type}) has no std-op form")
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in nodes for i in n.input}
    for init in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(init)
    inits = {t.name for t in graph.initializer}
    for inp in [i for i in graph.input if i.name in inits]:
        graph.input.remove(inp)
    del graph.value_info[:]
    imports = [o for o in model.model.opset_import if o.domain in ("", "ai.onnx")]
    del model.model.opset_import[:]
    model.model.opset_import.extend(imports)


def _clone(model: onnx.ModelProto) -> onnx.ModelProto:
    return onnx.ModelProto.FromString(model.SerializeToString())


def is_dynamic(model: onnx.ModelProto) -> bool:
    """True when the model's first input has a symbolic batch dimension."""
    return bool(model.graph.input[0].type.tensor_type.shape.dim[0].dim_param)


class OrtRunner:
    """An onnxruntime session over a standard-ops model (from :func:`to_onnxruntime` or
    :func:`hwbed.fpga.export.qonnx_export.export_onnx`): ``runner(x)`` maps float NCHW images
    to outputs.

    A symbolic-batch model runs ``max_batch`` images per call; a fixed-batch one runs chunks of
    its batch size, the last one zero-padded. onnxruntime's graph optimizations stay off
    unless ``optimize``: its Conv+BatchNormalization fusion changes float rounding, which flips
    the sign of near-zero activations in binary networks (measured: logits off by 2.0 on
    cnv-w1a1), so only the unoptimized session equals qonnx and the twin.
    """

    def __init__(
        self,
        model: onnx.ModelProto | str | Path,
        *,
        threads: int = 0,
        max_batch: int = 256,
        optimize: bool = False,
    ):
        import onnxruntime as ort

        proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 4
        if not optimize:
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        self.session = ort.InferenceSession(
            proto.SerializeToString(), opts, providers=["CPUExecutionProvider"]
        )
        inp = self.session.get_inputs()[0]
        self.input_name, self.output_name = inp.name, self.session.get_outputs()[0].name
        self.batch = (
            max_batch
            if isinstance(inp.shape[0], str) or inp.shape[0] is None
            else int(inp.shape[0])
        )
        self.dynamic = self.batch == max_batch and is_dynamic(proto)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.dynamic:
            parts = [x[i : i + self.batch] for i in range(0, len(x), self.batch)]
        else:
            parts = batches(x, self.batch)
        outs = [self.session.run([self.output_name], {self.input_name: p})[0] for p in parts]
        return np.concatenate(outs)[: len(x)]


def _onnx_opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _dims(vi: onnx.ValueInfoProto) -> list[int]:
    return [d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim]


_ROUNDING: dict[str, Callable[[_Rewriter, str], str]] = {
    "ROUND": lambda r, x: r.op("Round", x),
    "HALF_EVEN": lambda r, x: r.op("Round", x),
    "FLOOR": lambda r, x: r.op("Floor", x),
    "CEIL": lambda r, x: r.op("Ceil", x),
    "DOWN": lambda r, x: r.op("Mul", r.op("Sign", x), r.op("Floor", r.op("Abs", x))),
    "UP": lambda r, x: r.op("Mul", r.op("Sign", x), r.op("Ceil", r.op("Abs", x))),
    "HALF_UP": lambda r, x: r.op(
        "Mul", r.op("Sign", x), r.op("Floor", r.op("Add", r.op("Abs", x), r.const(0.5)))
    ),
    "HALF_DOWN": lambda r, x: r.op(
        "Mul", r.op("Sign", x), r.op("Ceil", r.op("Sub", r.op("Abs", x), r.const(0.5)))
    ),
}


def _int_range(signed: bool, narrow: bool, bits: int) -> tuple[float, float]:
    """qonnx's (min_int, max_int) for a bit width."""
    if signed:
        return -(2.0 ** (bits - 1)) + narrow, 2.0 ** (bits - 1) - 1
    return 0.0, 2.0**bits - 1 - narrow


class _Rewriter:
    """Emits standard-op replacements for qonnx quantization nodes."""

    def __init__(self, model: ModelWrapper):
        self.model = model
        self.nodes: list[onnx.NodeProto] = []
        self.prefix = ""
        self.count = 0

    def rewrite(self, node: onnx.NodeProto) -> list[onnx.NodeProto]:
        self.nodes, self.prefix, self.count = [], node.name or node.output[0], 0
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
        if node.op_type == "BipolarQuant":
            out = self._sign_times(node.input[0], node.input[1])
        elif node.op_type == "Quant":
            out = self._quant(node, attrs)
        elif node.op_type == "Trunc":
            out = self._trunc(node, attrs)
        else:
            raise ExportError(f"no std-op form for {node.op_type} ({node.name})")
        self.op("Identity", out, out_name=node.output[0])
        return self.nodes

    def op(self, op_type: str, *inputs: str, out_name: str | None = None) -> str:
        self.count += 1
        out = out_name or f"{self.prefix}/{op_type}_{self.count}"
        name = f"{self.prefix}/{op_type}_{self.count}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=name))
        return out

    def const(self, value: float | np.ndarray) -> str:
        self.count += 1
        name = f"{self.prefix}/const_{self.count}"
        self.model.graph.initializer.append(
            numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)
        )
        return name

    def _constant(self, name: str, what: str) -> np.ndarray:
        value = self.model.get_initializer(name)
        if value is None:
            raise ExportError(f"{self.prefix}: {what} must be a constant for the std-op rewrite")
        return np.asarray(value, dtype=np.float32)

    def _sign_times(self, x: str, scale: str) -> str:
        sign = self.op(
            "Where",
            self.op("GreaterOrEqual", x, self.const(0.0)),
            self.const(1.0),
            self.const(-1.0),
        )
        s = self.model.get_initializer(scale)
        return sign if s is not None and np.all(s == 1) else self.op("Mul", sign, scale)

    def _round(self, mode: str, x: str) -> str:
        try:
            return _ROUNDING[mode.upper()](self, x)
        except KeyError:
            raise ExportError(f"{self.prefix}: unsupported rounding mode {mode!r}") from None

    def _quant(self, node: onnx.NodeProto, attrs: dict) -> str:
        x, scale, zeropt, bits_name = node.input[:4]
        bits = int(self._constant(bits_name, "bit width").item())
        signed, narrow = bool(attrs.get("signed", 1)), bool(attrs.get("narrow", 0))
        z = self.model.get_initializer(zeropt)
        has_z = z is None or np.any(z != 0)
        y = self.op("Div", x, scale)
        if has_z:
            y = self.op("Add", y, zeropt)
        if bits == 1 and signed:
            y = self.op(
                "Where",
                self.op("GreaterOrEqual", y, self.const(0.0)),
                self.const(1.0),
                self.const(-1.0),
            )
        else:
            lo, hi = _int_range(signed, narrow, bits)
            y = self.op("Clip", y, self.const(lo), self.const(hi))
            y = self._round(attrs.get("rounding_mode", "ROUND"), y)
        if has_z:
            y = self.op("Sub", y, zeropt)
        return self.op("Mul", y, scale)

    def _trunc(self, node: onnx.NodeProto, attrs: dict) -> str:
        if len(node.input) != 6:
            raise ExportError(f"{self.prefix}: only Trunc v2 (6 inputs) is supported")
        x, scale, zeropt, _bits_in, out_scale, bits_out = node.input
        s = self._constant(scale, "scale")
        so = self._constant(out_scale, "output scale")
        z = self._constant(zeropt, "zero point")
        bits = int(self._constant(bits_out, "output bit width").item())
        t = (2.0 ** np.round(np.log2(so / s))).astype(np.float32)
        y = self.op("Round", self.op("Add", self.op("Div", x, scale), zeropt))
        y = self.op("Div", y, self.const(t))
        lo, hi = _int_range(bool(attrs.get("signed", 1)), bool(attrs.get("narrow", 0)), bits)
        y = self.op("Clip", y, self.const(lo), self.const(hi))
        y = self._round(attrs.get("rounding_mode", "FLOOR"), y)
        y = self.op("Sub", y, self.const(z / t))
        return self.op("Mul", y, out_scale)


_BATCH_PRESERVING = frozenset(
    "Abs Add AveragePool BatchNormalization Ceil Clip Conv Div Equal Floor Gemm GlobalAveragePool "
    "GreaterOrEqual Identity LeakyRelu MatMul MaxPool Mul Neg Pad Relu Round Sigmoid Sign Slice "
    "Sub Tanh Where".split()
)
"""Ops whose output keeps a leading batch axis of their (first batch-leading) input."""


def _symbolic_batch(model: onnx.ModelProto, shapes: dict[str, list[int]]) -> onnx.ModelProto:
    """A copy with a symbolic batch dimension.

    Tensors known to lead with the batch axis are tracked from the input through
    ``_BATCH_PRESERVING`` ops; a constant ``Reshape`` shape of such a tensor that starts with
    the export batch gets a 0 there (copy the input's dimension).
    """
    sym = _clone(model)
    graph = sym.graph
    batch = graph.input[0].type.tensor_type.shape.dim[0].dim_value
    inits = {t.name: t for t in graph.initializer}
    leading = {graph.input[0].name}
    for node in graph.node:
        fed = any(i in leading for i in node.input)
        if node.op_type == "Reshape" and fed and node.input[1] in inits:
            target = numpy_helper.to_array(inits[node.input[1]]).copy()
            if target.size and target[0] == batch and shapes.get(node.input[0], [0])[0] == batch:
                target[0] = 0
                inits[node.input[1]].CopyFrom(numpy_helper.from_array(target, node.input[1]))
                leading.add(node.output[0])
        elif node.op_type == "Transpose" and fed:
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), [])
            if perm and perm[0] == 0:
                leading.add(node.output[0])
        elif node.op_type in _BATCH_PRESERVING and fed:
            leading.update(node.output)
    for vi in (*graph.input, *graph.output):
        vi.type.tensor_type.shape.dim[0].dim_param = BATCH
    return sym


def _same_rows(fixed: onnx.ModelProto, symbolic: onnx.ModelProto) -> bool:
    """Does the symbolic model, on B+1 random images, give the fixed model's rows? A note
    says why not (the model then keeps its fixed batch)."""
    from onnxruntime.capi.onnxruntime_pybind11_state import (
        Fail,
        InvalidArgument,
        InvalidGraph,
        RuntimeException,
    )

    batch = fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value
    dims = _dims(fixed.graph.input[0])
    x = np.random.default_rng(0).random((batch + 1, *dims[1:]), dtype=np.float32)
    try:
        got = OrtRunner(symbolic, threads=1, max_batch=batch + 1)(x)
    except (Fail, InvalidArgument, InvalidGraph, RuntimeException) as err:
        # a reshape that folds the batch elsewhere (ABC's bases) fails on B+1 images
        log.info("onnxruntime model keeps its fixed batch of %d: %s", batch, err)
        return False
    ref = OrtRunner(fixed, threads=1)
    want = [ref(x[:batch]), ref(x[1:])]
    rows = [got[:batch], got[1:]]
    close = [np.isclose(g, w, rtol=1e-4, atol=1e-4).mean() for g, w in zip(rows, want, strict=True)]
    if min(close) < 0.99:
        log.info(
            "onnxruntime model keeps its fixed batch of %d: a symbolic one changes rows", batch
        )
        return False
    return True
