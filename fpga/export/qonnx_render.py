"""Render the integer dataflow graph as a QONNX model and run it with qonnx's executor.

Each op registers its renderer in :data:`RENDERERS`. The rendering uses standard ONNX ops
(``Reshape`` for ``Flatten``) and qonnx 1.0.0's custom ops (domain
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

import warnings
from collections.abc import Callable

import numpy as np
from onnx import TensorProto, helper, numpy_helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx

from hwbed.ir.backend import Backend
from hwbed.ir.graph import Graph, Node
from hwbed.ir.ops.mvau import acc_bound
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

    def node(self, node: Node) -> None:
        """Render one node into tensor ``node.outputs[0]`` (unless rendered inside another)."""
        if node.name in self.fused or node.name in self.skipped:
            return
        out = node.outputs[0]
        dtype = self.itype(out)
        RENDERERS.entry(node)(
            self, node, out, self.shape(out), None if dtype.kind == "float" else dtype.finn
        )

    def xnor(self, x, w, acc, shape, acc_type, thresholded: bool) -> None:
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


Shape = tuple[int, ...]
RENDERERS: Backend[Callable[[_Renderer, Node, str, Shape, str | None], None]] = Backend("qonnx")
"""Op -> its renderer ``(renderer, node, out, shape, dtype)``: ONNX nodes computing tensor
``out`` of ``shape`` (without the batch) and qonnx DataType ``dtype`` (None: float); an op
without one is an error naming it."""


@RENDERERS.register("Thresholding")
def _thresholding(r: _Renderer, node: Node, out: str, shape: Shape, dtype: str | None) -> None:
    r.thresholds(node, node.inputs[0], node.params["thresholds"], out, shape, dtype)


@RENDERERS.register("FMPadding")
def _fmpadding(r: _Renderer, node: Node, out: str, shape: Shape, dtype: str | None) -> None:
    q = node.attrs["pad"]
    pads = r.const(f"{out}/pads", np.array([0, q, q, 0, 0, q, q, 0], dtype=np.int64))
    value = r.const(f"{out}/value", np.array(node.attrs["pad_value"], dtype=np.float32))
    r.emit("Pad", [node.inputs[0], pads, value], out, shape, dtype, mode="constant")


@RENDERERS.register("ConvolutionInputGenerator")
def _window(r: _Renderer, node: Node, out: str, shape: Shape, dtype: str | None) -> None:
    x, pad, value = node.inputs[0], 0, 0
    src = r.g.producer(x)
    if src is not None and src.name in r.fused:
        x, pad, value = src.inputs[0], src.attrs["pad"], src.attrs["pad_value"]
        r.dtypes.setdefault(x, r.itype(x).finn)
    k, s = node.attrs["kernel"], node.attrs["stride"]
    r.emit(
        "Im2Col",
        [x],
        out,
        shape,
        dtype,
        DOMAIN,
        stride=[s, s],
        kernel_size=[k, k],
        input_shape=str((r.batch, *r.shape(x))),
        pad_amount=[pad] * 4,
        pad_value=int(value),
    )


@RENDERERS.register("MVAU")
def _mvau(r: _Renderer, node: Node, out: str, shape: Shape, dtype: str | None) -> None:
    x, w = node.inputs[0], node.params["weights"]
    in_type = r.itype(x)
    # it bounds every product and partial sum too, in any order: each tap's range holds 0
    bound = acc_bound(w, in_type)
    if bound >= FLOAT_EXACT:
        raise GraphError(
            f"node {node.name}: proven partial-sum bound {bound} reaches 2^24; "
            "a float32 MatMul would not be exact"
        )
    thr = node.params.get("thresholds")
    acc, acc_type = (
        (out, dtype)
        if thr is None
        else (f"{out}/acc", node.attrs.get("acc_type") or IntType.fitting(-bound, bound).finn)
    )
    if in_type == BIPOLAR and (np.abs(w) == 1).all():
        r.xnor(x, w, acc, shape, acc_type, thresholded=thr is not None)
        if thr is not None:  # d >= T  <=>  2P - K >= T  <=>  P >= ceil((T + K) / 2)
            k = w.shape[1]
            r.thresholds(node, acc, -((-(thr + k)) // 2), out, shape, dtype)
        return
    wt = r.const(
        f"{out}/weights",
        w.T.astype(np.float32),
        IntType.fitting(int(w.min()), int(w.max())).finn,
    )
    r.emit("MatMul", [x, wt], acc, shape, acc_type)
    if thr is not None:
        r.thresholds(node, acc, thr, out, shape, dtype)


@RENDERERS.register("Flatten")
def _flatten(r: _Renderer, node: Node, out: str, shape: Shape, dtype: str | None) -> None:
    dims = r.const(f"{out}/shape", np.array([r.batch, *shape], dtype=np.int64))
    r.emit("Reshape", [node.inputs[0], dims], out, shape, dtype)


@RENDERERS.register("StreamingMaxPool")
def _maxpool(r: _Renderer, node: Node, out: str, shape: Shape, dtype: str | None) -> None:
    k = node.attrs["kernel"]
    r.emit(
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


@RENDERERS.register("Pool")
def _pool(r: _Renderer, node: Node, out: str, shape: Shape, dtype: str | None) -> None:
    if node.name in r.pools:  # window (and padding) fused: one MaxPoolNHWC
        x, q, k, s = r.pools[node.name]
        r.dtypes.setdefault(x, r.itype(x).finn)
        r.emit(
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
    dims = r.const(f"{out}/taps_shape", np.array([r.batch, *taps], dtype=np.int64))
    win = r.emit("Reshape", [node.inputs[0], dims], f"{out}/taps", taps, dtype)
    r.emit("ReduceMax", [win], out, shape, dtype, axes=[len(taps) - 1], keepdims=0)


@RENDERERS.register("AddStreams")
def _add_streams(r: _Renderer, node: Node, out: str, shape: Shape, dtype: str | None) -> None:
    r.emit("Add", list(node.inputs), out, shape, dtype)


@RENDERERS.register("DownSampler")
def _downsampler(r: _Renderer, node: Node, out: str, shape: Shape, dtype: str | None) -> None:
    h, w, _ = r.shape(node.inputs[0])
    s = node.attrs["stride"]
    args = [
        r.const(f"{out}/{n}", np.array(v, dtype=np.int64))
        for n, v in (("starts", [0, 0]), ("ends", [h, w]), ("axes", [1, 2]), ("steps", [s, s]))
    ]
    r.emit("Slice", [node.inputs[0], *args], out, shape, dtype)


@RENDERERS.register("ChannelPad")
def _channel_pad(r: _Renderer, node: Node, out: str, shape: Shape, dtype: str | None) -> None:
    rank = len(shape) + 1
    before = [0] * (rank - 1) + [node.attrs["before"]]
    after = [0] * (rank - 1) + [node.attrs["after"]]
    pads = r.const(f"{out}/pads", np.array(before + after, dtype=np.int64))
    value = r.const(f"{out}/value", np.array(0.0, dtype=np.float32))
    r.emit("Pad", [node.inputs[0], pads, value], out, shape, dtype, mode="constant")


@RENDERERS.register("StreamingConcat")
def _concat(r: _Renderer, node: Node, out: str, shape: Shape, dtype: str | None) -> None:
    r.emit("Concat", list(node.inputs), out, shape, dtype, axis=-1)


@RENDERERS.register("GlobalAccPool")
def _global_acc_pool(r: _Renderer, node: Node, out: str, shape: Shape, dtype: str | None) -> None:
    x = node.inputs[0]
    bound = node.attrs["positions"] * _magnitude(r.itype(x))
    if bound >= FLOAT_EXACT:
        raise GraphError(
            f"node {node.name}: pooled sum bound {bound} reaches 2^24; "
            "a float32 ReduceSum would not be exact"
        )
    axes = r.const(f"{out}/axes", np.array([1, 2], dtype=np.int64))
    r.emit("ReduceSum", [x, axes], out, shape, dtype, keepdims=0)


@RENDERERS.register("Affine")
def _affine(r: _Renderer, node: Node, out: str, shape: Shape, dtype: str | None) -> None:
    y = node.inputs[0]
    ops = node.attrs["ops"]
    for i, (op, key) in enumerate(ops):
        v = r.const(f"{out}/{key}", node.params[key].astype(np.float32))
        dst = out if i == len(ops) - 1 else f"{out}/{i}"
        y = r.emit(
            {"mul": "Mul", "add": "Add", "sub": "Sub", "div": "Div"}[op],
            [y, v],
            dst,
            shape,
            None,
        )


@RENDERERS.register("LabelSelect")
def _label_select(r: _Renderer, node: Node, out: str, shape: Shape, dtype: str | None) -> None:
    k = r.const(f"{out}/k", np.array([node.attrs["k"]], dtype=np.int64))
    values = f"{out}/values"
    r.nodes.append(
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
    r.infos[values] = (TensorProto.FLOAT, (r.batch, *shape))
    r.infos[out] = (TensorProto.INT64, (r.batch, *shape))


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
    graph.check_input(pixels)
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
