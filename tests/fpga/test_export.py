"""Brevitas -> QONNX export, qonnx reference execution and the onnxruntime std-op lowering.

Each family is built randomly initialised, calibrated with a few train-mode forwards on
digits (1x8x8; 1x32x32 for CNV), then compared in eval mode: the Brevitas twin, qonnx's
``execute_onnx`` and onnxruntime on the lowered graph must agree to float tolerance.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from brevitas.nn import QuantConv2d, QuantIdentity
from onnx import TensorProto, helper, numpy_helper
from qonnx.core.modelwrapper import ModelWrapper
from torch import nn

from hwbed.fpga.export.ort import OrtRunner, is_dynamic, to_onnxruntime
from hwbed.fpga.export.qonnx_export import ExportError, export_onnx, export_qonnx, run_qonnx
from hwbed.models.data import load_dataset, to_float
from hwbed.models.quantizers import BinaryAct
from hwbed.models.spec import parse_spec
from hwbed.models.zoo import build_model, input_size

pytestmark = pytest.mark.filterwarnings("ignore")

BATCH = 4
"""Images compared per family (the QONNX graphs are exported at this batch size)."""

QUANT_OPS = ("Quant", "BipolarQuant")
EXPECTED_QUANT = {
    "resnet20": set(),
    "resnet20-kd": set(),
    "resnet20-prune-filter50": set(),
    "resnet20-xnor": {"Quant", "BipolarQuant"},  # int8 stream, binary inner layers
    "resnet20-abc3x3": {"Quant", "BipolarQuant"},
    "resnet20-w4a4": {"Quant"},
    "cnv-w1a1": {"Quant", "BipolarQuant"},  # 8-bit input quantizer
    "cnv-w2a2": {"Quant"},
    "tfc-w1a1": {"BipolarQuant"},
    "sfc-w1a1": {"BipolarQuant"},
    "lfc-w1a1": {"BipolarQuant"},
}


def tolerance(ref: np.ndarray) -> float:
    """Float32 agreement allowed between two executions of the same network."""
    return 1e-5 * max(1.0, float(np.abs(ref).max()))


def _images(spec: str, split: str) -> torch.Tensor:
    x, _, _ = load_dataset("digits", split, size=input_size(spec), limit=16, seed=1)
    return to_float(x)


@pytest.fixture(scope="module", params=list(EXPECTED_QUANT))
def family(request, tmp_path_factory, random_twin) -> SimpleNamespace:
    """One exported family: twin outputs, QONNX graph and outputs, lowered ORT model."""
    spec = request.param
    calib, x = _images(spec, "train"), _images(spec, "test")[:BATCH]
    model = random_twin(spec, tuple(x.shape[1:]), images=calib)
    with torch.no_grad():
        twin = model(x).numpy()
    path = tmp_path_factory.mktemp("export") / f"{spec}.onnx"
    qmodel = export_qonnx(model, tuple(x.shape[1:]), path, batch_size=BATCH)
    ort_model = to_onnxruntime(qmodel)
    return SimpleNamespace(
        spec=spec,
        model=model,
        x=x.numpy(),
        twin=twin,
        path=path,
        qmodel=qmodel,
        qonnx=run_qonnx(qmodel, x.numpy()),
        ort=ort_model,
    )


def test_qonnx_matches_twin(family):
    delta = np.abs(family.qonnx - family.twin).max()
    print(f"{family.spec}: max |twin - qonnx| = {delta:.3g}")
    assert family.qonnx.shape == family.twin.shape
    assert delta <= tolerance(family.twin)
    assert (family.qonnx.argmax(1) == family.twin.argmax(1)).all()


def test_ort_matches_qonnx(family):
    got = OrtRunner(family.ort, threads=1)(family.x)
    delta = np.abs(got - family.qonnx).max()
    print(f"{family.spec}: max |qonnx - ort| = {delta:.3g}")
    assert delta <= tolerance(family.qonnx)
    assert (got.argmax(1) == family.twin.argmax(1)).all()
    domains = {n.domain for n in family.ort.graph.node}
    assert domains <= {"", "ai.onnx"}


def test_ort_serves_any_batch(family):
    runner = OrtRunner(family.ort, threads=1)
    if parse_spec(family.spec).quant != "abc":  # ABC folds the batch into its bases' reshapes
        assert is_dynamic(family.ort)
    for rows in (family.x[:1], np.concatenate([family.x, family.x[:3]])):
        want = np.concatenate([family.qonnx, family.qonnx[:3]])[: len(rows)]
        assert np.abs(runner(rows) - want).max() <= tolerance(want)


def test_graph_has_expected_quant_nodes(family):
    ops = Counter(n.op_type for n in family.qmodel.graph.node)
    assert {op for op in QUANT_OPS if ops[op]} == EXPECTED_QUANT[family.spec]
    assert not any(n.op_type in ("Shape", "Constant") for n in family.qmodel.graph.node)
    reloaded = ModelWrapper(str(family.path))
    assert reloaded.get_tensor_shape(reloaded.graph.input[0].name)[0] == BATCH
    props = {p.key for p in reloaded.model.metadata_props}
    assert {"hwbed.export_s", "hwbed.cleanup_s"} <= props


def test_run_qonnx_chunks_other_batch_sizes(family):
    if parse_spec(family.spec).binary:
        pytest.skip("covered on the other families; XNOR/ABC qonnx runs are slow")
    got = run_qonnx(family.path, family.x[:3])
    assert np.abs(got - family.qonnx[:3]).max() <= tolerance(family.qonnx)


def test_float_export_through_torch_onnx(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet20", 1, 8, 8, 10).eval()
    x = _images("resnet20", "test")[:5]
    proto = export_onnx(model, (1, 8, 8), tmp_path / "float.onnx")
    assert is_dynamic(proto) and (tmp_path / "float.onnx").exists()
    with torch.no_grad():
        twin = model(x).numpy()
    got = OrtRunner(proto, threads=1)(x.numpy())
    assert np.abs(got - twin).max() <= tolerance(twin)


@pytest.mark.slow
def test_dynamo_export_matches_torchscript(tmp_path):
    torch.manual_seed(0)
    model = build_model("tfc-w1a1", 1, 8, 8, 10).eval()
    x = _images("tfc-w1a1", "test")[:2].numpy()
    a = run_qonnx(export_qonnx(model, (1, 8, 8), tmp_path / "ts.onnx", batch_size=2), x)
    b = run_qonnx(
        export_qonnx(model, (1, 8, 8), tmp_path / "dy.onnx", batch_size=2, dynamo=True), x
    )
    assert np.array_equal(a, b)


class _Unsupported(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.special.erfcx(x)  # no ONNX symbolic


def test_unsupported_module_is_named(tmp_path):
    net = nn.Sequential(QuantIdentity(act_quant=BinaryAct), nn.Sequential(_Unsupported()))
    with pytest.raises(ExportError, match=r"module '1\.0' \(_Unsupported\).*erfcx"):
        export_qonnx(net, (1, 8, 8), tmp_path / "bad.onnx")


def test_corrupt_module_is_named(tmp_path):
    net = nn.Sequential(QuantIdentity(act_quant=BinaryAct), QuantConv2d(1, 4, 3))
    net[1].weight = nn.Parameter(torch.zeros(4, 2, 3, 3))  # expects 2 input channels
    with pytest.raises(ExportError, match=r"module '1' \(QuantConv2d\)"):
        export_qonnx(net, (1, 8, 8), tmp_path / "bad.onnx")


def test_float_export_rejects_quant_layers():
    with pytest.raises(ExportError, match="export_qonnx"):
        export_onnx(build_model("tfc-w1a1", 1, 8, 8, 10), (1, 8, 8))


def test_run_qonnx_rejects_wrong_shape(tmp_path):
    path = tmp_path / "tfc.onnx"
    export_qonnx(build_model("tfc-w1a1", 1, 8, 8, 10), (1, 8, 8), path)
    with pytest.raises(ValueError, match="does not fit"):
        run_qonnx(path, np.zeros((1, 1, 9, 9), dtype=np.float32))


def _quant_trunc_graph(rounding: str, signed: int, narrow: int) -> ModelWrapper:
    """x -> Quant(s=0.1, z=2, 4 bit) -> Trunc(to s=0.4, 3 bit) -> y, built by hand."""

    def const(name, value):
        return helper.make_tensor(name, TensorProto.FLOAT, [], [value])

    dom = "qonnx.custom_op.general"
    nodes = [
        helper.make_node(
            "Quant",
            ["x", "s", "z", "b"],
            ["q"],
            domain=dom,
            signed=signed,
            narrow=narrow,
            rounding_mode=rounding,
        ),
        helper.make_node(
            "Trunc",
            ["q", "s", "z", "b", "so", "bo"],
            ["y"],
            domain=dom,
            signed=signed,
            narrow=narrow,
            rounding_mode=rounding,
        ),
    ]
    shape = [2, 3, 4, 4]
    graph = helper.make_graph(
        nodes,
        "qt",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        [
            const("s", 0.1),
            const("z", 2.0 if not signed else 0.0),
            const("b", 4.0),
            const("so", 0.4),
            const("bo", 3.0),
        ],
    )
    proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(dom, 2)]
    )
    return ModelWrapper(proto)


@pytest.mark.parametrize("signed,narrow", [(0, 0), (0, 1), (1, 0), (1, 1)])
@pytest.mark.parametrize(
    "rounding", ["ROUND", "HALF_EVEN", "FLOOR", "CEIL", "UP", "DOWN", "HALF_UP", "HALF_DOWN"]
)
def test_quant_and_trunc_lowering_is_exact(rounding, signed, narrow):
    model = _quant_trunc_graph(rounding, signed, narrow)
    x = np.random.default_rng(0).uniform(-1.5, 1.5, (2, 3, 4, 4)).astype(np.float32)
    x.flat[:8] = [0.05, -0.05, 0.15, -0.25, 0.0, 0.35, 1.45, -1.45]  # ties at scale 0.1
    ort_model = to_onnxruntime(model, dynamic_batch=False)
    assert np.array_equal(OrtRunner(ort_model)(x), run_qonnx(model, x))


def test_lowering_rejects_unknown_custom_ops():
    graph = helper.make_graph(
        [helper.make_node("Mystery", ["x"], ["y"], domain="acme.ops")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
    )
    proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("acme.ops", 1)]
    )
    with pytest.raises(ExportError, match="Mystery"):
        to_onnxruntime(proto)


def test_a_batch_folding_reshape_keeps_the_fixed_batch_and_says_so(caplog):
    """A Reshape that folds the batch elsewhere fails on B+1 images: the fixed-batch model
    comes back, with one note saying why."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])
    shape = numpy_helper.from_array(np.array([2, 8], dtype=np.int64), "shape")
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"])], "g", [x], [y])
    graph.initializer.append(shape)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with caplog.at_level("INFO", logger="hwbed.fpga.export.ort"):
        model = to_onnxruntime(proto)
    assert not is_dynamic(model)
    notes = [r.getMessage() for r in caplog.records if r.name == "hwbed.fpga.export.ort"]
    assert len(notes) == 1 and notes[0].startswith("onnxruntime model keeps its fixed batch of 4")


def test_export_does_not_touch_the_caller_model(tmp_path: Path):
    model = build_model("tfc-w1a1", 1, 8, 8, 10)
    model.train()
    export_qonnx(model, (1, 8, 8), tmp_path / "m.onnx")
    assert model.training
    assert all(getattr(m, "export_handler", None) is None for m in model.modules())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qonnx(model, (1, 8, 8), tmp_path / "again.onnx")  # P2: a second export works
