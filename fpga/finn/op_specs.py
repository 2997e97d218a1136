"""FINN-style hardware node dicts: data types, per-op attribute defaults and folding rules.

A node is a plain dict holding FINN's own attribute names plus ``name`` and ``op_type``
(for example ``{"name": "MVAU_hls_0", "op_type": "MVAU_hls", "MW": 784, ...}``). Attributes a
node leaves out take FINN's ``get_nodeattr_types`` defaults from :data:`OP_SPECS`; parallelism
attributes (``PE``, ``SIMD``) default to 1, the value FINN's ``convert_to_hw`` step sets.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

FinnNode = Mapping[str, Any]

_INT_RE = re.compile(r"(U?)INT(\d+)$")
_FIXED_RE = re.compile(r"U?FIXED<(\d+),\s*-?\d+>$")
_FLOATS = {"FLOAT32": 32, "FLOAT16": 16, "BFLOAT16": 16}


class FoldingError(ValueError):
    """A node's folding or attributes break one of FINN's rules."""


def bitwidth(dtype: str) -> int:
    """Bit width of a qonnx DataType name (BINARY, BIPOLAR, TERNARY, INTn, UINTn, FIXED<w,i>)."""
    if dtype in ("BINARY", "BIPOLAR"):
        return 1
    if dtype == "TERNARY":
        return 2
    if dtype in _FLOATS:
        return _FLOATS[dtype]
    m = _INT_RE.match(dtype) or _FIXED_RE.match(dtype)
    if m is None:
        raise ValueError(f"unknown FINN DataType {dtype!r}")
    return int(m.groups()[-1] if m.re is _INT_RE else m.group(1))


def is_signed(dtype: str) -> bool:
    """Whether a qonnx DataType is signed (BIPOLAR and TERNARY are)."""
    bitwidth(dtype)
    return not (dtype == "BINARY" or dtype.startswith("U"))


@dataclass(frozen=True)
class OpSpec:
    """What hwbed knows about one FINN op type.

    ``required`` are attributes the cost model reads and that have no FINN default;
    ``defaults`` are FINN's defaults; ``fold`` maps each parallelism attribute to the
    attribute it must divide; ``config`` lists the attributes FINN extracts into
    ``auto_folding_config.json`` for this op; ``enums`` lists allowed string values.
    """

    required: tuple[str, ...]
    defaults: dict[str, Any] = field(default_factory=dict)
    fold: dict[str, str] = field(default_factory=dict)
    config: tuple[str, ...] = ()
    enums: dict[str, tuple[str, ...]] = field(default_factory=dict)


_RAM = ("auto", "block", "distributed", "ultra")
_MVAU = OpSpec(
    required=("MW", "MH", "inputDataType", "weightDataType", "outputDataType"),
    defaults={
        "PE": 1,
        "SIMD": 1,
        "resType": "auto",
        "accDataType": "INT32",
        "binaryXnorMode": 0,
        "noActivation": 0,
        "numInputVectors": [1],
        "mem_mode": "internal_decoupled",
        "ram_style": "auto",
        "ram_style_thresholds": "auto",
        "runtime_writeable_weights": 0,
    },
    fold={"SIMD": "MW", "PE": "MH"},
    config=("PE", "SIMD", "ram_style", "resType", "mem_mode", "runtime_writeable_weights"),
    enums={
        "resType": ("auto", "lut", "dsp"),
        "ram_style": _RAM,
        "mem_mode": ("internal_embedded", "internal_decoupled", "external"),
        "ram_style_thresholds": ("auto", "block", "distributed"),
    },
)
_SWG = OpSpec(
    required=("ConvKernelDim", "IFMChannels", "IFMDim", "OFMDim", "inputDataType"),
    defaults={
        "SIMD": 1,
        "Stride": [1, 1],
        "Dilation": [1, 1],
        "depthwise": 0,
        "ram_style": "distributed",
        "parallel_window": 0,
        "M": 1,
    },
    fold={"SIMD": "IFMChannels"},
    config=("SIMD", "parallel_window", "ram_style"),
    enums={"ram_style": _RAM},
)
_THR_BASE = {"PE": 1, "numSteps": 1, "numInputVectors": [1], "runtime_writeable_weights": 0}
_THR_REQ = ("NumChannels", "inputDataType", "weightDataType", "outputDataType")
_PE_OP = OpSpec(
    required=("NumChannels", "inputDataType"),
    defaults={"PE": 1, "numInputVectors": [1]},
    fold={"PE": "NumChannels"},
    config=("PE",),
)
_FMPAD = OpSpec(
    required=("ImgDim", "Padding", "NumChannels", "inputDataType"),
    defaults={"SIMD": 1, "numInputVectors": 1},
    fold={"SIMD": "NumChannels"},
    config=("SIMD",),
)
_DWC = OpSpec(required=("shape", "inWidth", "outWidth", "dataType"))

OP_SPECS: dict[str, OpSpec] = {
    "MVAU_hls": _MVAU,
    "MVAU_rtl": _MVAU,
    "ConvolutionInputGenerator_rtl": _SWG,
    "Thresholding_rtl": OpSpec(
        required=_THR_REQ,
        defaults={
            **_THR_BASE,
            "depth_trigger_uram": 0,
            "depth_trigger_bram": 0,
            "uniform_thres": 0,
        },
        fold={"PE": "NumChannels"},
        config=("PE", "runtime_writeable_weights", "depth_trigger_uram", "depth_trigger_bram"),
    ),
    "Thresholding_hls": OpSpec(
        required=_THR_REQ,
        defaults={**_THR_BASE, "mem_mode": "internal_decoupled", "ram_style": "distributed"},
        fold={"PE": "NumChannels"},
        config=("PE", "ram_style", "mem_mode", "runtime_writeable_weights"),
        enums={
            "ram_style": ("distributed", "block"),
            "mem_mode": ("internal_embedded", "internal_decoupled"),
        },
    ),
    "StreamingMaxPool_hls": OpSpec(
        required=("ImgDim", "PoolDim", "NumChannels", "dataType"),
        defaults={"PE": 1, "CeilMode": 0},
        fold={"PE": "NumChannels"},
        config=("PE",),
    ),
    "Pool_hls": OpSpec(
        required=("Channels", "KernelSize", "OutImgDims", "InputDataType"),
        defaults={
            "PE": 1,
            "Function": "MaxPool",
            "OutputDataType": "",
            "AccumBits": 0,
            "Size": 1,
            "BatchSize": 1,
        },
        fold={"PE": "Channels"},
        config=("PE",),
        enums={"Function": ("MaxPool", "QuantAvgPool")},
    ),
    "LabelSelect_hls": OpSpec(
        required=("Labels", "K", "inputDataType"),
        defaults={"PE": 1, "numInputVectors": [1]},
        fold={"PE": "Labels"},
        config=("PE",),
    ),
    "StreamingDataWidthConverter": _DWC,
    "StreamingDataWidthConverter_hls": _DWC,
    "StreamingDataWidthConverter_rtl": _DWC,
    "FMPadding_rtl": _FMPAD,
    "FMPadding_hls": _FMPAD,
    "AddStreams_hls": _PE_OP,
    "DuplicateStreams_hls": _PE_OP,
    "GlobalAccPool_hls": _PE_OP,
    "DownSampler_hls": OpSpec(
        required=("ImgDim", "NumChannels", "Stride", "inputDataType"),
        defaults={"SIMD": 1, "numInputVectors": 1},
        fold={"SIMD": "NumChannels"},
        config=("SIMD",),
    ),
    "StreamingConcat_hls": OpSpec(
        required=("ChannelsPerStream", "inputDataType"),
        defaults={"SIMD": 1, "numInputVectors": [1]},
        config=("SIMD",),
    ),
    "ChannelPad_hls": _PE_OP,
    "ChannelwiseOp_hls": OpSpec(
        required=("NumChannels", "inputDataType"),
        defaults={"PE": 1, "numInputVectors": [1], "ram_style": "distributed", "Func": "cmp_le"},
        fold={"PE": "NumChannels"},
        config=("PE", "ram_style"),
        enums={"ram_style": ("distributed", "block")},
    ),
}


def node_name(node: FinnNode) -> str:
    """The node's ``name`` (or ``?`` when missing, for error messages)."""
    return str(node.get("name", "?"))


