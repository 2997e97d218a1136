"""FINN cost-model formulas against hand-computed layers, and the report contents."""

import json
import logging
import math

import pytest

from hwbed.fpga.finn.estimates import (
    COST,
    dma_bound_fps,
    estimate_reports,
    layer_config_alternatives,
    layer_cycles,
    layer_resources,
    network_performance,
    node_cycles,
    node_op_and_param_counts,
    node_resources,
    op_and_param_counts,
    thresholding_rtl_memory,
    write_estimate_reports,
)
from hwbed.fpga.finn.folding import apply_folding_config
from hwbed.fpga.finn.op_specs import OP_SPECS, FoldingError, OpSpec, bitwidth, is_signed
from hwbed.ir.types import GraphError

Z7020 = "xc7z020clg400-1"
VERSAL = "xcve2802-vsvh1760-2MP-e-S"


def mvau(**kw):
    node = {
        "name": "MVAU_hls_0",
        "op_type": "MVAU_hls",
        "MW": 784,
        "MH": 64,
        "SIMD": 49,
        "PE": 16,
        "inputDataType": "BINARY",
        "weightDataType": "BINARY",
        "outputDataType": "BINARY",
        "accDataType": "UINT10",
        "binaryXnorMode": 1,
        "ram_style": "block",
        "resType": "lut",
    }
    node.update(kw)
    return node


def swg(**kw):
    node = {
        "name": "ConvolutionInputGenerator_rtl_1",
        "op_type": "ConvolutionInputGenerator_rtl",
        "ConvKernelDim": [3, 3],
        "IFMChannels": 64,
        "IFMDim": [30, 30],
        "OFMDim": [28, 28],
        "SIMD": 32,
        "inputDataType": "BINARY",
        "ram_style": "distributed",
    }
    node.update(kw)
    return node


def test_datatypes():
    assert [bitwidth(t) for t in ("BINARY", "BIPOLAR", "TERNARY", "INT8", "UINT10")] == [
        1,
        1,
        2,
        8,
        10,
    ]
    assert bitwidth("FIXED<16,6>") == 16 and bitwidth("FLOAT32") == 32
    assert is_signed("BIPOLAR") and is_signed("INT4") and not is_signed("UINT4")
    assert not is_signed("BINARY")
    with pytest.raises(ValueError, match="unknown FINN DataType 'INT'"):
        bitwidth("INT")


def test_mvau_tfc_layer0_by_hand():
    n = mvau()
    # cycles = (MH/PE) * (MW/SIMD) * N = (64/16) * (784/49) * 1
    assert node_cycles(n) == 4 * 16
    res = node_resources(n, Z7020)
    # depth = MW*MH/(SIMD*PE) = 50176/784 = 64, width = 49*1*16 = 784 > 18 and depth <= 512
    # -> ceil(64/512) * ceil(784/36) = 1 * 22
    assert res["BRAM_18K"] == 22
    assert res["BRAM_efficiency"] == pytest.approx(784 * 64 / (22 * 36 * 512))
    # mult = 49*(2*ceil(2/6)-1)*2 = 98; adder = 2*(2*49-1) = 194;
    # acc = min(10, ceil(a + log2(1 + 2^-a) + 1)) with a = log2(784)+1+1-1 -> 10
    # LUT = int(300 + 1.1 * 16 * (98 + 194 + 10)) = int(5615.2)
    assert res["LUT"] == 5615
    assert (res["URAM"], res["URAM_efficiency"], res["DSP"]) == (0, 1, 0)
    # resType dsp: no LUT multipliers, DSP = PE*SIMD*ceil((1+1)/48) = 784
    dsp = node_resources(mvau(resType="dsp"), Z7020)
    assert dsp["DSP"] == 784
    assert dsp["LUT"] == int(300 + 1.1 * 16 * (194 + 10))


@pytest.mark.parametrize(
    ("simd", "pe", "wdt", "expected"),
    [
        (1, 1, "BINARY", math.ceil(784 * 64 / 16384)),  # width 1: 4
        (2, 1, "BINARY", math.ceil(784 * 32 / 8192)),  # width 2: 4
        (4, 1, "BINARY", math.ceil(784 * 16 / 4096) * 1),  # width 4: 4
        (8, 1, "BINARY", math.ceil(784 * 8 / 2048) * 1),  # width 8: 4
        (4, 4, "BINARY", math.ceil(784 * 4 / 1024) * 1),  # width 16, <= 18: 4
        (8, 4, "BINARY", math.ceil(196 * 8 / 1024) * math.ceil(32 / 18)),  # depth 1568 > 512
        (16, 4, "INT2", math.ceil(784 / 512) * math.ceil(128 / 36)),  # width 128, depth 784
    ],
)
def test_mvau_bram_aspect_ratios(simd, pe, wdt, expected):
    assert node_resources(mvau(SIMD=simd, PE=pe, weightDataType=wdt), Z7020)["BRAM_18K"] == (
        expected
    )


