"""Graph.load checks every declared width against the proven ranges, with one-line messages
naming the file, node, field, declared type and proven range; build folders are relocatable."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from hwbed.ir.checks import check_graph
from hwbed.ir.graph import Graph, portable_path
from hwbed.ir.types import GraphError

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings(
    "ignore:Keyword arguments are being passed", "ignore:fast_hadamard_transform"
)

SPEC, SHAPE = "resnet20-xnor", (1, 8, 8)


@pytest.fixture(scope="module")
def resnet(random_graph) -> Graph:
    """A lowered random-init, calibrated resnet20-xnor: AddStreams, pool, INT8 stem and FC."""
    return random_graph(SPEC, SHAPE)


@pytest.fixture
def saved(resnet, tmp_path):
    """graph.json of the saved resnet (with graph.npz beside it)."""
    return resnet.save(tmp_path / "graph")


def node(doc: dict, name: str) -> dict:
    return next(n for n in doc["nodes"] if n["name"] == name)


def tensor(doc: dict, name: str) -> dict:
    return next(t for t in doc["tensors"] if t["name"] == name)


def output(doc: dict, name: str) -> dict:
    """The tensor entry of node ``name``'s output."""
    return tensor(doc, node(doc, name)["outputs"][0])


def attrs(name: str, **values):
    return lambda doc, arrays: node(doc, name)["attrs"].update(values)


def retype(name: str, dtype: str):
    return lambda doc, arrays: output(doc, name).update(dtype=dtype)


def set_weight(doc, arrays):
    arrays["MVAU_hls_19/weights"][0, 0] = 128  # the FC: INT8 weights in -127..127


def drop_thresholds(name: str, npz: bool = True):
    def edit(doc, arrays):
        node(doc, name)["params"].pop("thresholds")
        if npz:
            arrays.pop(f"{name}/thresholds")

    return edit


def wide_threshold(doc, arrays):
    arrays["MVAU_hls_2/thresholds"][:, -1] = 10**6


def json_edit(edit):
    """A corruption: ``edit(doc, arrays)`` on the saved graph's JSON and npz arrays."""

    def corrupt(path):
        npz = path.with_suffix(".npz")
        doc, arrays = json.loads(path.read_text()), dict(np.load(npz))
        edit(doc, arrays)
        path.write_text(json.dumps(doc))
        np.savez_compressed(npz, **arrays)

    return corrupt


def text_edit(cut):
    """A corruption: ``cut(text)`` of the saved graph's JSON text."""
    return lambda path: path.write_text(cut(path.read_text()))


