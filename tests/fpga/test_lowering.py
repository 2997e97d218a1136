"""Lowering: each pass preserves the graph's function; the graph equals the Brevitas twin bit
for bit; FINN node names; refusals with their messages."""

from __future__ import annotations

import copy
import re
from functools import cache

import numpy as np
import pytest
import torch
from torch import nn

from hwbed.fpga.finn.nodes import finn_nodes
from hwbed.fpga.lowering.lower import lower
from hwbed.fpga.lowering.passes import (
    DEFAULT_PASSES,
    AbsorbThresholdsIntoMVAU,
    GiveFinnNames,
    InferAccumulatorWidths,
    run_passes,
)
from hwbed.ir.reference import execute
from hwbed.ir.types import GraphError

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:Keyword arguments are being passed")

SHAPES = {"cnv": (3, 32, 32), "tfc": (1, 8, 8), "resnet20": (1, 8, 8)}
CALIBRATION_STEPS = {"abc": 8, "int": 8}
"""Training-mode forwards that set BN statistics and Brevitas' runtime scales."""


@pytest.fixture(scope="module")
def twin(random_twin):
    """``twin(spec)``: a random-init, calibrated, eval-mode twin of ``spec`` on its test shape."""
    from hwbed.models.spec import parse_spec

    def make(spec: str) -> nn.Module:
        passes = CALIBRATION_STEPS.get(parse_spec(spec).quant, 3)
        return random_twin(spec, SHAPES[spec.split("-")[0]], passes=passes)

    return make


@pytest.fixture(scope="module")
def lowered(twin):
    """``lowered(spec)``: (twin, graph before passes, graph after the default passes), built
    once per spec."""

    @cache
    def get(spec: str):
        model = twin(spec)
        raw = lower(model, spec, SHAPES[spec.split("-")[0]], passes=())
        return model, raw, run_passes(raw)

    return get


def pixels(spec: str, n: int, seed: int = 1) -> np.ndarray:
    c, h, w = SHAPES[spec.split("-")[0]]
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


def twin_logits(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255.0).numpy()


# -- passes ------------------------------------------------------------------------------------
PASS_GRAPHS = ["tfc-w1a1", "cnv-w1a1", "resnet20-xnor"]


@pytest.mark.parametrize("spec", PASS_GRAPHS)
@pytest.mark.parametrize(
    "index", range(len(DEFAULT_PASSES)), ids=[type(p).__name__ for p in DEFAULT_PASSES]
)
def test_pass_preserves_function(lowered, spec, index):
    graph = lowered(spec)[1]
    for p in DEFAULT_PASSES[:index]:
        graph = run_passes(graph, (p,))
    before_nodes = [n.name for n in graph.nodes]
    after, _ = DEFAULT_PASSES[index].apply(graph)
    after.validate()
    assert [n.name for n in graph.nodes] == before_nodes, "the pass mutated its input"
    x = pixels(spec, 6)
    old, new = execute(graph, x, keep=True), execute(after, x, keep=True)
    assert np.array_equal(old[graph.output], new[after.output])
    for name in set(old) & set(new):
        assert np.array_equal(old[name], new[name]), name


def test_absorb_thresholds_reaches_a_fixpoint(lowered):
    raw = lowered("cnv-w1a1")[1]
    once, modified = AbsorbThresholdsIntoMVAU().apply(raw)
    assert modified and len(once.nodes) < len(raw.nodes)
    twice, modified = AbsorbThresholdsIntoMVAU().apply(once)
    assert not modified and len(twice.nodes) == len(once.nodes)
    unthresholded = [n.name for n in once.nodes if n.op == "MVAU" and "thresholds" not in n.params]
    assert unthresholded == [[n for n in once.nodes if n.op == "MVAU"][-1].name]  # the last FC


def test_accumulator_widths_are_proven_and_tight(lowered):
    graph = lowered("cnv-w1a1")[2]
    for node in graph.nodes:
        if node.op != "MVAU":
            continue
        w = node.params["weights"]
        in_type = graph.tensors[node.inputs[0]].dtype
        lo = np.minimum(w * in_type.min, w * in_type.max).sum(axis=1).min()
        hi = np.maximum(w * in_type.min, w * in_type.max).sum(axis=1).max()
        assert (node.attrs["acc_min"], node.attrs["acc_max"]) == (lo, hi), node.name
        bits = int(re.sub(r"\D", "", node.attrs["acc_type"]))
        assert -(2 ** (bits - 1)) <= lo and hi < 2 ** (bits - 1), node.name
        assert lo < -(2 ** (bits - 2)) or hi >= 2 ** (bits - 2), f"{node.name}: not tight"


# -- end to end: graph == twin -------------------------------------------------------------
SPECS = ["cnv-w1a1", "cnv-w2a2", "tfc-w1a1", "resnet20-xnor", "resnet20-abc3x3", "resnet20-w4a4"]


def _agreement(lowered, spec: str, n: int) -> None:
    model, _, graph = lowered(spec)
    x = pixels(spec, n)
    got, want = execute(graph, x), twin_logits(model, x)
    assert got.dtype == want.dtype == np.float32
    mismatched = int((got != want).sum())
    assert mismatched == 0, f"{spec}: {mismatched} of {got.size} logits differ"
    assert np.array_equal(got.argmax(1), want.argmax(1))
    labels = execute(graph, x, keep=True)[graph.nodes[-1].outputs[0]]
    assert np.array_equal(labels[:, 0], want.argmax(1)), "LabelSelect disagrees with argmax"


