"""FINN's analytical cycle, resource and op-count models over FINN-style node dicts.

Formulas follow FINN ``main`` @ 39f0c9a6b (``src/finn/custom_op/fpgadataflow``), re-written
from its descriptions; see ``docs/fpga-estimates.md``. Network functions produce the contents
of FINN's ``report/`` files: ``estimate_layer_cycles.json``, ``estimate_layer_resources.json``,
``estimate_layer_config_alternatives.json``, ``estimate_network_performance.json`` and
``op_and_param_counts.json``. Each FINN op type registers its models once in :data:`COST`;
an op type without an entry is an error naming it, never a silent zero.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwbed.fpga.finn.boards import dsp_block
from hwbed.fpga.finn.op_specs import (
    FinnNode,
    attr,
    bitwidth,
    check_node,
    is_signed,
    node_name,
    num_vectors,
    spec,
)
from hwbed.ir.backend import Backend

# ---------------------------------------------------------------------------- MVAU


def _mvau_wmem(n: FinnNode) -> int:
    return attr(n, "MW") * attr(n, "MH") // (attr(n, "PE") * attr(n, "SIMD"))


def _mvau_tmem(n: FinnNode) -> int:
    return 0 if attr(n, "noActivation") else attr(n, "MH") // attr(n, "PE")


def _mvau_cycles(n: FinnNode) -> int:
    return (attr(n, "MH") // attr(n, "PE")) * (attr(n, "MW") // attr(n, "SIMD")) * num_vectors(n)


def _mvau_no_bram(n: FinnNode, styles: tuple[str, ...]) -> bool:
    mode = attr(n, "mem_mode")
    return (
        (mode == "internal_decoupled" and attr(n, "ram_style") in styles)
        or (mode == "internal_embedded" and _mvau_wmem(n) <= 128)
        or mode == "external"
    )


def _mvau_bram(n: FinnNode) -> int:
    if _mvau_no_bram(n, ("distributed", "ultra")):
        return 0
    depth = _mvau_wmem(n)
    width = attr(n, "SIMD") * bitwidth(attr(n, "weightDataType")) * attr(n, "PE")
    # RAMB18 simple-dual-port aspect ratios (UG573 table 1-10), FINN-R
    if width == 1:
        return math.ceil(depth / 16384)
    if width == 2:
        return math.ceil(depth / 8192)
    if width <= 4:
        return math.ceil(depth / 4096) * math.ceil(width / 4)
    if width <= 9:
        return math.ceil(depth / 2048) * math.ceil(width / 9)
    if width <= 18 or depth > 512:
        return math.ceil(depth / 1024) * math.ceil(width / 18)
    return math.ceil(depth / 512) * math.ceil(width / 36)


def _mvau_uram(n: FinnNode) -> int:
    mode = attr(n, "mem_mode")
    if (mode == "internal_decoupled" and attr(n, "ram_style") != "ultra") or _mvau_no_bram(n, ()):
        return 0
    width = attr(n, "SIMD") * bitwidth(attr(n, "weightDataType")) * attr(n, "PE")
    return math.ceil(width / 72) * math.ceil(_mvau_wmem(n) / 4096)


def _mvau_acc_bits(n: FinnNode) -> float:
    w, a = bitwidth(attr(n, "weightDataType")), bitwidth(attr(n, "inputDataType"))
    alpha = math.log(attr(n, "MW"), 2) + w + a - 1 - int(is_signed(attr(n, "inputDataType")))
    bound = math.ceil(alpha + math.log(1 + 2**-alpha, 2) + 1)
    return min(bitwidth(attr(n, "accDataType")), bound)


def _mvau_hls_lut(n: FinnNode) -> int:
    p, q = attr(n, "PE"), attr(n, "SIMD")
    w, a = bitwidth(attr(n, "weightDataType")), bitwidth(attr(n, "inputDataType"))
    mode, style = attr(n, "mem_mode"), attr(n, "ram_style")
    lutram = (mode == "internal_decoupled" and style == "distributed") or (
        mode == "internal_embedded" and _mvau_wmem(n) <= 128
    )
    c2 = p * q * w * math.ceil(_mvau_wmem(n) / 64) if lutram else 0
    mult = 0 if attr(n, "resType") == "dsp" else q * (2 * math.ceil((w + a) / 6) - 1) * (w + a)
    adder = (w + a) * (2 * q - 1)
    acc = _mvau_acc_bits(n)
    thr = comp = 0
    if attr(n, "noActivation") == 0 and attr(n, "ram_style_thresholds") == "distributed":
        levels = 2 ** bitwidth(attr(n, "outputDataType")) - 1
        thr = levels * acc * math.ceil(_mvau_tmem(n) / 64)
        comp = levels * acc
    return int(300 + 1.1 * (p * (mult + adder + acc + thr + comp)) + c2)


def _mvau_hls_dsp(n: FinnNode, part: str) -> int:
    if attr(n, "resType") != "dsp":
        return 0
    w, a = bitwidth(attr(n, "weightDataType")), bitwidth(attr(n, "inputDataType"))
    return attr(n, "PE") * attr(n, "SIMD") * math.ceil((w + a) / 48)


def _mvau_rtl_dsp(n: FinnNode, part: str) -> int:
    p, q = attr(n, "PE"), attr(n, "SIMD")
    if dsp_block(part) == "DSP58":
        return p * math.ceil(q / 3)
    return math.ceil(p / 4) * q


def _mvau_efficiency(n: FinnNode, count: int, bits_per_unit: int) -> float:
    if count == 0:
        return 1
    wbits = bitwidth(attr(n, "weightDataType")) * attr(n, "MW") * attr(n, "MH")
    return wbits / (count * bits_per_unit)


def _mvau_resources(lut: Callable[[FinnNode], int], dsp: Callable[[FinnNode, str], int]):
    def estimate(n: FinnNode, part: str) -> dict[str, Any]:
        bram, uram = _mvau_bram(n), _mvau_uram(n)
        return _res(
            bram,
            lut(n),
            uram,
            dsp(n, part),
            _mvau_efficiency(n, bram, 36 * 512),
            _mvau_efficiency(n, uram, 72 * 4096),
        )

    return estimate


def _mvau_counts(n: FinnNode) -> dict[str, int]:
    w, a = bitwidth(attr(n, "weightDataType")), bitwidth(attr(n, "inputDataType"))
    mw, mh = attr(n, "MW"), attr(n, "MH")
    ret = {
        f"op_mac_{min(a, w)}bx{max(a, w)}b": mw * mh * num_vectors(n),
        f"param_weight_{w}b": mw * mh,
    }
    if attr(n, "noActivation") == 0:
        ret[f"param_threshold_{bitwidth(attr(n, 'accDataType'))}b"] = mh
    return ret


# --------------------------------------------------- ConvolutionInputGenerator_rtl


def _swg_geometry(n: FinnNode) -> tuple[int, ...]:
    k_h, k_w = attr(n, "ConvKernelDim")
    h, w = attr(n, "IFMDim")
    s_h, s_w = attr(n, "Stride")
    d_h, d_w = attr(n, "Dilation")
    if (k_h - 1) * d_h + 1 > h or (k_w - 1) * d_w + 1 > w or s_h > h or s_w > w:
        raise ValueError(f"node {node_name(n)!r}: kernel or stride larger than IFMDim")
    return k_h, k_w, h, w, s_h, s_w, d_h, d_w


def _swg_parallel(n: FinnNode) -> bool:
    """FINN's ``select_impl_style`` == "parallel": parallel_window mode or a 1x1 kernel."""
    k_h, k_w = attr(n, "ConvKernelDim")
    window = bool(attr(n, "parallel_window")) and attr(n, "M") * k_h * k_w > 1
    return window or (k_h, k_w) == (1, 1)