CORRUPTIONS = [
    (
        "AddStreams output INT9 -> INT4",
        json_edit(retype("AddStreams_hls_0", "INT4")),
        "node AddStreams_hls_0: output INT4 cannot hold the proven range [-256, 254] (needs INT9)",
    ),
    (
        "AddStreams output INT9 -> INT40",
        json_edit(retype("AddStreams_hls_0", "INT40")),
        "node AddStreams_hls_0: output INT40 is wider than the 32 bits the hardware holds",
    ),
    (
        "GlobalAccPool output INT10 -> INT8",
        json_edit(retype("GlobalAccPool_hls_0", "INT8")),
        "node GlobalAccPool_hls_0: output INT8 cannot hold the proven range [-512, 508] "
        "(needs INT10)",
    ),
    (
        "graph input UINT8 -> UINT7",
        json_edit(lambda doc, arrays: tensor(doc, "pixels").update(dtype="UINT7")),
        "graph input 'pixels': type UINT7 cannot hold the uint8 pixel range [0, 255] (needs UINT8)",
    ),
    (
        "weightDataType INT8 -> INT2",
        json_edit(attrs("MVAU_hls_0", weightDataType="INT2")),
        "node MVAU_hls_0: weightDataType INT2 cannot hold the range of its weights [-85, 85] "
        "(needs INT8)",
    ),
    (
        "weight 128 in an INT8 layer",
        json_edit(set_weight),
        "node MVAU_hls_19: weightDataType INT8 cannot hold the range of its weights "
        "[-127, 128] (needs INT9)",
    ),
    (
        "acc_type INT999",
        json_edit(attrs("MVAU_hls_0", acc_type="INT999")),
        "node MVAU_hls_0: acc_type INT999 is wider than the 32 bits the hardware holds",
    ),
    (
        "acc_type FLOAT32",
        json_edit(attrs("MVAU_hls_0", acc_type="FLOAT32")),
        "node MVAU_hls_0: acc_type FLOAT32 is not an integer type",
    ),
    (
        "acc_type INT18 -> INT17",
        json_edit(attrs("MVAU_hls_0", acc_type="INT17")),
        "node MVAU_hls_0: acc_type INT17 cannot hold the proven range [-107610, 73950] "
        "(needs INT18)",
    ),
    (
        "acc_max below the proven range",
        json_edit(attrs("MVAU_hls_0", acc_max=10)),
        "node MVAU_hls_0: fields acc_min/acc_max [-107610, 10] do not cover the proven range "
        "[-107610, 73950]",
    ),
    (
        "inputDataType INT10 -> INT8",
        json_edit(attrs("MVAU_hls_19", inputDataType="INT8")),
        "node MVAU_hls_19: inputDataType INT8 cannot hold the proven range [-512, 508] "
        "(needs INT10)",
    ),
    (
        "binary flag on INT8 weights",
        json_edit(attrs("MVAU_hls_19", binary=True)),
        "node MVAU_hls_19: field binary is set but its weights [-127, 127] are not ±1",
    ),
    (
        "zero-padded stream TERNARY -> BIPOLAR",
        json_edit(retype("FMPadding_rtl_1", "BIPOLAR")),
        "node FMPadding_rtl_1: output BIPOLAR cannot hold the proven range [-1, 1] (needs TERNARY)",
    ),
    (
        "MVAU output FLOAT32",
        json_edit(retype("MVAU_hls_19", "FLOAT32")),
        "node MVAU_hls_19: output FLOAT32 is not an integer type",
    ),
    (
        "Affine output INT8",
        json_edit(retype("Affine_hls_0", "INT8")),
        "node Affine_hls_0: output INT8, but Affine is FLOAT32",
    ),
    (
        "threshold beyond the accumulator domain",
        json_edit(wide_threshold),
        "node MVAU_hls_2: field thresholds [-46, 1000000] exceeds the domain [-144, 145] "
        "of its accumulator",
    ),
    (
        "MVAU thresholds removed",
        json_edit(drop_thresholds("MVAU_hls_1")),
        "node MVAU_hls_1: missing param 'thresholds' (out_bias/out_scale say its accumulator "
        "is thresholded)",
    ),
    (
        "MVAU thresholds removed from the JSON only",
        json_edit(drop_thresholds("MVAU_hls_1", npz=False)),
        "graph.npz holds 'MVAU_hls_1/thresholds', which the JSON does not declare",
    ),
    (
        "Thresholding thresholds removed",
        json_edit(drop_thresholds("Thresholding_rtl_0")),
        "node Thresholding_rtl_0: missing param 'thresholds'",
    ),
    (
        "input shape [8, 8, 1] -> [8, 8, 3]",
        json_edit(lambda doc, arrays: tensor(doc, "pixels").update(shape=[8, 8, 3])),
        "node FMPadding_rtl_0: input shape [8, 8, 3] gives [10, 10, 3] (300 values), which "
        "disagrees with output 't0_pad' declared [10, 10, 1] (100 values)",
    ),
    (
        "pool positions edited",
        json_edit(attrs("GlobalAccPool_hls_0", positions=16)),
        "node GlobalAccPool_hls_0: field positions is 16, but its input [2, 2, 64] has 4",
    ),
    (
        "negative padding",
        json_edit(attrs("FMPadding_rtl_0", pad=-1)),
        "node FMPadding_rtl_0: field pad must be an integer >= 0, got -1",
    ),
    (
        "unknown tensor type",
        json_edit(lambda doc, arrays: tensor(doc, "pixels").update(dtype="INT")),
        "tensor pixels: field dtype: unknown data type 'INT'",
    ),
    (
        "tensor nobody produces",
        json_edit(
            lambda doc, arrays: doc["tensors"].append({"name": "t", "shape": [1], "dtype": "INT8"})
        ),
        "tensor t: declared but no node produces it",
    ),
    (
        "truncated JSON",
        text_edit(lambda text: "\n".join(text.splitlines()[:3])),
        "cannot read graph JSON: truncated at line 3 column 15 (Expecting property name "
        "enclosed in double quotes)",
    ),
    (
        "corrupt JSON",
        text_edit(lambda text: text.replace('"schema":', '"schema"', 1)),
        "cannot read graph JSON: not valid JSON at line 2 column 11 (Expecting ':' delimiter)",
    ),
    ("empty JSON", text_edit(lambda text: ""), "cannot read graph JSON: the file is empty"),
]
"""(case, corruption of the saved graph, the one-line refusal after ``<graph.json>: ``)."""


