"""Render the integer dataflow graph as a QONNX model and run it with qonnx's executor.

The rendering uses standard ONNX ops and qonnx 1.0.0's custom ops (domain
``qonnx.custom_op.general``): ``MultiThreshold`` for thresholds, ``Im2Col`` for the sliding
window, ``XnorPopcountMatMul`` for binary layers without zero padding, ``MaxPoolNHWC`` for max
pooling (a padded, strided ``Pool`` with its window and padding too: onnxruntime pads with
-inf, which checks the graph's padding by the type's minimum). Tensors are float32 carriers
of integers, so the rendering refuses any node whose proven magnitude (partial sums
included) or threshold reaches 2^24, beyond which float32 is no longer exact. Every integer
tensor carries its qonnx DataType annotation; qonnx checks the values against it on every
node, and :func:`run_qonnx_render` turns any violation into an error. qonnx is an executor
hwbed did not write: agreement with :mod:`hwbed.ir.reference` is an independent check of
the graph semantics.

The rendering has batch size 1, as FINN's models do: qonnx 1.0.0's ``Im2Col`` interleaves the
images of a batch larger than one (its NCHW column matrix is reshaped with the batch axis
first), so :func:`run_qonnx_render` executes one image at a time.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from onnx import TensorProto, helper, numpy_helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx

from hwbed.ir.graph import Graph, Node
from hwbed.ir.types import BIPOLAR, GraphError, IntType

DOMAIN = "qonnx.custom_op.general"
OPSET = 13
FLOAT_EXACT = 2**24
"""float32 represents every integer of magnitude up to 2^24 exactly."""


def _magnitude(t: IntType) -> int:
    return max(abs(t.min), abs(t.max))


class _Renderer:
    """Accumulates ONNX nodes, initializers, value infos and DataType annotations."""

    def __init__(self, graph: Graph, batch: int):
        self.g, self.batch = graph, batch
        self.nodes: list = []
        self.inits: list = []
        self.infos: dict[str, tuple[int, tuple[int, ...]]] = {}
        self.dtypes: dict[str, str] = {}
        self.binary: dict[str, str] = {}  # bipolar tensor -> its {0, 1} rendering
        self.pools, self.skipped = self._fusable_pools()
        self.fused = self._fusable_pads()

    # -- helpers -----------------------------------------------------------------------------
    def const(self, name: str, value: np.ndarray, dtype: str | None = None) -> str:
        self.inits.append(numpy_helper.from_array(value, name))
        if dtype:
            self.dtypes[name] = dtype
        return name

    def emit(
        self,
        op: str,
        inputs: list[str],
        out: str,
        shape: tuple[int, ...],
        dtype: str | None,
        domain: str = "",
        elem: int = TensorProto.FLOAT,
        **attrs,
    ) -> str:
        self.nodes.append(
            helper.make_node(op, inputs, [out], name=f"{out}:{op}", domain=domain, **attrs)
        )
        self.infos[out] = (elem, (self.batch, *shape))
        if dtype:
            self.dtypes[out] = dtype
        return out

    def _sole_user(self, tensor: str, op: str) -> Node | None:
        """The only consumer of ``tensor`` if it is an ``op`` (and ``tensor`` no output)."""
        users = self.g.consumers(tensor)
        if len(users) == 1 and users[0].op == op and tensor != self.g.output:
            return users[0]
        return None

    def _fusable_pools(self) -> tuple[dict[str, tuple[str, int, int, int]], set[str]]:
        """Pools whose windows come from a sliding window read by nothing else render as one
        ``MaxPoolNHWC`` (onnxruntime's MaxPool, padding with -inf) on the window's input, or
        on the padding's input when the pad value is the input type's minimum or less (then
        -inf padding gives the same maxima, which qonnx thus checks independently). Returns
        {pool name: (source tensor, pad, kernel, stride)} and the names rendered inside."""
        pools, inside = {}, set()
        for node in self.g.nodes:
            src = self.g.producer(node.inputs[0]) if node.op == "Pool" else None
            if src is None or src.op != "ConvolutionInputGenerator":
                continue
            if self._sole_user(src.outputs[0], "Pool") is not node:
                continue
            x, q = src.inputs[0], 0
            pad = self.g.producer(x)
            if (
                pad is not None
                and pad.op == "FMPadding"
                and self._sole_user(pad.outputs[0], "ConvolutionInputGenerator") is src
                and pad.attrs["pad_value"] <= self.itype(pad.inputs[0]).min
            ):
                x, q = pad.inputs[0], pad.attrs["pad"]
                inside.add(pad.name)
            inside.add(src.name)
            pools[node.name] = (x, q, src.attrs["kernel"], src.attrs["stride"])
        return pools, inside

    def _fusable_pads(self) -> set[str]:
        """FMPadding nodes whose only consumer is a sliding window and whose input type holds
        the pad value: they become Im2Col's pad_amount; the others render as Pad."""
        fused = set()
        for node in self.g.nodes:
            if node.op != "FMPadding" or node.name in self.skipped:
                continue
            users = self.g.consumers(node.outputs[0])
            in_type = self.g.tensors[node.inputs[0]].dtype
            if (
                len(users) == 1
                and users[0].op == "ConvolutionInputGenerator"
                and users[0].name not in self.skipped
                and node.outputs[0] != self.g.output
                and DataType[in_type.finn].allowed(node.attrs["pad_value"])
            ):
                fused.add(node.name)
        return fused

    def shape(self, tensor: str) -> tuple[int, ...]:
        return self.g.tensors[tensor].shape

    def itype(self, tensor: str) -> IntType:
        return self.g.tensors[tensor].dtype

    def thresholds(self, node: Node, x: str, thr: np.ndarray, out: str, shape, dtype: str) -> str:
        if np.abs(thr).max(initial=0) >= FLOAT_EXACT:
            raise GraphError(
                f"node {node.name}: field thresholds reaches 2^24, not exact in "
                "float32; the QONNX rendering cannot represent it"
            )
        layout = {2: "NC", 3: "NWC", 4: "NHWC"}[len(shape) + 1]
        t = self.const(f"{out}/thresholds", thr.astype(np.float32))
        return self.emit(
            "MultiThreshold",
            [x, t],
            out,
            shape,
            dtype,
            DOMAIN,
            out_dtype=dtype,
            out_scale=float(node.attrs["out_scale"]),
            out_bias=float(node.attrs["out_bias"]),
            data_layout=layout,
        )

    # -- nodes -------------------------------------------------------------------------------
    def node(self, node: Node) -> None:
        """Render one node into tensor ``node.outputs[0]``, reshaping if the graph relabels it."""
        out = node.outputs[0]
        if (node.op == "FMPadding" and node.name in self.fused) or node.name in self.skipped:
            return
        declared = self.shape(out)
        natural = self.natural_shape(node)
        if math.prod(natural) != math.prod(declared):
            raise GraphError(
                f"node {node.name}: output {out!r} is declared {declared} but the op "
                f"produces {natural}"
            )
        target = out if natural == declared else f"{out}/natural"
        dtype = self.itype(out)
        getattr(self, f"r_{node.op}")(
            node, target, natural, None if dtype.kind == "float" else dtype.finn
        )
        if target != out:
            s = self.const(f"{out}/shape", np.array([self.batch, *declared], dtype=np.int64))
            self.emit(
                "Reshape", [target, s], out, declared, None if dtype.kind == "float" else dtype.finn
            )

    def natural_shape(self, node: Node) -> tuple[int, ...]:
        """Shape of a node's result before the graph relabels it (flattening)."""
        a = node.attrs
        s = self.shape(node.inputs[0])
        if node.op in ("Thresholding", "AddStreams", "Affine"):
            return s
        if node.op == "FMPadding":
            return (s[0] + 2 * a["pad"], s[1] + 2 * a["pad"], s[2])
        if node.op == "ConvolutionInputGenerator":
            k, st = a["kernel"], a["stride"]
            return ((s[0] - k) // st + 1, (s[1] - k) // st + 1, k * k * s[2])
        if node.op == "MVAU":
            return (*s[:-1], a["MH"])
        if node.op == "StreamingMaxPool":
            return (s[0] // a["kernel"], s[1] // a["kernel"], s[2])
        if node.op == "Pool":
            return (s[0], s[1], a["channels"])
        if node.op == "DownSampler":
            return (-(-s[0] // a["stride"]), -(-s[1] // a["stride"]), s[2])
        if node.op == "ChannelPad":
            return (*s[:-1], s[-1] + a["before"] + a["after"])
        if node.op == "StreamingConcat":
            return (*s[:-1], sum(self.shape(t)[-1] for t in node.inputs))
        if node.op == "GlobalAccPool":
            return (s[-1],)
        if node.op == "LabelSelect":
            return (*s[:-1], a["k"])
        raise GraphError(f"node {node.name}: no QONNX rendering for op {node.op!r}")

    def r_Thresholding(self, node, out, shape, dtype):
        self.thresholds(node, node.inputs[0], node.params["thresholds"], out, shape, dtype)

    def r_FMPadding(self, node, out, shape, dtype):
        q = node.attrs["pad"]
        pads = self.const(f"{out}/pads", np.array([0, q, q, 0, 0, q, q, 0], dtype=np.int64))
        value = self.const(f"{out}/value", np.array(node.attrs["pad_value"], dtype=np.float32))
        self.emit("Pad", [node.inputs[0], pads, value], out, shape, dtype, mode="constant")

    def r_ConvolutionInputGenerator(self, node, out, shape, dtype):
        x, pad, value = node.inputs[0], 0, 0
        src = self.g.producer(x)
        if src is not None and src.name in self.fused:
            x, pad, value = src.inputs[0], src.attrs["pad"], src.attrs["pad_value"]
            self.dtypes.setdefault(x, self.itype(x).finn)
        k, s = node.attrs["kernel"], node.attrs["stride"]
        self.emit(
            "Im2Col",
            [x],
            out,
            shape,
            dtype,
            DOMAIN,
            stride=[s, s],
            kernel_size=[k, k],
            input_shape=str((self.batch, *self.shape(x))),
            pad_amount=[pad] * 4,
            pad_value=int(value),
        )

    def r_MVAU(self, node, out, shape, dtype):
        x, w = node.inputs[0], node.params["weights"]
        in_type = self.itype(x)
        bound = int(np.abs(w).sum(axis=1).max()) * _magnitude(in_type)
        if bound >= FLOAT_EXACT:
            raise GraphError(
                f"node {node.name}: proven partial-sum bound {bound} reaches 2^24; "
                "a float32 MatMul would not be exact"
            )
        thr = node.params.get("thresholds")
        acc_shape = (*self.shape(x)[:-1], w.shape[0])
        acc, acc_type = (
            (out, dtype)
            if thr is None
            else (f"{out}/acc", node.attrs.get("acc_type") or IntType.fitting(-bound, bound).finn)
        )
        if in_type == BIPOLAR and (np.abs(w) == 1).all():
            self._xnor(x, w, acc, acc_shape, acc_type, thresholded=thr is not None)
            if thr is not None:  # d >= T  <=>  2P - K >= T  <=>  P >= ceil((T + K) / 2)
                k = w.shape[1]
                self.thresholds(node, acc, -((-(thr + k)) // 2), out, shape, dtype)
            return
        wt = self.const(
            f"{out}/weights",
            w.T.astype(np.float32),
            IntType.fitting(int(w.min()), int(w.max())).finn,
        )
        self.emit("MatMul", [x, wt], acc, acc_shape, acc_type)
        if thr is not None:
            self.thresholds(node, acc, thr, out, shape, dtype)

    def _xnor(self, x, w, acc, shape, acc_type, thresholded: bool) -> None:
        """XnorPopcountMatMul on {0, 1} codes; P = popcount of agreements, d = 2P - K."""
        k = w.shape[1]
        xb = self.binary.get(x)
        if xb is None:  # bipolar -> binary: (x + 1) / 2, exact
            one = self.const(f"{x}/one", np.array(1.0, dtype=np.float32))
            half = self.const(f"{x}/half", np.array(0.5, dtype=np.float32))
            s = self.shape(x)
            y = self.emit("Add", [x, one], f"{x}/plus1", s, None)
            xb = self.binary[x] = self.emit("Mul", [y, half], f"{x}/binary", s, "BINARY")
        wb = self.const(f"{acc}/weights", ((w.T + 1) // 2).astype(np.float32), "BINARY")
        pop = acc if thresholded else f"{acc}/popcount"
        self.emit("XnorPopcountMatMul", [xb, wb], pop, shape, IntType.fitting(0, k).finn, DOMAIN)
        if not thresholded:
            two = self.const(f"{acc}/two", np.array(2.0, dtype=np.float32))
            minus_k = self.const(f"{acc}/minus_k", np.array(-k, dtype=np.float32))
            y = self.emit("Mul", [pop, two], f"{acc}/twice", shape, IntType.fitting(0, 2 * k).finn)
            self.emit("Add", [y, minus_k], acc, shape, acc_type)

    def r_StreamingMaxPool(self, node, out, shape, dtype):
        k = node.attrs["kernel"]
        self.emit(
            "MaxPoolNHWC",
            [node.inputs[0]],
            out,
            shape,
            dtype,
            DOMAIN,
            kernel_shape=[k, k],
            pads=[0, 0, 0, 0],
            strides=[k, k],
        )

    def r_Pool(self, node, out, shape, dtype):
        if node.name in self.pools:  # window (and padding) fused: one MaxPoolNHWC
            x, q, k, s = self.pools[node.name]
            self.dtypes.setdefault(x, self.itype(x).finn)
            self.emit(
                "MaxPoolNHWC",
                [x],
                out,
                shape,
                dtype,
                DOMAIN,
                kernel_shape=[k, k],
                pads=[q] * 4,
                strides=[s, s],
            )
            return
        k, c = node.attrs["kernel"], node.attrs["channels"]  # windows -> [.., k*k, C] -> max
        taps = (*shape[:-1], k * k, c)
        dims = self.const(f"{out}/taps_shape", np.array([self.batch, *taps], dtype=np.int64))
        win = self.emit("Reshape", [node.inputs[0], dims], f"{out}/taps", taps, dtype)
        self.emit("ReduceMax", [win], out, shape, dtype, axes=[len(taps) - 1], keepdims=0)

    def r_AddStreams(self, node, out, shape, dtype):
        self.emit("Add", list(node.inputs), out, shape, dtype)

    def r_DownSampler(self, node, out, shape, dtype):
        h, w, _ = self.shape(node.inputs[0])
        s = node.attrs["stride"]
        args = [
            self.const(f"{out}/{n}", np.array(v, dtype=np.int64))
            for n, v in (("starts", [0, 0]), ("ends", [h, w]), ("axes", [1, 2]), ("steps", [s, s]))
        ]
        self.emit("Slice", [node.inputs[0], *args], out, shape, dtype)

    def r_ChannelPad(self, node, out, shape, dtype):
        rank = len(shape) + 1
        before = [0] * (rank - 1) + [node.attrs["before"]]
        after = [0] * (rank - 1) + [node.attrs["after"]]
        pads = self.const(f"{out}/pads", np.array(before + after, dtype=np.int64))
        value = self.const(f"{out}/value", np.array(0.0, dtype=np.float32))
        self.emit("Pad", [node.inputs[0], pads, value], out, shape, dtype, mode="constant")

    def r_StreamingConcat(self, node, out, shape, dtype):
        self.emit("Concat", list(node.inputs), out, shape, dtype, axis=-1)

    def r_GlobalAccPool(self, node, out, shape, dtype):
        x = node.inputs[0]
        bound = node.attrs["positions"] * _magnitude(self.itype(x))
        if bound >= FLOAT_EXACT:
            raise GraphError(
                f"node {node.name}: pooled sum bound {bound} reaches 2^24; "
                "a float32 ReduceSum would not be exact"
            )
        axes = self.const(f"{out}/axes", np.array([1, 2], dtype=np.int64))
        self.emit("ReduceSum", [x, axes], out, shape, dtype, keepdims=0)

    def r_Affine(self, node, out, shape, dtype):
        y = node.inputs[0]
        ops = node.attrs["ops"]
        for i, (op, key) in enumerate(ops):
            v = self.const(f"{out}/{key}", node.params[key].astype(np.float32))
            dst = out if i == len(ops) - 1 else f"{out}/{i}"
            y = self.emit(
                {"mul": "Mul", "add": "Add", "sub": "Sub", "div": "Div"}[op],
                [y, v],
                dst,
                shape,
                None,
            )

    def r_LabelSelect(self, node, out, shape, dtype):
        k = self.const(f"{out}/k", np.array([node.attrs["k"]], dtype=np.int64))
        values = f"{out}/values"
        self.nodes.append(
            helper.make_node(
                "TopK",
                [node.inputs[0], k],
                [values, out],
                name=f"{out}:TopK",
                axis=-1,
                largest=1,
                sorted=1,
            )
        )
        self.infos[values] = (TensorProto.FLOAT, (self.batch, *shape))
        self.infos[out] = (TensorProto.INT64, (self.batch, *shape))


def to_qonnx(graph: Graph) -> ModelWrapper:
    """The graph as a QONNX model on one image; outputs: logits, then labels."""
    graph.validate()
    batch = 1
    r = _Renderer(graph, batch)
    r.dtypes[graph.input] = r.itype(graph.input).finn
    for node in graph.nodes:
        r.node(node)
    consumed = {t for n in graph.nodes for t in n.inputs}
    outs = [graph.output] + [
        t for n in graph.nodes for t in n.outputs if t not in consumed and t != graph.output
    ]
    vi = {
        name: helper.make_tensor_value_info(name, elem, list(shape))
        for name, (elem, shape) in r.infos.items()
    }
    onnx_graph = helper.make_graph(
        r.nodes,
        graph.meta.get("model", "hwbed"),
        [
            helper.make_tensor_value_info(
                graph.input, TensorProto.FLOAT, [batch, *graph.tensors[graph.input].shape]
            )
        ],
        [vi[t] for t in outs],
        r.inits,
        value_info=[v for name, v in vi.items() if name not in outs],
    )
    model = ModelWrapper(
        helper.make_model(
            onnx_graph,
            producer_name="hwbed",
            opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(DOMAIN, 1)],
        )
    )
    for name, dtype in r.dtypes.items():
        model.set_tensor_datatype(name, DataType[dtype])
    return model


def run_qonnx_render(graph: Graph, pixels: np.ndarray, keep: bool = False) -> np.ndarray | dict:
    """Execute the rendering with ``qonnx.core.onnx_exec.execute_onnx`` on uint8 NHWC pixels.

    Returns the logits (float32), or with ``keep`` every graph tensor the rendering
    materialises, by name (a padding fused into Im2Col has none). A value
    outside its annotated DataType (qonnx's sanitizer would round it) raises GraphError.
    """
    expect = graph.tensors[graph.input].shape
    if pixels.ndim != 1 + len(expect) or tuple(pixels.shape[1:]) != tuple(expect):
        raise GraphError(
            f"input shape {tuple(pixels.shape)} does not match the graph's "
            f"[N, {', '.join(map(str, expect))}]"
        )
    model = to_qonnx(graph)
    runs = []
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="The values of tensor")
        for image in pixels.astype(np.float32):
            try:
                runs.append(
                    execute_onnx(model, {graph.input: image[None]}, return_full_exec_context=keep)
                )
            except UserWarning as err:
                raise GraphError(f"QONNX execution: {err}") from err
    if keep:
        return {
            name: np.concatenate([r[name] for r in runs])
            for name in graph.tensors
            if name in runs[0]
        }
    return np.concatenate([r[graph.output] for r in runs]).astype(np.float32)