def test_mvau_memory_modes():
    # distributed: no BRAM; weights in LUTRAM: c2 = P*Q*W*ceil(WMEM/64) = 16*49*1*1
    dist = node_resources(mvau(ram_style="distributed"), Z7020)
    assert dist["BRAM_18K"] == 0 and dist["BRAM_efficiency"] == 1
    assert dist["LUT"] == int(300 + 1.1 * 16 * (98 + 194 + 10) + 784)
    # internal_embedded with WMEM = 64 <= 128 also lands in LUTs
    emb = node_resources(mvau(mem_mode="internal_embedded"), Z7020)
    assert (emb["BRAM_18K"], emb["LUT"]) == (0, dist["LUT"])
    # ultra: URAM = ceil(784/72) * ceil(64/4096) = 11
    ultra = node_resources(mvau(ram_style="ultra"), Z7020)
    assert (ultra["BRAM_18K"], ultra["URAM"]) == (0, 11)
    assert ultra["URAM_efficiency"] == pytest.approx(50176 / (11 * 72 * 4096))
    assert node_resources(mvau(mem_mode="external"), Z7020)["BRAM_18K"] == 0


def test_mvau_thresholds_in_lutram_and_signed_input():
    n = mvau(
        inputDataType="INT8",
        weightDataType="INT2",
        outputDataType="UINT2",
        accDataType="INT32",
        binaryXnorMode=0,
        ram_style_thresholds="distributed",
        MW=27,
        MH=64,
        SIMD=3,
        PE=16,
        numInputVectors=[1, 30, 30],
    )
    assert node_cycles(n) == 4 * 9 * 900
    # W+A = 10: mult = 3*(2*2-1)*10 = 90; adder = 10*5 = 50
    # alpha = log2(27) + 2 + 8 - 1 - 1 = 12.755; acc = ceil(alpha + log2(1+2^-alpha) + 1) = 14
    # thresholds: (2^2-1)*14*ceil(TMEM=4/64) = 42, comparators 3*14 = 42
    assert node_resources(n, Z7020)["LUT"] == int(300 + 1.1 * 16 * (90 + 50 + 14 + 42 + 42))
    assert node_op_and_param_counts(n) == {
        "op_mac_2bx8b": 27 * 64 * 900,
        "param_weight_2b": 27 * 64,
        "param_threshold_32b": 64,
    }


def test_mvau_rtl_dsp_depends_on_part():
    n = mvau(
        op_type="MVAU_rtl",
        name="MVAU_rtl_0",
        inputDataType="INT8",
        weightDataType="INT8",
        SIMD=8,
        PE=8,
    )
    assert node_resources(n, Z7020)["DSP"] == math.ceil(8 / 4) * 8  # DSP48: ceil(P/4)*Q
    assert node_resources(n, VERSAL)["DSP"] == 8 * math.ceil(8 / 3)  # DSP58: P*ceil(Q/3)
    assert node_resources(n, Z7020)["LUT"] == 0


def test_mvau_op_counts_xnor_and_no_activation():
    assert node_op_and_param_counts(mvau()) == {
        "op_mac_1bx1b": 50176,
        "param_weight_1b": 50176,
        "param_threshold_10b": 64,
    }
    assert node_op_and_param_counts(mvau(noActivation=1)) == {
        "op_mac_1bx1b": 50176,
        "param_weight_1b": 50176,
    }


def test_swg_rtl_default_style_by_hand():
    n = swg()
    # cf = 64/32 = 2; fill = ((3-1)*30 + (3-1) + 1)*2 = 126
    # per row = max(28*3*3*2, 1*30*2) = 504; cycles = 126 + 28*504
    assert node_cycles(n) == 126 + 28 * 504
    # buffer depth 126 (stride 1 adds nothing); LUT = 300 + 32*ceil(126/38)
    assert node_resources(n, Z7020)["LUT"] == 300 + 32 * 4
    assert node_resources(n, Z7020)["BRAM_18K"] == 0
    # block: depth <= 512 -> 36-bit ports: ceil(126/16384) * ceil(32/36) = 1
    block = node_resources(swg(ram_style="block"), Z7020)
    assert (block["BRAM_18K"], block["LUT"]) == (1, 300)
    assert node_resources(swg(ram_style="ultra"), Z7020)["URAM"] == 1
    assert [a["BRAM_18K"] for a in layer_config_alternatives([n], Z7020)[n["name"]]] == [1, 0, 0]