def _swg_buffer_depth(n: FinnNode) -> int:
    k_h, k_w, _, w, s_h, s_w, d_h, d_w = _swg_geometry(n)
    cf = attr(n, "IFMChannels") // attr(n, "SIMD")
    if _swg_parallel(n):
        return ((k_h - 1) * d_h * w + (k_w - 1) * d_w) * cf + 2
    fill = ((k_h - 1) * d_h * w + (k_w - 1) * d_w + 1) * cf
    return fill + max(0, (s_w - 1 - k_h * k_w) * cf) + max(0, ((s_h - 1) * w - k_h * k_w) * cf)


def _swg_cycles(n: FinnNode) -> int:
    k_h, k_w, h, w, s_h, s_w, d_h, d_w = _swg_geometry(n)
    cf = attr(n, "IFMChannels") // attr(n, "SIMD")
    if _swg_parallel(n):
        return h * w * cf + 2
    o_h, o_w = attr(n, "OFMDim")
    dw = attr(n, "depthwise")
    if h == 1 or w == 1:
        if w == 1:  # normalise 1D convolutions to run along the width
            o_w, k_w, s_w = o_h, k_h, s_h
        if dw:
            return o_w * k_w * cf + cf * (k_w - 1) * (s_w - 1) - (k_w - 1) + 2
        return o_w * k_w * cf + 2
    fill = ((k_h - 1) * d_h * w + (k_w - 1) * d_w + 1) * cf
    per_row = max(o_w * k_w * k_h * cf, s_w * w * cf)
    if dw:
        per_row += o_w * (s_w - 1) * (cf - 1)
    cycles = fill + o_h * per_row
    if dw:
        cycles += (s_h - 1) * w * cf
    return cycles


