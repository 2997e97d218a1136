"""Brevitas -> QONNX export, hwbed's QONNX cleanup and the qonnx reference executor.

The pipeline (see docs/export.md):

1. ``brevitas.export.export_qonnx`` on a deep copy of the network in eval mode (a module that
   was exported once keeps stale export handlers, pitfall P2), TorchScript exporter by default.
2. Cleanup: ``opset_import`` reordered so the standard domain comes first (P1), shape
   inference, one-pass constant folding that keeps ``Quant``/``BipolarQuant`` (P4), removal of
   initializer graph inputs (P5), unique node and readable tensor names, datatype inference.

qonnx executes node by node with one onnxruntime session per node: use it for golden vectors
on a handful of images, and :mod:`hwbed.fpga.export.ort` for anything larger.
"""

from __future__ import annotations

import copy
import io
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from qonnx.core.modelwrapper import ModelWrapper
from torch import nn

from hwbed.fpga.export.qonnx_io import ExportError, batches, fix_opset_order, load_qonnx

QUANT_OPS = ("Quant", "BipolarQuant", "Trunc")
"""QONNX quantization ops that are kept unfolded in the exported graph."""

INPUT_NAME, OUTPUT_NAME = "global_in", "global_out"
"""Graph input/output names after ``GiveReadableTensorNames`` (and in :func:`export_onnx`)."""


def cleanup_qonnx(model: ModelWrapper) -> ModelWrapper:
    """hwbed's QONNX cleanup: a fast replacement for ``qonnx.util.cleanup.cleanup_model``."""
    from qonnx.transformation.fold_constants import FoldConstantsFiltered
    from qonnx.transformation.general import (
        GiveReadableTensorNames,
        GiveUniqueNodeNames,
        RemoveStaticGraphInputs,
        RemoveUnusedTensors,
    )
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes

    fix_opset_order(model.model)
    _constants_to_initializers(model)
    model = model.transform(InferShapes())
    _fold_unresolved_shapes(model)
    with warnings.catch_warnings():
        # qonnx compares folded values with inferred shapes of F.pad's size arithmetic,
        # which shape inference leaves empty; the folded values are the real ones
        warnings.filterwarnings("ignore", "Output shapes disagree", UserWarning)
        model = model.transform(FoldConstantsFiltered(_foldable))
    for step in (
        RemoveUnusedTensors(),
        RemoveStaticGraphInputs(),
        GiveUniqueNodeNames(),
        GiveReadableTensorNames(),
        InferShapes(),
        InferDataTypes(),
    ):
        model = model.transform(step)
    return model


def _fold_unresolved_shapes(model: ModelWrapper) -> None:
    """Replace ``Shape`` nodes whose input shape inference could not resolve (shapes computed
    from other shapes, e.g. ABC's reshapes) by constants taken from one onnxruntime execution.

    Folding them pass by pass costs one shape inference per dependency level (tens of
    seconds on ABC ResNets); one onnxruntime run of the std-op lowered graph resolves them
    all at once.
    """
    import onnxruntime as ort

    from hwbed.fpga.export.ort import lower_quant_nodes

    pending = [n for n in model.graph.node if n.op_type == "Shape" and not _foldable(model, n)]
    if not pending:
        return
    probe = ModelWrapper(onnx.ModelProto.FromString(model.model.SerializeToString()))
    lower_quant_nodes(probe)
    del probe.graph.output[:]
    probe.graph.output.extend(
        onnx.helper.make_tensor_value_info(n.output[0], onnx.TensorProto.INT64, None)
        for n in pending
    )
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    sess = ort.InferenceSession(probe.model.SerializeToString(), opts)
    inp = model.graph.input[0].name
    x = np.zeros(model.get_tensor_shape(inp), dtype=np.float32)
    values = sess.run(None, {inp: x})
    for node, value in zip(pending, values, strict=True):
        model.set_initializer(node.output[0], value)
        model.graph.node.remove(node)