def test_swg_rtl_parallel_window_strided_and_1d():
    # parallel window: number of input words + 2 = 30*30*1 + 2
    assert node_cycles(swg(SIMD=64, parallel_window=1)) == 902
    # stride 2 on 32x32x3 (SIMD 1): fill = (2*32 + 2 + 1)*3 = 201;
    # per row = max(15*9*3, 2*32*3) = 405; cycles = 201 + 15*405
    n = swg(IFMChannels=3, IFMDim=[32, 32], OFMDim=[15, 15], Stride=[2, 2], SIMD=1)
    assert node_cycles(n) == 201 + 15 * 405
    # 1D (H == 1): OFM_w * k_w * cf + 2
    one_d = swg(ConvKernelDim=[1, 5], IFMDim=[1, 64], OFMDim=[1, 60], SIMD=16)
    assert node_cycles(one_d) == 60 * 5 * 4 + 2
    with pytest.raises(FoldingError, match="parallel_window=1 needs SIMD == IFMChannels"):
        node_cycles(swg(parallel_window=1))


def test_thresholding_rtl_memory_by_hand():
    n = {
        "name": "Thresholding_rtl_0",
        "op_type": "Thresholding_rtl",
        "NumChannels": 784,
        "PE": 49,
        "inputDataType": "UINT8",
        "weightDataType": "UINT8",
        "outputDataType": "BINARY",
    }
    assert node_cycles(n) == 784 // 49
    # one 8-bit x (784/49 = 16)-deep memory per PE: LUTRAM 8 x ceil(16/64) = 8 wastes
    # 8*64 - 128 = 384 bits, the least of all primitives -> 8 * 49 LUTs
    assert thresholding_rtl_memory(n) == {"LUTRAM": 392}
    assert node_resources(n, Z7020) == {
        "BRAM_18K": 0,
        "BRAM_efficiency": 1,
        "LUT": 392,
        "URAM": 0,
        "URAM_efficiency": 1,
        "DSP": 0,
    }
    # 2-bit output, 1 channel per PE: two 8-bit memories of depth 1 and 2 -> 8 + 8 LUTRAMs
    two = {**n, "PE": 784, "outputDataType": "UINT2"}
    assert thresholding_rtl_memory(two) == {"LUTRAM": 784 * (8 + 8)}
    # 18 x 1024 wastes nothing as one BRAM18_18x1024 or as 18*16 LUTRAMs; the tie goes to
    # the BRAM (FINN's primitive order), which FINN's report then reads as 0 BRAM
    deep = {**n, "NumChannels": 1024, "PE": 1, "weightDataType": "INT18"}
    assert thresholding_rtl_memory(deep) == {"BRAM18": 1}
    assert node_resources(deep, Z7020)["BRAM_18K"] == 0
    assert node_op_and_param_counts(n) == {}


def test_thresholding_hls_and_channelwise():
    n = {
        "name": "Thresholding_hls_0",
        "op_type": "Thresholding_hls",
        "NumChannels": 256,
        "PE": 4,
        "numSteps": 3,
        "numInputVectors": [1, 8, 8],
        "inputDataType": "INT16",
        "weightDataType": "INT16",
        "outputDataType": "UINT2",
    }
    assert node_cycles(n) == 64 * 256 // 4
    # comparators A*P = 64, LUTRAM P*A*ceil(TMEM=64/64) = 64
    assert node_resources(n, Z7020)["LUT"] == 64 + 64
    # block: ceil(A*P/16) * ceil(TMEM/1024) = 4
    block = node_resources({**n, "ram_style": "block"}, Z7020)
    assert (block["BRAM_18K"], block["LUT"]) == (4, 64)
    assert node_op_and_param_counts(n) == {"param_threshold_16b": 256 * 3}
    cw = {
        "name": "ChannelwiseOp_hls_0",
        "op_type": "ChannelwiseOp_hls",
        "NumChannels": 64,
        "PE": 2,
        "inputDataType": "INT8",
        "numInputVectors": [1, 4, 4],
    }
    assert node_cycles(cw) == 16 * 32
    assert node_resources(cw, Z7020)["LUT"] == 8 * 2 + 2 * 8 * 1