def _swg_buffers(n: FinnNode) -> tuple[int, int, int]:
    """(width bits, depth, count) of the line buffers, or count 0 when none are needed."""
    k_h, k_w, h, w, _, _, d_h, d_w = _swg_geometry(n)
    width = attr(n, "SIMD") * bitwidth(attr(n, "inputDataType"))
    if not _swg_parallel(n):
        return width, _swg_buffer_depth(n), 1
    if h == 1 or w == 1:
        return width, 0, 0
    return width, (w - ((k_w - 1) * d_w + 1)) + w * (d_h - 1), k_h - 1


def _bram_port_width(depth: int) -> int:
    for limit, width in ((512, 36), (1024, 18), (2048, 9), (4096, 4), (8192, 2)):
        if depth <= limit:
            return width
    return 1


def _swg_bram(n: FinnNode) -> int:
    if attr(n, "ram_style") not in ("block", "auto"):
        return 0
    width, depth, count = _swg_buffers(n)
    if count == 0:
        return 0
    cascade_w = math.ceil(width / _bram_port_width(depth))
    savings = 0
    if depth > 16384:
        savings = cascade_w - math.ceil(width / _bram_port_width(depth % 16384))
    return (math.ceil(depth / 16384) * cascade_w - savings) * count


def _swg_uram(n: FinnNode) -> int:
    if attr(n, "ram_style") != "ultra":
        return 0
    width, depth, count = _swg_buffers(n)
    return math.ceil(depth / 4096) * math.ceil(width / 72) * count


def _swg_lut(n: FinnNode) -> int:
    if attr(n, "ram_style") != "distributed":
        return 300
    width = attr(n, "SIMD") * bitwidth(attr(n, "inputDataType"))
    return 300 + width * math.ceil(_swg_buffer_depth(n) / 38)


# ---------------------------------------------------------------------- Thresholding

# FINN's mem_primitives_versal, in its order (ties in waste keep this order)
_MEM_PRIMITIVES = (
    ("URAM_72x4096", 72, 4096),
    ("URAM_36x8192", 36, 8192),
    ("URAM_18x16384", 18, 16384),
    ("URAM_9x32768", 9, 32768),
    ("BRAM18_36x512", 36, 512),
    ("BRAM18_18x1024", 18, 1024),
    ("BRAM18_9x2048", 9, 2048),
    ("LUTRAM", 1, 64),
)