def _foldable(model: ModelWrapper, node: onnx.NodeProto) -> bool:
    """Filter for the one-pass constant folding: keep quantizers, and fold ``Shape`` only once
    its input shape is fully inferred (qonnx would fold unknown dims to 0)."""
    if node.op_type in QUANT_OPS:
        return False
    if node.op_type == "Shape":
        shape = model.get_tensor_shape(node.input[0])
        return bool(shape) and all(d > 0 for d in shape)
    return True


def export_qonnx(
    model: nn.Module,
    input_shape: Sequence[int],
    path: str | Path,
    *,
    batch_size: int = 1,
    dynamo: bool = False,
) -> ModelWrapper:
    """Export ``model`` to a cleaned-up QONNX file at ``path`` and return it.

    ``input_shape`` is one sample's shape, e.g. ``(1, 8, 8)``; the graph takes float inputs
    of shape ``(batch_size, *input_shape)`` (qonnx needs a fixed batch, pitfall P6). The
    network is deep-copied and put in eval mode, so the caller's module is untouched.
    Wall times of the two stages are stored in the model's ``metadata_props``
    (``hwbed.export_s``, ``hwbed.cleanup_s``). Raises :class:`ExportError` naming the module
    that fails.
    """
    from brevitas.export import export_qonnx as brevitas_export_qonnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = copy.deepcopy(model).eval()
    x = _probe_input(batch_size, input_shape)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with torch.no_grad(), _ModuleTracker(net) as tracker:
                brevitas_export_qonnx(net, args=x, export_path=str(path), dynamo=dynamo)
        except Exception as exc:
            raise ExportError(_describe_failure(model, x, tracker.failed, exc)) from exc
    t1 = time.perf_counter()
    try:
        qmodel = cleanup_qonnx(ModelWrapper(str(path)))
    except Exception as exc:
        raise ExportError(f"QONNX cleanup failed for {type(model).__name__}: {exc}") from exc
    t2 = time.perf_counter()
    onnx.helper.set_model_props(
        qmodel.model, {"hwbed.export_s": f"{t1 - t0:.3f}", "hwbed.cleanup_s": f"{t2 - t1:.3f}"}
    )
    qmodel.save(str(path))
    return qmodel