@pytest.mark.parametrize(
    "corrupt, message", [c[1:] for c in CORRUPTIONS], ids=[c[0] for c in CORRUPTIONS]
)
def test_corrupted_graph_is_refused_at_load(saved, corrupt, message):
    corrupt(saved)
    with pytest.raises(GraphError) as err:
        Graph.load(saved)
    assert str(err.value) == f"{saved}: {message}"


def test_proven_ranges_of_the_lowered_graph(resnet):
    """The ranges the checks prove: pixels, the int8 stream, its sums and the pooled sums."""
    graph = resnet
    proven = check_graph(graph)
    out = {n.name: proven[n.outputs[0]] for n in graph.nodes}
    assert (proven["pixels"].lo, proven["pixels"].hi) == (0, 255)
    assert (out["AddStreams_hls_0"].lo, out["AddStreams_hls_0"].hi) == (-256, 254)
    assert (out["GlobalAccPool_hls_0"].lo, out["GlobalAccPool_hls_0"].hi) == (-512, 508)
    assert not out["Thresholding_rtl_0"].has_zero  # BIPOLAR: -1 or +1, never 0
    assert out["FMPadding_rtl_1"].has_zero  # its zero padding: TERNARY
    assert out["Affine_hls_0"] is None  # float32 logits
    # the FC over pooled sums in [-512, 508]: narrower than acc_min/acc_max, proven from the
    # declared INT10 input [-512, 511]
    fc = graph.node("MVAU_hls_19").attrs
    assert (out["MVAU_hls_19"].lo, out["MVAU_hls_19"].hi) == (-2248504, 2241536)
    assert (fc["acc_min"], fc["acc_max"]) == (-2252494, 2250752)


# -- relocatable build folders ---------------------------------------------------------------
def test_portable_path(tmp_path):
    folder = tmp_path / "build"
    assert portable_path(folder / "model.pt", folder) == "model.pt"
    assert portable_path(folder / "deploy" / "graph.json", folder) == "deploy/graph.json"
    assert portable_path(folder, folder) == "."
    assert portable_path(tmp_path / "other.pt", folder) == str((tmp_path / "other.pt").resolve())


def test_meta_checkpoint_is_stored_relative_and_loaded_absolute(resnet, tmp_path):
    graph = resnet
    graph.meta["checkpoint"] = str(tmp_path / "a" / "model.pt")
    try:
        jpath = graph.save(tmp_path / "a" / "graph")
        outside = graph.save(tmp_path / "b" / "graph")
    finally:
        del graph.meta["checkpoint"]
    assert json.loads(jpath.read_text())["meta"]["checkpoint"] == "model.pt"
    assert json.loads(outside.read_text())["meta"]["checkpoint"] == str(tmp_path / "a/model.pt")
    shutil.move(tmp_path / "a", tmp_path / "moved")
    loaded = Graph.load(tmp_path / "moved" / "graph.json")
    assert loaded.meta["checkpoint"] == str(tmp_path / "moved" / "model.pt")


def test_moved_build_folder_still_verifies(tmp_path, capsys):
    """A build (model, export, lower) copied elsewhere and the original removed: verify passes
    every path, the twin included, from the copy's own model.pt."""
    from hwbed import verify
    from hwbed.fpga.build.flow import BuildConfig, build

    original = tmp_path / "original" / "tfc"
    cfg = BuildConfig(
        model="tfc-w1a1", weights="random", out=str(original), stop_step="lower", progress=False
    )
    build(cfg)
    assert json.loads((original / "graph.json").read_text())["meta"]["checkpoint"] == "model.pt"
    assert json.loads((original / "build_config.json").read_text())["out"] == "."
    copy = tmp_path / "elsewhere" / "tfc"
    shutil.copytree(original, copy)
    shutil.rmtree(original)
    capsys.readouterr()
    assert verify.main([str(copy), "--n", "4", "--slice-n", "2", "--qonnx-n", "1"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert any(line.startswith("twin") and line.endswith("ok") for line in rows)