def _thr_cycles(n: FinnNode) -> int:
    return num_vectors(n) * (attr(n, "NumChannels") // attr(n, "PE"))


def thresholding_rtl_memory(n: FinnNode) -> dict[str, int]:
    """Primitive counts FINN's Thresholding_rtl model picks: ``URAM``, ``BRAM18``, ``LUTRAM``.

    Each PE holds, per output bit i, a memory of threshold width and depth
    (NumChannels/PE)·2^i, mapped to the least-waste primitive.
    """
    pe = attr(n, "PE")
    cf = attr(n, "NumChannels") // pe
    obits, wbits = bitwidth(attr(n, "outputDataType")), bitwidth(attr(n, "weightDataType"))
    if attr(n, "uniform_thres"):
        mems = [(obits - x, cf * 2**x) for x in range(1, obits)]
    else:
        mems = [(wbits, cf * 2**x) for x in range(obits)]
    t_bram, t_uram = attr(n, "depth_trigger_bram"), attr(n, "depth_trigger_uram")
    out: dict[str, int] = {}
    for width, depth in mems:
        prims = _MEM_PRIMITIVES
        if t_bram or t_uram:
            if t_bram <= depth < t_uram:
                prims = tuple(p for p in prims if "BRAM" in p[0])
            elif depth >= t_uram:
                prims = tuple(p for p in prims if "URAM" in p[0])
        best = None
        for pname, pw, pd in prims:
            count = math.ceil(width / pw) * math.ceil(depth / pd)
            waste = count * pw * pd - width * depth
            if best is None or waste < best[2]:
                best = (pname.split("_")[0], count, waste)
        out[best[0]] = out.get(best[0], 0) + pe * best[1]
    return out


def _thr_rtl_resources(n: FinnNode, part: str) -> dict[str, Any]:
    mem = thresholding_rtl_memory(n)
    # FINN reads the BRAM count under the key "BRAM", which its model never fills
    return _res(0, mem.get("LUTRAM", 0), mem.get("URAM", 0), 0)


def _lutram_table_resources(n: FinnNode, part: str) -> dict[str, Any]:
    """Thresholding_hls / ChannelwiseOp_hls: comparators plus LUTRAM or BRAM parameter table."""
    p, a = attr(n, "PE"), bitwidth(attr(n, "inputDataType"))
    tmem = attr(n, "NumChannels") // p
    style = attr(n, "ram_style")
    bram = math.ceil(a * p / 16) * math.ceil(tmem / 1024) if style == "block" and tmem > 1 else 0
    lutram = p * a * math.ceil(tmem / 64) if style == "distributed" and tmem > 1 else 0
    return _res(bram, a * p + lutram, 0, 0)


def _thr_hls_counts(n: FinnNode) -> dict[str, int]:
    bits = bitwidth(attr(n, "weightDataType"))
    return {f"param_threshold_{bits}b": attr(n, "NumChannels") * attr(n, "numSteps")}


# --------------------------------------------------------------------- other layers


def _maxpool_cycles(n: FinnNode) -> int:
    (h, w), (k_h, k_w) = attr(n, "ImgDim"), attr(n, "PoolDim")
    if w == 1:
        h, w, k_h, k_w = w, h, k_w, k_h
    if h == 1 and k_h == 1:
        span = (w - k_w) / k_w + 1
        ofm = math.ceil(span) if attr(n, "CeilMode") else math.floor(span)
        return ofm * (attr(n, "NumChannels") // attr(n, "PE")) * (k_w + 1)
    # FINN marks this estimate inaccurate; it uses the width for both dimensions
    return int(w * w * (1 + 1 / (k_w * k_w)))


def _pool_cycles(n: FinnNode) -> int:
    """FINN's Pool: every window element of every channel once, PE channels a cycle."""
    k_prod = math.prod(attr(n, "KernelSize"))
    vecs = math.prod(attr(n, "OutImgDims")) * attr(n, "BatchSize")
    return int(attr(n, "Channels") * k_prod / attr(n, "PE") * vecs)


def _pool_resources(n: FinnNode, part: str) -> dict[str, Any]:
    """hwbed's LUT estimate for Pool_hls (FINN models none): per PE lane a comparator and the
    running maximum's register-and-select (``2 * bits``), plus 300 for the HLS control, as
    FINN's other HLS estimates count."""
    bits = bitwidth(attr(n, "InputDataType"))
    if attr(n, "Function") == "QuantAvgPool":
        bits = max(bits, attr(n, "AccumBits"))  # an adder of the accumulator width instead
    return _res(0, 300 + 2 * attr(n, "PE") * bits, 0, 0)


def _fmpad_cycles(n: FinnNode) -> int:
    (h, w), pad = attr(n, "ImgDim"), attr(n, "Padding")
    ch = attr(n, "NumChannels") // attr(n, "SIMD")
    return ch * num_vectors(n) * (h + pad[0] + pad[2]) * (w + pad[1] + pad[3])


def _dwc_resources(n: FinnNode, part: str) -> dict[str, Any]:
    inw, outw = attr(n, "inWidth"), attr(n, "outWidth")
    mid = math.lcm(inw, outw)
    luts = 0
    if inw != mid:
        luts += abs(math.ceil(math.log(inw / mid, 2))) + mid
    if mid != outw:
        luts += abs(math.ceil(math.log(mid / outw, 2))) + outw
    return _res(0, luts, 0, 0)


def _res(
    bram: int, lut: int, uram: int, dsp: int, bram_eff: float = 1, uram_eff: float = 1
) -> dict[str, Any]:
    return {
        "BRAM_18K": bram,
        "BRAM_efficiency": bram_eff,
        "LUT": lut,
        "URAM": uram,
        "URAM_efficiency": uram_eff,
        "DSP": dsp,
    }


def _no_resources(n: FinnNode, part: str) -> dict[str, Any]:
    """FINN's HWCustomOp defaults for an op without a resource model: nothing."""
    return _res(0, 0, 0, 0)


def _no_counts(n: FinnNode) -> dict[str, int]:
    return {}


def _pe_cycles(n: FinnNode) -> int:
    return num_vectors(n) * (attr(n, "NumChannels") // attr(n, "PE"))


@dataclass(frozen=True)
class Cost:
    """FINN's models of one op type: expected cycles per frame (``get_exp_cycles``), resources
    on a part (``node_res_estimation``) and op and parameter counts."""

    cycles: Callable[[FinnNode], int]
    resources: Callable[[FinnNode, str], dict[str, Any]] = _no_resources
    counts: Callable[[FinnNode], dict[str, int]] = _no_counts


COST: Backend[Cost] = Backend("cost")
"""FINN op type -> its :class:`Cost`; an op type without one is an error naming it."""


def _cost(*op_types: str, **models: Callable) -> None:
    COST.register(*op_types)(Cost(**models))


_cost(
    "MVAU_hls",
    cycles=_mvau_cycles,
    resources=_mvau_resources(_mvau_hls_lut, _mvau_hls_dsp),
    counts=_mvau_counts,
)
_cost(
    "MVAU_rtl",
    cycles=_mvau_cycles,
    resources=_mvau_resources(lambda n: 0, _mvau_rtl_dsp),
    counts=_mvau_counts,
)
_cost(
    "ConvolutionInputGenerator_rtl",
    cycles=_swg_cycles,
    resources=lambda n, part: _res(_swg_bram(n), _swg_lut(n), _swg_uram(n), 0),
)
_cost("Thresholding_rtl", cycles=_thr_cycles, resources=_thr_rtl_resources)
_cost(
    "Thresholding_hls",
    cycles=_thr_cycles,
    resources=_lutram_table_resources,
    counts=_thr_hls_counts,
)
_cost("ChannelwiseOp_hls", cycles=_pe_cycles, resources=_lutram_table_resources)
_cost("StreamingMaxPool_hls", cycles=_maxpool_cycles)
_cost("Pool_hls", cycles=_pool_cycles, resources=_pool_resources)
_cost("LabelSelect_hls", cycles=lambda n: attr(n, "Labels") // attr(n, "PE"))
_cost(
    "StreamingDataWidthConverter",
    "StreamingDataWidthConverter_hls",
    "StreamingDataWidthConverter_rtl",
    cycles=lambda n: 0,
    resources=_dwc_resources,
)
_cost("FMPadding_rtl", "FMPadding_hls", cycles=_fmpad_cycles)
_cost("AddStreams_hls", "DuplicateStreams_hls", "ChannelPad_hls", cycles=_pe_cycles)
_cost(
    "GlobalAccPool_hls",
    cycles=lambda n: _pe_cycles(n) + attr(n, "NumChannels") // attr(n, "PE"),
)
# FINN DownSampler_hls reads every input pixel: ImgDim^2 * NumChannels / SIMD
_cost(
    "DownSampler_hls",
    cycles=lambda n: (
        num_vectors(n) * attr(n, "ImgDim") ** 2 * (attr(n, "NumChannels") // attr(n, "SIMD"))
    ),
)
# FINN StreamingConcat_hls emits one output pixel's channels per SIMD lane
_cost(
    "StreamingConcat_hls",
    cycles=lambda n: num_vectors(n) * sum(attr(n, "ChannelsPerStream")) // attr(n, "SIMD"),
)


# ------------------------------------------------------------------------ per node


def _models(node: FinnNode) -> Cost:
    check_node(node)
    return COST.lookup(node["op_type"], repr(node_name(node)))


def node_cycles(node: FinnNode) -> int:
    """Expected cycles per frame (FINN's ``get_exp_cycles``)."""
    return int(_models(node).cycles(node))


def node_resources(node: FinnNode, part: str) -> dict[str, Any]:
    """FINN's ``node_res_estimation``: BRAM_18K, BRAM_efficiency, LUT, URAM, URAM_efficiency, DSP.

    ``part`` is the FPGA part string; it only selects the DSP block type for MVAU_rtl.
    """
    return _models(node).resources(node, part)


def node_op_and_param_counts(node: FinnNode) -> dict[str, int]:
    """FINN's ``get_op_and_param_counts`` (op_mac_*, param_weight_*, param_threshold_* keys)."""
    return _models(node).counts(node)


def node_resource_alternatives(node: FinnNode, part: str) -> list[dict[str, Any]]:
    """Estimates over resType dsp/lut (MVAU) or ram_style block/distributed/ultra (SWG)."""
    op = node["op_type"]
    if op.startswith("MVAU"):
        return [node_resources({**node, "resType": r}, part) for r in ("dsp", "lut")]
    if op.startswith("ConvolutionInputGenerator"):
        styles = ("block", "distributed", "ultra")
        return [node_resources({**node, "ram_style": s}, part) for s in styles]
    return [node_resources(node, part)]


# ------------------------------------------------------------------------- network


def _named(nodes: Sequence[FinnNode]) -> Sequence[FinnNode]:
    """Return ``nodes`` after checking op types and unique names."""
    names = []
    for n in nodes:
        spec(n)
        if "name" not in n:
            raise ValueError(f"a {n['op_type']} node has no 'name'")
        names.append(n["name"])
    dup = sorted({x for x in names if names.count(x) > 1})
    if dup:
        raise ValueError(f"node names must be unique; repeated: {', '.join(dup)}")
    return nodes


def _aggregate(per_node: dict[str, dict[str, Any]]) -> dict[str, float]:
    total: dict[str, float] = {}
    for values in per_node.values():
        for key, val in values.items():
            if "efficiency" not in key:
                total[key] = total.get(key, 0.0) + float(val)
    return total


def layer_cycles(nodes: Sequence[FinnNode]) -> dict[str, int]:
    """Contents of ``estimate_layer_cycles.json``: ``{node name: cycles}``."""
    return {n["name"]: node_cycles(n) for n in _named(nodes)}


def layer_resources(nodes: Sequence[FinnNode], part: str) -> dict[str, dict[str, Any]]:
    """Contents of ``estimate_layer_resources.json``, with the ``total`` entry."""
    res = {n["name"]: node_resources(n, part) for n in _named(nodes)}
    res["total"] = _aggregate(res)
    return res


def layer_config_alternatives(nodes: Sequence[FinnNode], part: str) -> dict[str, list[dict]]:
    """Contents of ``estimate_layer_config_alternatives.json``."""
    return {n["name"]: node_resource_alternatives(n, part) for n in _named(nodes)}


def op_and_param_counts(nodes: Sequence[FinnNode]) -> dict[str, dict[str, Any]]:
    """Contents of ``op_and_param_counts.json``: per node (``{}`` when none) plus ``total``."""
    res = {n["name"]: node_op_and_param_counts(n) for n in _named(nodes)}
    res["total"] = _aggregate(res)
    return res


def network_performance(nodes: Sequence[FinnNode], clk_ns: float) -> dict[str, Any]:
    """Contents of ``estimate_network_performance.json``.

    Nodes must be in topological order. When nodes carry ONNX-style ``input``/``output``
    tensor-name lists the critical path follows those edges, otherwise the list is a chain.
    Like FINN, the critical path sums cycles along the slowest path with no overlap.
    """
    graph = any("input" in n for n in _named(nodes))
    producer = {t: n["name"] for n in nodes for t in n.get("output", ())}
    latency: dict[str, int] = {}
    max_cycles, max_name, prev = 0, "", None
    for n in nodes:
        name = n["name"]
        cycles = node_cycles(n)
        if cycles > max_cycles:
            max_cycles, max_name = cycles, name
        if graph:
            preds = [producer[t] for t in n.get("input", ()) if t in producer]
            missing = [p for p in preds if p not in latency]
            if missing:
                raise ValueError(f"nodes not in topological order: {name!r} before {missing}")
            base = max((latency[p] for p in preds), default=0)
        else:
            base = latency[prev] if prev else 0
        latency[name] = cycles + base
        prev = name
    critical = max(latency.values(), default=0)
    if max_cycles == 0:
        raise ValueError("network has no node with a non-zero cycle estimate")
    return {
        "critical_path_cycles": critical,
        "max_cycles": max_cycles,
        "max_cycles_node_name": max_name,
        "estimated_throughput_fps": (1e9 / clk_ns) / max_cycles,
        "estimated_latency_ns": critical * clk_ns,
    }


def estimate_reports(nodes: Sequence[FinnNode], part: str, clk_ns: float) -> dict[str, dict]:
    """All FINN estimate reports as ``{file name: contents}``."""
    return {
        "op_and_param_counts.json": op_and_param_counts(nodes),
        "estimate_layer_cycles.json": layer_cycles(nodes),
        "estimate_layer_resources.json": layer_resources(nodes, part),
        "estimate_layer_config_alternatives.json": layer_config_alternatives(nodes, part),
        "estimate_network_performance.json": network_performance(nodes, clk_ns),
    }


def write_estimate_reports(
    nodes: Sequence[FinnNode], report_dir: str | Path, part: str, clk_ns: float
) -> list[Path]:
    """Write :func:`estimate_reports` into ``report_dir`` (FINN's ``<output_dir>/report``)."""
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for fname, content in estimate_reports(nodes, part, clk_ns).items():
        path = out / fname
        path.write_text(json.dumps(content, indent=2))
        paths.append(path)
    return paths


def dma_bound_fps(
    dma_width_bits: int, in_bits_per_frame: int, out_bits_per_frame: int, clk_ns: float
) -> float:
    """Frames per second the input and output IODMAs allow.

    Each IODMA moves one ``dma_width_bits`` word per cycle and a frame occupies whole words,
    so fps = f_clk / max(ceil(in_bits / width), ceil(out_bits / width)). The achievable
    rate is ``min(compute fps, dma_bound_fps)``.
    """
    if dma_width_bits <= 0 or clk_ns <= 0:
        raise ValueError(f"need positive DMA width and clock, got {dma_width_bits}, {clk_ns}")
    if in_bits_per_frame <= 0 or out_bits_per_frame <= 0:
        raise ValueError(
            f"need positive bits per frame, got in={in_bits_per_frame}, out={out_bits_per_frame}"
        )
    words = max(
        math.ceil(in_bits_per_frame / dma_width_bits),
        math.ceil(out_bits_per_frame / dma_width_bits),
    )
    return 1e9 / clk_ns / words