@pytest.mark.parametrize("spec", SPECS)
def test_graph_equals_twin(lowered, spec):
    _agreement(lowered, spec, 16)


@pytest.mark.slow
@pytest.mark.parametrize("spec", SPECS)
def test_graph_equals_twin_many_inputs(lowered, spec):
    _agreement(lowered, spec, 256)


def test_agreement_check_can_fail(lowered):
    """Flipping one binary weight of the last layer must show up in the logits."""
    model, _, graph = lowered("tfc-w1a1")
    broken = copy.deepcopy(graph)
    broken.node("MVAU_hls_3").params["weights"][0, 0] *= -1
    x = pixels("tfc-w1a1", 4)
    assert np.array_equal(execute(graph, x), twin_logits(model, x))
    assert not np.array_equal(execute(broken, x)[:, 0], twin_logits(model, x)[:, 0])


# -- FINN names --------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["cnv-w1a1", "tfc-w1a1"])
def test_finn_names_cover_folding_config(lowered, spec, finn_example):
    config = finn_example(spec)[1]
    names = {n.name for n in lowered(spec)[2].nodes}
    missing = set(config) - {"Defaults"} - names
    assert not missing, f"{spec}: folding-config nodes absent from the graph: {sorted(missing)}"


# -- refusals ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "spec, message",
    [
        ("resnet20", "only quantized networks lower to an integer graph"),
        ("tfc", "float BNN-PYNQ networks do not lower"),
    ],
)
def test_float_spec_is_refused(spec, message):
    from hwbed.models.zoo import build_model

    model = build_model(spec, *SHAPES[spec.split("-")[0]], 10)
    with pytest.raises(GraphError, match=message):
        lower(model, spec, SHAPES[spec.split("-")[0]])


def test_non_monotone_epilogue_is_refused(twin, monkeypatch):
    model = twin("tfc-w1a1")
    bn = next(m for m in model.features if isinstance(m, nn.BatchNorm1d))
    monkeypatch.setattr(bn, "forward", lambda v: v * v - 10.0)
    with pytest.raises(GraphError, match=r"tfc-w1a1 layer 0: channel \d+ is not monotone"):
        lower(model, "tfc-w1a1", SHAPES["tfc"])


def test_accumulator_wider_than_configured_is_refused(lowered, twin):
    graph = lowered("cnv-w1a1")[2]
    with pytest.raises(
        GraphError,
        match=r"node MVAU_hls_0: accumulator needs 13 bits "
        r"\(range -\d+\.\.\d+\), more than the configured 8",
    ):
        InferAccumulatorWidths(max_bits=8).apply(graph)
    passes = (AbsorbThresholdsIntoMVAU(), InferAccumulatorWidths(max_bits=8), GiveFinnNames())
    with pytest.raises(GraphError, match="more than the configured 8"):
        lower(twin("cnv-w1a1"), "cnv-w1a1", SHAPES["cnv"], passes=passes)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("tfc-w1a1", "tfc-w1a1: not a BNN-PYNQ network"),
        ("resnet20-xnor", "resnet20-xnor: no lowering for Sequential"),
    ],
)
def test_unsupported_model_type_is_refused(spec, message):
    with pytest.raises(GraphError, match=message):
        lower(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), spec, (1, 8, 8))


@pytest.mark.parametrize("cut", range(1, 16))
def test_truncated_bnn_pynq_layout_is_refused(twin, cut):
    """Any prefix of TFC's layers is refused with a GraphError naming the network, never an
    IndexError."""
    model = copy.deepcopy(twin("tfc-w1a1"))
    model.features = nn.ModuleList(list(model.features)[:cut])
    with pytest.raises(GraphError, match=r"^tfc-w1a1[ :]"):
        lower(model, "tfc-w1a1", SHAPES["tfc"])


def test_block_with_a_missing_unit_is_refused(twin):
    model = copy.deepcopy(twin("resnet20-xnor"))
    del model.blocks[0].bns[1]
    with pytest.raises(GraphError, match=r"resnet20-xnor blocks\.0: 2 activations, 2 convs and 1"):
        lower(model, "resnet20-xnor", SHAPES["resnet20"])


def test_flatten_is_a_node(lowered):
    """The front-end emits Flatten where a linear layer reads a feature map (TFC: before the
    input thresholds, on the pixels; CNV: after the last conv layer)."""
    tfc, cnv = lowered("tfc-w1a1")[2], lowered("cnv-w1a1")[2]
    assert [n.op for n in tfc.nodes[:2]] == ["Flatten", "Thresholding"]
    assert tfc.tensors[tfc.nodes[0].outputs[0]].shape == (64,)
    (flat,) = [n for n in cnv.nodes if n.op == "Flatten"]
    assert cnv.producer(flat.inputs[0]).op == "MVAU"
    (fc,) = cnv.consumers(flat.outputs[0])
    # FINN has no node for it: the input thresholds see the flat vector (finn-examples TFC:
    # one channel per pixel), the first linear MVAU reads the last conv MVAU's stream
    tfc_finn, cnv_finn = finn_nodes(tfc), finn_nodes(cnv)
    assert "Flatten" not in {d["name"].split("_")[0] for d in tfc_finn + cnv_finn}
    first = tfc_finn[0]
    assert (first["op_type"], first["input"], first["NumChannels"]) == (
        "Thresholding_rtl",
        ["pixels"],
        64,
    )
    assert first["numInputVectors"] == [1]
    (d,) = [d for d in cnv_finn if d["name"] == fc.name]
    assert d["input"] == flat.inputs and d["numInputVectors"] == [1]
