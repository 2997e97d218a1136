"""Node-dict fixtures mimicking FINN's cnv-w*a* and tfc-w*a* dataflow graphs (bnn-pynq)."""

from __future__ import annotations

import json

import pytest


def _dtypes(wbits: int, abits: int) -> tuple[str, str]:
    """(weight, activation) DataType names after FINN's bipolar-to-binary conversion."""
    if wbits == 1 and abits == 1:
        return "BINARY", "BINARY"
    return f"INT{wbits}", f"UINT{abits}" if abits > 1 else "BINARY"


def _mvau(
    i: int,
    mw: int,
    mh: int,
    vecs: list[int],
    idt: str,
    wdt: str,
    odt: str,
    acc: str,
    last: bool = False,
) -> dict:
    xnor = int(idt == wdt == "BINARY")
    return {
        "name": f"MVAU_hls_{i}",
        "op_type": "MVAU_hls",
        "MW": mw,
        "MH": mh,
        "SIMD": 1,
        "PE": 1,
        "numInputVectors": vecs,
        "inputDataType": idt,
        "weightDataType": wdt,
        "outputDataType": odt,
        "accDataType": acc,
        "noActivation": int(last),
        "binaryXnorMode": xnor,
        "mem_mode": "internal_decoupled",
        "ram_style": "auto",
        "resType": "auto",
    }


def tfc(wbits: int = 1, abits: int = 1) -> list[dict]:
    """TFC: 784 -> 64 -> 64 -> 64 -> 10 on 28x28 UINT8 inputs."""
    wdt, adt = _dtypes(wbits, abits)
    nodes = [
        {
            "name": "Thresholding_rtl_0",
            "op_type": "Thresholding_rtl",
            "NumChannels": 784,
            "PE": 1,
            "numSteps": 2**abits - 1,
            "numInputVectors": [1],
            "inputDataType": "UINT8",
            "weightDataType": "UINT8",
            "outputDataType": adt,
        }
    ]
    dims = [784, 64, 64, 64, 10]
    for i, (mw, mh) in enumerate(zip(dims, dims[1:], strict=False)):
        last = i == 3
        nodes.append(_mvau(i, mw, mh, [1], adt, wdt, "UINT10" if last else adt, "UINT10", last))
    nodes.append(
        {
            "name": "LabelSelect_hls_0",
            "op_type": "LabelSelect_hls",
            "Labels": 10,
            "PE": 1,
            "K": 1,
            "inputDataType": "UINT10",
            "outputDataType": "UINT8",
        }
    )
    return nodes


def cnv(wbits: int = 1, abits: int = 1) -> list[dict]:
    """CNV: 3x3 convs 3->64->64 (pool) ->128->128 (pool) ->256->256, FCs 256->512->512->10."""
    wdt, adt = _dtypes(wbits, abits)
    nodes = [
        {
            "name": "Thresholding_rtl_0",
            "op_type": "Thresholding_rtl",
            "NumChannels": 3,
            "PE": 1,
            "numSteps": 255,
            "numInputVectors": [1, 32, 32],
            "inputDataType": "UINT8",
            "weightDataType": "UINT8",
            "outputDataType": "INT8",
        }
    ]
    convs = [
        (3, 64, 32, False),
        (64, 64, 30, True),
        (64, 128, 14, False),
        (128, 128, 12, True),
        (128, 256, 5, False),
        (256, 256, 3, False),
    ]
    idt, pools = "INT8", 0
    for i, (cin, cout, dim, pool) in enumerate(convs):
        nodes.append(
            {
                "name": f"ConvolutionInputGenerator_rtl_{i}",
                "op_type": "ConvolutionInputGenerator_rtl",
                "ConvKernelDim": [3, 3],
                "IFMChannels": cin,
                "IFMDim": [dim, dim],
                "OFMDim": [dim - 2, dim - 2],
                "SIMD": 1,
                "Stride": [1, 1],
                "Dilation": [1, 1],
                "inputDataType": idt,
                "outputDataType": idt,
                "depthwise": 0,
                "ram_style": "distributed",
            }
        )
        w = "INT2" if i == 0 and wdt == "BINARY" else wdt
        nodes.append(_mvau(i, cin * 9, cout, [1, dim - 2, dim - 2], idt, w, adt, "INT16"))
        idt = adt
        if pool:
            nodes.append(
                {
                    "name": f"StreamingMaxPool_hls_{pools}",
                    "op_type": "StreamingMaxPool_hls",
                    "ImgDim": [dim - 2, dim - 2],
                    "PoolDim": [2, 2],
                    "NumChannels": cout,
                    "PE": 1,
                    "dataType": adt,
                }
            )
            pools += 1
    dims = [256, 512, 512, 10]
    for j, (mw, mh) in enumerate(zip(dims, dims[1:], strict=False)):
        last = j == 2
        nodes.append(_mvau(6 + j, mw, mh, [1], adt, wdt, "UINT10" if last else adt, "UINT10", last))
    nodes.append(
        {
            "name": "LabelSelect_hls_0",
            "op_type": "LabelSelect_hls",
            "Labels": 10,
            "PE": 1,
            "K": 1,
            "inputDataType": "UINT10",
            "outputDataType": "UINT8",
        }
    )
    return nodes


NETWORKS = {
    "cnv-w1a1": lambda: cnv(1, 1),
    "cnv-w2a2": lambda: cnv(2, 2),
    "tfc-w1a1": lambda: tfc(1, 1),
    "tfc-w2a2": lambda: tfc(2, 2),
}


@pytest.fixture
def finn_example(finn_examples_dir):
    """Factory: ``finn_example("tfc-w1a1")`` -> (node dicts, finn-examples folding config)."""

    def make(name: str) -> tuple[list[dict], dict]:
        config = json.loads((finn_examples_dir / f"{name}_folding_config.json").read_text())
        return NETWORKS[name](), config

    return make