def test_other_layers_cycles():
    pool = {
        "name": "StreamingMaxPool_hls_0",
        "op_type": "StreamingMaxPool_hls",
        "ImgDim": [28, 28],
        "PoolDim": [2, 2],
        "NumChannels": 64,
        "dataType": "BINARY",
    }
    assert node_cycles(pool) == int(28 * 28 * (1 + 1 / 4))  # 980
    # 1D: OFM * (C/PE) * (k+1), OFM = floor((20-3)/3 + 1) = 6
    pool1d = {**pool, "ImgDim": [1, 20], "PoolDim": [1, 3], "PE": 16, "dataType": "INT4"}
    assert node_cycles(pool1d) == 6 * 4 * 4
    assert node_cycles({**pool1d, "CeilMode": 1}) == 7 * 4 * 4
    label = {
        "name": "LabelSelect_hls_0",
        "op_type": "LabelSelect_hls",
        "Labels": 10,
        "PE": 2,
        "K": 1,
        "inputDataType": "UINT10",
    }
    assert node_cycles(label) == 5
    pad = {
        "name": "FMPadding_rtl_0",
        "op_type": "FMPadding_rtl",
        "ImgDim": [32, 32],
        "Padding": [1, 1, 1, 1],
        "NumChannels": 64,
        "SIMD": 8,
        "inputDataType": "INT4",
    }
    assert node_cycles(pad) == 8 * 34 * 34
    stream = {"NumChannels": 64, "PE": 4, "inputDataType": "INT8", "numInputVectors": [1, 7, 7]}
    assert node_cycles({"name": "a", "op_type": "AddStreams_hls", **stream}) == 49 * 16
    dup = {"name": "d", "op_type": "DuplicateStreams_hls", "NumOutputStreams": 2, **stream}
    assert node_cycles(dup) == 49 * 16
    assert node_cycles({"name": "g", "op_type": "GlobalAccPool_hls", **stream}) == 49 * 16 + 16


def test_dwc_luts():
    dwc = {
        "name": "StreamingDataWidthConverter_rtl_0",
        "op_type": "StreamingDataWidthConverter_rtl",
        "shape": [1, 64],
        "inWidth": 6,
        "outWidth": 4,
        "dataType": "UINT2",
    }
    # lcm = 12: up 6->12: |ceil(log2(0.5))| + 12 = 13; down 12->4: ceil(log2 3) + 4 = 6
    assert node_resources(dwc, Z7020)["LUT"] == 13 + 6
    assert node_cycles(dwc) == 0


def test_input_errors_are_clear():
    with pytest.raises(ValueError, match="unsupported op_type 'Conv'.*MVAU_hls"):
        node_cycles({"name": "x", "op_type": "Conv"})
    bad = mvau()
    del bad["MW"]
    with pytest.raises(ValueError, match="'MVAU_hls_0' .*lacks required attribute 'MW'"):
        node_cycles(bad)
    with pytest.raises(FoldingError, match="MW=784 is not divisible by SIMD=48"):
        node_resources(mvau(SIMD=48), Z7020)
    with pytest.raises(ValueError, match="repeated: MVAU_hls_0"):
        layer_cycles([mvau(), mvau()])


def test_every_op_type_has_a_cost_and_a_missing_one_is_an_error(monkeypatch):
    assert sorted(COST.entries) == sorted(OP_SPECS)
    monkeypatch.setitem(OP_SPECS, "Foo_hls", OpSpec(required=()))
    node = {"name": "Foo_hls_0", "op_type": "Foo_hls"}
    for estimate in (node_cycles, lambda n: node_resources(n, Z7020), node_op_and_param_counts):
        with pytest.raises(
            GraphError, match="'Foo_hls_0': the cost backend has no entry for 'Foo_hls'"
        ):
            estimate(node)