def spec(node: FinnNode) -> OpSpec:
    """The :class:`OpSpec` of a node; unknown op types raise ValueError naming the known ones."""
    op = node.get("op_type")
    if op not in OP_SPECS:
        raise ValueError(
            f"node {node_name(node)!r}: unsupported op_type {op!r}; supported: "
            + ", ".join(OP_SPECS)
        )
    return OP_SPECS[op]


def attr(node: FinnNode, key: str) -> Any:
    """A node attribute, falling back to FINN's default; a missing required one raises."""
    if key in node:
        return node[key]
    defaults = spec(node).defaults
    if key in defaults:
        return defaults[key]
    raise ValueError(
        f"node {node_name(node)!r} ({node.get('op_type')}) lacks required attribute {key!r}"
    )


def num_vectors(node: FinnNode) -> int:
    """Product of ``numInputVectors`` (FINN stores a list; FMPadding an int)."""
    vecs = attr(node, "numInputVectors")
    return math.prod(vecs) if isinstance(vecs, (list, tuple)) else int(vecs)


def divisors(n: int) -> Iterator[int]:
    """Divisors of ``n`` in increasing order, like FINN's SetFolding helper."""
    return (d for d in range(1, n + 1) if n % d == 0)


def check_node(node: FinnNode, mvau_wwidth_max: int | None = None) -> None:
    """Raise :class:`FoldingError` if a node's folding breaks FINN's constraints.

    Checks positive parallelism dividing its bound (MW % SIMD, MH % PE, NumChannels % PE,
    IFMChannels % SIMD, Labels % PE), enum values, SWG ``parallel_window`` needing
    SIMD == IFMChannels, and, when ``mvau_wwidth_max`` is given, SIMD x weight bits <= limit.
    """
    sp = spec(node)
    name = node_name(node)
    for key, allowed in sp.enums.items():
        if attr(node, key) not in allowed:
            raise FoldingError(
                f"node {name!r}: {key}={attr(node, key)!r} not one of {', '.join(allowed)}"
            )
    for par, bound in sp.fold.items():
        p, b = attr(node, par), attr(node, bound)
        if not isinstance(p, int) or p < 1:
            raise FoldingError(f"node {name!r}: {par}={p!r} must be a positive integer")
        if b % p:
            raise FoldingError(f"node {name!r}: {bound}={b} is not divisible by {par}={p}")
    if sp is _SWG and attr(node, "parallel_window"):
        k_h, k_w = attr(node, "ConvKernelDim")
        ch, simd = attr(node, "IFMChannels"), attr(node, "SIMD")
        if not attr(node, "depthwise") and (k_h, k_w) != (1, 1) and simd != ch:
            raise FoldingError(
                f"node {name!r}: parallel_window=1 needs SIMD == IFMChannels, "
                f"got SIMD={simd}, IFMChannels={ch}"
            )
    if sp is _MVAU and mvau_wwidth_max is not None:
        w = bitwidth(attr(node, "weightDataType"))
        simd = attr(node, "SIMD")
        if simd * w > mvau_wwidth_max:
            raise FoldingError(
                f"node {name!r}: SIMD={simd} x weight bits {w} = {simd * w} exceeds "
                f"mvau_wwidth_max={mvau_wwidth_max}"
            )
