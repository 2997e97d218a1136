"""The integer graph seen as FINN hardware nodes: one attribute dict per node, FINN's names.

This is the view the estimator, the folding search and the FINN writer share
(``fpga/finn/op_specs.py`` documents the dict format). hwbed's final ``Affine`` maps onto FINN's
``ChannelwiseOp_hls``; ``ChannelPad`` is hwbed's own (option-A shortcuts).
"""

from __future__ import annotations

from typing import Any

from hwbed.ir.graph import OPS, Graph
from hwbed.ir.types import IntType


def finn_nodes(graph: Graph) -> list[dict[str, Any]]:
    """FINN-style node dicts (name, op_type, attributes, input/output tensor names)."""
    nodes = []
    for node in graph.nodes:
        ins = [graph.tensors[t] for t in node.inputs]
        out = graph.tensors[node.outputs[0]]
        in_shape, in_type = ins[0].shape, ins[0].dtype.finn
        vectors = [1, *in_shape[:-1]]
        d: dict[str, Any] = {
            "name": node.name,
            "op_type": OPS[node.op],
            "input": list(node.inputs),
            "output": list(node.outputs),
        }
        a = node.attrs
        if node.op == "MVAU":
            d.update(
                MW=a["MW"],
                MH=a["MH"],
                inputDataType=in_type,
                weightDataType=a.get("weightDataType", "INT32"),
                outputDataType=out.dtype.finn,
                accDataType=a.get("acc_type", "INT32"),
                numInputVectors=vectors,
                binaryXnorMode=int(a.get("binary", False)),
                noActivation=int("thresholds" not in node.params),
            )
        elif node.op == "Thresholding":
            thr = node.params["thresholds"]
            if len(out.shape) == 1 < len(in_shape):
                # thresholds fused with a flatten (TFC/LFC input): FINN thresholds the
                # flattened vector, one channel per pixel (finn-examples TFC: 784, PE 49)
                channels, vectors = out.shape[0], [1]
            else:
                channels = in_shape[-1]
            d.update(
                NumChannels=channels,
                inputDataType=in_type,
                weightDataType=IntType.fitting(int(thr.min()), int(thr.max())).finn,
                outputDataType=out.dtype.finn,
                numSteps=int(thr.shape[1]),
                numInputVectors=vectors,
            )
        elif node.op == "ConvolutionInputGenerator":
            k, s = a["kernel"], a["stride"]
            d.update(
                ConvKernelDim=[k, k],
                IFMChannels=in_shape[-1],
                IFMDim=list(in_shape[:2]),
                OFMDim=list(out.shape[:2]),
                Stride=[s, s],
                inputDataType=in_type,
            )
            if any(u.op == "Pool" for u in graph.consumers(node.outputs[0])):
                d["depthwise"] = 1  # FINN's Pool_hls reads a depthwise window (InferPool)
        elif node.op == "FMPadding":
            p = a["pad"]
            d.update(
                ImgDim=list(in_shape[:2]),
                Padding=[p, p, p, p],
                NumChannels=in_shape[-1],
                inputDataType=in_type,
            )
        elif node.op == "StreamingMaxPool":
            k = a["kernel"]
            d.update(
                ImgDim=list(in_shape[:2]),
                PoolDim=[k, k],
                NumChannels=in_shape[-1],
                dataType=in_type,
            )
        elif node.op == "Pool":
            k = a["kernel"]
            d.update(
                Channels=a["channels"],
                KernelSize=[k, k],
                Function=a["Function"],
                OutImgDims=list(out.shape[:2]),
                InputDataType=in_type,
                OutputDataType=out.dtype.finn,
            )
        elif node.op in ("AddStreams", "GlobalAccPool"):
            d.update(
                NumChannels=in_shape[-1], inputDataType=in_type, numInputVectors=[1, *in_shape[:-1]]
            )
        elif node.op == "ChannelPad":
            d.update(NumChannels=out.shape[-1], inputDataType=in_type, numInputVectors=vectors)
        elif node.op == "DownSampler":
            d.update(
                ImgDim=in_shape[0],
                NumChannels=in_shape[-1],
                Stride=a["stride"],
                inputDataType=in_type,
            )
        elif node.op == "StreamingConcat":
            d.update(
                ChannelsPerStream=[t.shape[-1] for t in ins],
                inputDataType=in_type,
                numInputVectors=vectors,
            )
        elif node.op == "Affine":
            d.update(
                op_type="ChannelwiseOp_hls",
                NumChannels=in_shape[-1],
                inputDataType=in_type,
                outputDataType="FLOAT32",
                Func="affine",
                numInputVectors=vectors,
            )
        elif node.op == "LabelSelect":
            d.update(Labels=a["Labels"], K=a["k"], inputDataType=in_type)
        nodes.append(d)
    return nodes