def test_tfc_reports_with_finn_examples_folding(finn_example):
    nodes, config = finn_example("tfc-w1a1")
    folded = apply_folding_config(nodes, config)
    cycles = layer_cycles(folded)
    assert cycles == {
        "Thresholding_rtl_0": 16,
        "MVAU_hls_0": 64,
        "MVAU_hls_1": 64,
        "MVAU_hls_2": 64,
        "MVAU_hls_3": 8,
        "LabelSelect_hls_0": 10,
    }
    perf = network_performance(folded, 10.0)
    assert perf == {
        "critical_path_cycles": 16 + 64 + 64 + 64 + 8 + 10,
        "max_cycles": 64,
        "max_cycles_node_name": "MVAU_hls_0",  # the first node with the most cycles
        "estimated_throughput_fps": 1e8 / 64,
        "estimated_latency_ns": 226 * 10.0,
    }
    res = layer_resources(folded, Z7020)
    assert set(res) == {n["name"] for n in nodes} | {"total"}
    assert set(res["total"]) == {"BRAM_18K", "LUT", "URAM", "DSP"}
    for key in res["total"]:
        assert res["total"][key] == float(sum(r[key] for k, r in res.items() if k != "total"))
        assert isinstance(res["total"][key], float)
    assert res["MVAU_hls_0"]["BRAM_18K"] == 22  # ram_style block, see the by-hand test
    counts = op_and_param_counts(folded)
    assert counts["MVAU_hls_0"] == {
        "op_mac_1bx1b": 50176,
        "param_weight_1b": 50176,
        "param_threshold_10b": 64,
    }
    assert counts["LabelSelect_hls_0"] == {} and counts["Thresholding_rtl_0"] == {}
    assert counts["total"]["op_mac_1bx1b"] == float(784 * 64 + 64 * 64 * 2 + 64 * 10)
    assert counts["total"]["param_threshold_10b"] == 3 * 64.0  # the fixture uses UINT10 acc


def test_report_files_keys_and_types(finn_example, tmp_path, caplog):
    nodes, config = finn_example("cnv-w1a1")
    with caplog.at_level(logging.INFO, logger="hwbed.fpga.finn.folding"):
        folded = apply_folding_config(nodes, config)
    assert "No HW configuration for nodes: StreamingMaxPool_hls_0" in caplog.text
    paths = write_estimate_reports(folded, tmp_path / "report", Z7020, 5.0)
    assert sorted(p.name for p in paths) == [
        "estimate_layer_config_alternatives.json",
        "estimate_layer_cycles.json",
        "estimate_layer_resources.json",
        "estimate_network_performance.json",
        "op_and_param_counts.json",
    ]
    loaded = {p.name: json.loads(p.read_text()) for p in paths}
    assert loaded == estimate_reports(folded, Z7020, 5.0)
    cycles = loaded["estimate_layer_cycles.json"]
    assert all(isinstance(v, int) for v in cycles.values())
    for name, res in loaded["estimate_layer_resources.json"].items():
        expected = {"BRAM_18K", "LUT", "URAM", "DSP"}
        if name != "total":
            expected |= {"BRAM_efficiency", "URAM_efficiency"}
        assert set(res) == expected
    perf = loaded["estimate_network_performance.json"]
    assert set(perf) == {
        "critical_path_cycles",
        "max_cycles",
        "max_cycles_node_name",
        "estimated_throughput_fps",
        "estimated_latency_ns",
    }
    assert perf["max_cycles"] == max(cycles.values())
    assert perf["critical_path_cycles"] == sum(cycles.values())  # a chain
    alts = loaded["estimate_layer_config_alternatives.json"]
    assert len(alts["MVAU_hls_1"]) == 2 and len(alts["ConvolutionInputGenerator_rtl_1"]) == 3


def test_critical_path_follows_graph_edges():
    stream = {"NumChannels": 16, "PE": 1, "inputDataType": "INT8", "numInputVectors": [10]}
    nodes = [
        {
            "name": "dup",
            "op_type": "DuplicateStreams_hls",
            "NumOutputStreams": 2,
            "input": ["x"],
            "output": ["a", "b"],
            **stream,
        },
        {"name": "slow", "op_type": "GlobalAccPool_hls", "input": ["a"], "output": ["c"], **stream},
        {
            "name": "add",
            "op_type": "AddStreams_hls",
            "input": ["b", "c"],
            "output": ["y"],
            **stream,
        },
    ]
    perf = network_performance(nodes, 2.0)
    # dup 160, slow 160 + 16, add 160: path dup -> slow -> add
    assert perf["critical_path_cycles"] == 160 + 176 + 160
    assert perf["max_cycles_node_name"] == "slow"


def test_dma_bound_fps():
    # TFC on Pynq-Z2: 784 UINT8 pixels = 6272 bits = 98 64-bit words in, 1 word out
    assert dma_bound_fps(64, 784 * 8, 8, 10.0) == pytest.approx(1e8 / 98)
    # the output direction can dominate too
    assert dma_bound_fps(128, 100, 1000, 5.0) == pytest.approx(2e8 / 8)
    with pytest.raises(ValueError, match="positive bits per frame"):
        dma_bound_fps(64, 0, 8, 10.0)
