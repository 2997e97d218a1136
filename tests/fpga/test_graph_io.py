"""Graph files (JSON structure + NPZ parameters): round trip, and every corruption refused
with a GraphError that names the node and the field."""

from __future__ import annotations

import json
from functools import cache

import numpy as np
import pytest
import torch

from hwbed.ir.graph import Graph
from hwbed.ir.reference import execute
from hwbed.ir.types import GraphError

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:Keyword arguments are being passed")

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def graph(random_graph):
    """A lowered random-init TFC by spec (tfc-w2a2, multi-bit: thresholds with several steps)."""
    return cache(lambda spec="tfc-w2a2": random_graph(spec, SHAPE))


@pytest.fixture
def saved(tmp_path, graph):
    """Paths (json, npz) of the saved graph."""
    jpath = graph().save(tmp_path / "tfc")
    return jpath, jpath.with_suffix(".npz")


def edit_json(path, fn) -> None:
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))


def edit_npz(path, fn) -> None:
    arrays = dict(np.load(path))
    fn(arrays)
    np.savez_compressed(path, **arrays)


def node_doc(doc: dict, name: str) -> dict:
    return next(n for n in doc["nodes"] if n["name"] == name)


@pytest.mark.parametrize("spec", ["tfc-w2a2", "tfc-w1a1"])
def test_round_trip_gives_identical_outputs(tmp_path, spec, graph):
    g = graph(spec)
    loaded = Graph.load(g.save(tmp_path / spec))
    assert [(n.name, n.op, n.inputs, n.outputs) for n in loaded.nodes] == [
        (n.name, n.op, n.inputs, n.outputs) for n in g.nodes
    ]
    assert loaded.tensors == g.tensors and loaded.meta == g.meta
    x = np.random.default_rng(0).integers(0, 256, (32, 8, 8, 1), dtype=np.uint8)
    before, after = execute(g, x, keep=True), execute(loaded, x, keep=True)
    assert before.keys() == after.keys()
    for name in before:
        assert np.array_equal(before[name], after[name]), name


def test_corrupt_json(saved):
    jpath, _ = saved
    jpath.write_text(jpath.read_text()[:-40])
    with pytest.raises(GraphError, match="cannot read graph JSON"):
        Graph.load(jpath)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("schema", "onnx", r"not an hwbed graph \(schema field\)"),
        ("version", 3, r"schema version 3, expected 2$"),
        ("version", 1, r"schema version 1, expected 2 \(.*rebuild it with python -m hwbed.build"),
    ],
)
def test_wrong_schema_or_version(saved, field, value, message):
    jpath, _ = saved
    edit_json(jpath, lambda d: d.update({field: value}))
    with pytest.raises(GraphError, match=message):
        Graph.load(jpath)


def test_missing_param(saved):
    jpath, npath = saved
    edit_npz(npath, lambda a: a.pop("MVAU_hls_1/weights"))
    with pytest.raises(GraphError, match=r"node MVAU_hls_1: param 'weights' missing from tfc.npz"):
        Graph.load(jpath)


def test_param_shape_differs_from_json(saved):
    jpath, npath = saved
    edit_npz(npath, lambda a: a.update({"MVAU_hls_1/weights": a["MVAU_hls_1/weights"][:-1]}))
    with pytest.raises(
        GraphError,
        match=r"node MVAU_hls_1: param 'weights' is int64\[63, 64\] "
        r"in tfc.npz but the JSON says int64\[64, 64\]",
    ):
        Graph.load(jpath)


def test_param_shape_edited_consistently(saved):
    """JSON and NPZ agree, but the weights no longer match the node's MH x MW."""
    jpath, npath = saved
    edit_npz(npath, lambda a: a.update({"MVAU_hls_1/weights": a["MVAU_hls_1/weights"][:, :-1]}))
    edit_json(
        jpath, lambda d: node_doc(d, "MVAU_hls_1")["params"]["weights"].update(shape=[64, 63])
    )
    with pytest.raises(
        GraphError,
        match=r"node MVAU_hls_1: field weights has shape \(64, 63\), "
        r"expected \(MH=64, MW=64\)",
    ):
        Graph.load(jpath)


def test_acc_type_too_narrow(saved):
    jpath, _ = saved
    edit_json(jpath, lambda d: node_doc(d, "MVAU_hls_0")["attrs"].update(acc_type="INT4"))
    with pytest.raises(
        GraphError,
        match=r"node MVAU_hls_0: acc_type INT4 cannot hold the "
        r"proven range \[-\d+, \d+\] \(needs INT\d+\)",
    ):
        Graph.load(jpath)


def test_unsorted_thresholds(saved):
    jpath, npath = saved
    key = "Thresholding_rtl_0/thresholds"
    assert (np.diff(np.load(npath)[key], axis=1) > 0).any()
    edit_npz(npath, lambda a: a.update({key: np.ascontiguousarray(a[key][:, ::-1])}))
    with pytest.raises(
        GraphError, match="node Thresholding_rtl_0: field thresholds is not sorted per channel"
    ):
        Graph.load(jpath)


def test_unknown_op(saved):
    jpath, _ = saved
    edit_json(jpath, lambda d: node_doc(d, "MVAU_hls_2").update(op="Conv"))
    with pytest.raises(GraphError, match="node MVAU_hls_2: unknown op 'Conv'"):
        Graph.load(jpath)


def test_tensor_used_before_produced(saved):
    jpath, _ = saved

    def swap(d):
        d["nodes"][2], d["nodes"][3] = d["nodes"][3], d["nodes"][2]  # the two first MVAUs

    edit_json(jpath, swap)
    with pytest.raises(
        GraphError,
        match=r"node MVAU_hls_1: input '\w+' is used before it is "
        "produced",
    ):
        Graph.load(jpath)


def test_missing_node_field(saved):
    jpath, _ = saved
    edit_json(jpath, lambda d: node_doc(d, "MVAU_hls_0").pop("inputs"))
    with pytest.raises(GraphError, match="MVAU_hls_0: missing field 'inputs'"):
        Graph.load(jpath)


def test_output_type_narrower_than_proven_range(saved, graph):
    jpath, _ = saved
    out = graph().node("MVAU_hls_3").outputs[0]

    def narrow(d):
        next(t for t in d["tensors"] if t["name"] == out)["dtype"] = "INT2"

    edit_json(jpath, narrow)
    with pytest.raises(GraphError, match="node MVAU_hls_3: .*INT2"):
        Graph.load(jpath)