def export_onnx(
    model: nn.Module, input_shape: Sequence[int], path: str | Path | None = None
) -> onnx.ModelProto:
    """Export a float network with ``torch.onnx.export(dynamo=False)`` and a symbolic batch.

    Input/output are named ``global_in``/``global_out`` like the QONNX graphs, so the same
    :class:`hwbed.fpga.export.ort.OrtRunner` serves both. Brevitas networks go through
    :func:`export_qonnx` and :func:`hwbed.fpga.export.ort.to_onnxruntime` instead.
    """
    quant = [n for n, m in model.named_modules() if type(m).__module__.startswith("brevitas.")]
    if quant:
        raise ExportError(
            f"{type(model).__name__} has Brevitas quant layers (first: {quant[0]!r}); "
            "use export_qonnx + to_onnxruntime"
        )
    net = copy.deepcopy(model).eval()
    x = _probe_input(1, input_shape)
    buf = io.BytesIO()
    batch = {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with torch.no_grad(), _ModuleTracker(net) as tracker:
                torch.onnx.export(
                    net,
                    (x,),
                    buf,
                    dynamo=False,
                    opset_version=17,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_axes={INPUT_NAME: batch, OUTPUT_NAME: batch},
                )
        except Exception as exc:
            raise ExportError(_describe_failure(model, x, tracker.failed, exc)) from exc
    proto = onnx.load_from_string(buf.getvalue())
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        onnx.save(proto, str(path))
    return proto


def run_qonnx(
    model_or_path: ModelWrapper | onnx.ModelProto | str | Path, x_float: np.ndarray
) -> np.ndarray:
    """Run float images (NCHW in [0, 1]) through qonnx's ``execute_onnx``.

    The graph has a fixed batch size B (pitfall P6); a batch of another size runs in chunks
    of B, the last one zero-padded. Export with ``batch_size=len(x)`` to run it in one call:
    qonnx's cost is dominated by per-node overhead, not by the batch.
    """
    from qonnx.core.onnx_exec import execute_onnx

    model = load_qonnx(model_or_path)
    fix_opset_order(model.model)
    if not model.check_all_tensor_shapes_specified():
        from qonnx.transformation.infer_shapes import InferShapes

        model = model.transform(InferShapes())
    iname, oname = model.graph.input[0].name, model.graph.output[0].name
    shape = model.get_tensor_shape(iname)
    x = np.asarray(x_float, dtype=np.float32)
    if x.ndim != len(shape) or list(x.shape[1:]) != list(shape[1:]):
        raise ValueError(f"input of shape {x.shape} does not fit the graph input {shape}")
    outs = []
    for chunk in batches(x, shape[0]):
        outs.append(execute_onnx(model, {iname: chunk})[oname])
    return np.concatenate(outs)[: len(x)]


def _probe_input(batch_size: int, input_shape: Sequence[int]) -> torch.Tensor:
    if batch_size < 1 or not input_shape:
        raise ValueError(f"bad export shape: batch {batch_size}, sample {tuple(input_shape)}")
    gen = torch.Generator().manual_seed(0)
    return torch.rand((batch_size, *input_shape), generator=gen)


def _constants_to_initializers(model: ModelWrapper) -> None:
    """Turn ``Constant`` nodes into initializers (qonnx's filtered folding skips them)."""
    for node in [n for n in model.graph.node if n.op_type == "Constant"]:
        attr = node.attribute[0]
        if attr.name != "value":
            raise ExportError(f"unsupported Constant attribute {attr.name!r} in {node.name}")
        model.set_initializer(node.output[0], onnx.numpy_helper.to_array(attr.t))
        model.graph.node.remove(node)


class _ModuleTracker:
    """Forward hooks keeping the stack of running modules; remembers the innermost one that
    was running when an exception escaped it."""

    def __init__(self, model: nn.Module):
        self.model, self.stack, self.failed, self.handles = model, [], None, []

    def __enter__(self) -> _ModuleTracker:
        for name, mod in self.model.named_modules():
            self.handles.append(mod.register_forward_pre_hook(self._enter(name)))
            self.handles.append(mod.register_forward_hook(self._leave))
        return self

    def _enter(self, name: str):
        def hook(mod, args):
            self.stack.append((name, mod))

        return hook

    def _leave(self, mod, args, out):
        if self.stack:
            self.stack.pop()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and self.stack:
            self.failed = self.stack[-1]
        for h in self.handles:
            h.remove()


def _describe_failure(
    model: nn.Module, x: torch.Tensor, failed: tuple[str, nn.Module] | None, exc: BaseException
) -> str:
    """An error message naming the failing module, located by hooks or by per-module export."""
    where = failed or _locate_unexportable(model, x)
    detail = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
    if where is None:
        return f"export of {type(model).__name__} failed ({detail})"
    name, mod = where
    return (
        f"export of {type(model).__name__} failed in module {name or '<root>'!r} "
        f"({type(mod).__name__}): {detail}"
    )


def _locate_unexportable(model: nn.Module, x: torch.Tensor) -> tuple[str, nn.Module] | None:
    """The first module (innermost first, in execution order) that fails a plain
    ``torch.onnx.export`` on its recorded input; used when tracing itself went through and the
    ONNX conversion failed. Modules with non-tensor inputs or outputs are skipped."""
    net = copy.deepcopy(model).eval()
    calls: list[tuple[str, nn.Module, tuple]] = []
    handles = [
        mod.register_forward_hook(
            lambda m, a, o, name=name: (
                calls.append((name, m, a))
                if type(o) is torch.Tensor and all(type(t) is torch.Tensor for t in a)
                else None
            )
        )
        for name, mod in net.named_modules()
    ]
    try:
        with torch.no_grad():
            net(x)
    except Exception:
        return None
    finally:
        for h in handles:
            h.remove()
    seen = set()
    for name, mod, args in calls:
        if id(mod) in seen:
            continue
        seen.add(id(mod))
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(mod, args, io.BytesIO(), dynamo=False)
        except Exception:
            return name, mod
    return None
