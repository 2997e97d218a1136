"""Front-end of the lowering: read a Brevitas twin module by module into integer nodes.

Each conv/linear becomes an MVAU over exact integer codes (weights from ``quant_weight()``,
activations from the quantizer in front of it). The float epilogue behind each accumulator
(alpha, BN, shifts, the next quantizer) becomes a Thresholding node whose table is built by
enumeration with the twin's own modules (:mod:`hwbed.fpga.thresholds`). Later passes absorb
thresholds into MVAUs and prove accumulator widths.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear
from brevitas_examples.bnn_pynq.models.CNV import CNV
from brevitas_examples.bnn_pynq.models.FC import FC
from brevitas_examples.bnn_pynq.models.tensor_norm import TensorNorm
from torch import nn

from hwbed.models.layers import AbcConv2d, XnorConv2d
from hwbed.models.resnet import QuantBlock, ResNet

from .builder import GraphBuilder
from .graph import BIPOLAR, TERNARY, Graph, GraphError, IntType
from .thresholds import quant_levels, thresholds_for

Epilogue = Callable[[torch.Tensor], torch.Tensor]
"""Maps float conv/linear outputs shaped [1, C, D, 1] (or [1, C, D]) to integer codes."""


def quant_out(module: nn.Module, value: torch.Tensor):
    """The QuantTensor a Brevitas activation module returns for ``value``."""
    old = module.return_quant_tensor
    module.return_quant_tensor = True
    try:
        return module(value)
    finally:
        module.return_quant_tensor = old


def codes(module: nn.Module, value: torch.Tensor) -> torch.Tensor:
    """Integer codes of a Brevitas activation quantizer applied to ``value``.

    value / scale is exact for the constant and power-of-two scales used here; Brevitas'
    own ``int()`` is not used because its validity check rejects all-equal binary tensors.
    """
    qt = quant_out(module, value)
    return torch.round(qt.value / qt.scale + qt.zero_point)


def out_type(module: nn.Module) -> tuple[IntType, list[int], float]:
    """(integer type, output codes, scale) of an activation quantizer."""
    qt = quant_out(module, torch.zeros(1, 1, 1, 1))
    bits, signed = int(qt.bit_width), bool(qt.signed)
    scale = float(qt.scale.detach().reshape(-1)[0])
    if bits == 1 and signed:
        return BIPOLAR, [-1, 1], scale
    levels = quant_levels(bits, signed, False)
    return IntType("int" if signed else "uint", bits), levels, scale


def weight_codes(layer: nn.Module) -> tuple[np.ndarray, torch.Tensor]:
    """(int64 codes [cout, ...], float scale broadcastable to the output channels)."""
    qw = layer.quant_weight()
    return qw.int().detach().to(torch.int64).numpy(), qw.scale.detach().reshape(-1)


def acc_bound(weights: np.ndarray, dtype: IntType) -> int:
    """max |w . x| over inputs of ``dtype``: the accumulator's proven magnitude bound."""
    mag = max(abs(dtype.min), abs(dtype.max))
    return int(np.abs(weights).sum(axis=1).max() * mag)


class Lowering:
    """State of one front-end run: the builder and a counter of epilogues for messages."""

    def __init__(self, shape_hwc: tuple[int, int, int]):
        self.b = GraphBuilder(shape_hwc, IntType("uint", 8))

    # -- building blocks ---------------------------------------------------------------------
    def thresholds(
        self,
        x: str,
        channels: int,
        bound: int,
        fn: Epilogue,
        levels_out: list[int],
        dtype: IntType,
        where: str,
        label: str = "act",
    ) -> tuple[str, np.ndarray]:
        """Append Thresholding(x) reproducing ``fn``; return (tensor, flip mask)."""
        thr, flip = thresholds_for(fn, bound, channels, levels_out, where)
        out = self.b.add(
            "Thresholding",
            [x],
            self.b.shape(x),
            dtype,
            attrs={
                "out_bias": levels_out[0],
                "out_scale": levels_out[1] - levels_out[0],
                "bound": bound,
            },
            params={"thresholds": thr},
            label=label,
        )
        return out, flip

    def mvau(self, x: str, weights: np.ndarray, label: str, extra: dict | None = None) -> str:
        """Append an MVAU without activation: acc = x . W^T over the last axis."""
        in_type = self.b.dtype(x)
        bound = acc_bound(weights, in_type)
        attrs = {
            "MW": int(weights.shape[1]),
            "MH": int(weights.shape[0]),
            "binary": bool(
                in_type in (BIPOLAR, TERNARY)
                and np.abs(weights).max() == 1
                and (weights != 0).all()
            ),
            **(extra or {}),
        }
        shape = (*self.b.shape(x)[:-1], weights.shape[0])
        return self.b.add(
            "MVAU",
            [x],
            shape,
            IntType.fitting(-bound, bound),
            attrs,
            {"weights": weights.astype(np.int64)},
            label,
        )

    def epilogue_mvau(
        self,
        x: str,
        weights: np.ndarray,
        fn: Epilogue,
        out_module: nn.Module | None,
        where: str,
        levels: tuple[IntType, list[int]] | None = None,
    ) -> str:
        """MVAU then Thresholding with ``fn``; negative-slope channels get negated weights."""
        acc = self.mvau(x, weights, where)
        dtype, lv = levels if levels is not None else out_type(out_module)[:2]
        bound = acc_bound(weights, self.b.dtype(x))
        out, flip = self.thresholds(acc, weights.shape[0], bound, fn, lv, dtype, where)
        if flip.any():
            node = self.b.nodes[-2]
            node.params["weights"] = np.where(flip[:, None], -weights, weights).astype(np.int64)
        return out

    def conv_input(self, x: str, k: int, stride: int, pad: int) -> str:
        """FMPadding (zeros) and sliding window so that an MVAU sees [OH, OW, k*k*C]."""
        h, w, c = self.b.shape(x)
        if pad:
            dtype = self.b.dtype(x)
            if dtype == BIPOLAR:
                dtype = TERNARY  # zero padding of +/-1 values: border taps are 0
            h, w = h + 2 * pad, w + 2 * pad
            x = self.b.add(
                "FMPadding", [x], (h, w, c), dtype, {"pad": pad, "pad_value": 0}, label="pad"
            )
        if k == 1 and stride == 1:
            return x
        oh, ow = (h - k) // stride + 1, (w - k) // stride + 1
        if k == 1:
            return self.b.add("DownSampler", [x], (oh, ow, c), self.b.dtype(x), {"stride": stride})
        return self.b.add(
            "ConvolutionInputGenerator",
            [x],
            (oh, ow, k * k * c),
            self.b.dtype(x),
            {"kernel": k, "stride": stride, "IFMDim": [h, w], "OFMDim": [oh, ow], "IFMChannels": c},
            label="win",
        )

    def affine(self, x: str, ops: list[tuple[str, torch.Tensor]]) -> str:
        params = {
            f"p{i}": v.detach().to(torch.float32).reshape(-1).numpy()
            for i, (_, v) in enumerate(ops)
        }
        return self.b.add(
            "Affine",
            [x],
            self.b.shape(x),
            IntType("float", 32),
            {"ops": [[op, f"p{i}"] for i, (op, _) in enumerate(ops)]},
            params,
            "logits",
        )

    def label_select(self, logits: str) -> str:
        classes = self.b.shape(logits)[-1]
        return self.b.add(
            "LabelSelect",
            [logits],
            (1,),
            IntType.fitting(0, classes - 1),
            {"k": 1, "Labels": classes},
            label="label",
        )


def _flat_hwc(w: np.ndarray) -> np.ndarray:
    """[cout, cin, kh, kw] -> [cout, kh*kw*cin] in the sliding window's (kh, kw, c) order."""
    return w.transpose(0, 2, 3, 1).reshape(w.shape[0], -1)


def _bn4(bn: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """Apply a BatchNorm2d to [C, D] values laid out as [1, C, D, 1]."""
    return lambda v: bn(v.reshape(1, v.shape[0], -1, 1))


def _flat(codes_: torch.Tensor, channels: int) -> torch.Tensor:
    return codes_.reshape(channels, -1)


# -- ResNet ----------------------------------------------------------------------------------
def lower_resnet(model: ResNet, shape_chw: tuple[int, int, int]) -> Graph:
    """Quantized CIFAR ResNet (xnor, abc, wXaY) -> integer graph."""
    spec = model.spec
    if not spec.quantized:
        raise GraphError(
            f"{spec.name}: only quantized networks lower to an integer graph; "
            "float variants run as the torch twin or through onnxruntime"
        )
    if model.pool is not None:
        raise GraphError(
            f"{spec.name}: the ImageNet stem (7x7/2 conv, 3x3/2 max pool with "
            "padding) is not supported by the lowering yet"
        )
    c, h, w = shape_chw
    low = Lowering((h, w, c))
    x = low.b.input
    # stem: uint8 pixels (PixelQuant(255 x) is exact) -> 8-bit conv -> BN -> int8 stream
    wq, ws = weight_codes(model.stem_conv)
    k = model.stem_conv.kernel_size[0]
    win = low.conv_input(x, k, model.stem_conv.stride[0], model.stem_conv.padding[0])

    def stem_fn(d: torch.Tensor) -> torch.Tensor:
        return _flat(codes(model.stem_quant, _bn4(model.stem_bn)(d * ws[:, None])), d.shape[0])

    x = low.epilogue_mvau(win, _flat_hwc(wq), stem_fn, model.stem_quant, "stem conv")
    stream = model.stem_quant
    for i, block in enumerate(model.blocks):
        x, stream = _lower_block(low, block, x, stream, f"block {i}")
    # head: global sum pool -> 8-bit FC -> float affine (scale and bias) -> label
    hh, ww, cc = low.b.shape(x)
    positions = hh * ww
    if positions & (positions - 1):
        raise GraphError(
            f"{spec.name}: global average over {hh}x{ww} is not a power of two, "
            "so the twin's mean is not an exact integer sum; not lowered"
        )
    pooled = low.b.add(
        "GlobalAccPool",
        [x],
        (cc,),
        IntType.fitting(-128 * positions, 127 * positions),
        {"positions": positions},
        label="pool",
    )
    fq, fs = weight_codes(model.fc)
    s_stream = out_type(stream)[2]
    acc = low.mvau(pooled, fq, "fc")
    scale = torch.tensor([s_stream * float(fs[0]) / positions], dtype=torch.float32)
    logits = low.affine(acc, [("mul", scale), ("add", model.fc.bias)])
    low.label_select(logits)
    return low.b.finish(logits, {"model": spec.name, "input_chw": list(shape_chw)})


def _act_thresholds(low: Lowering, x: str, act: nn.Module, scale_in: float, where: str) -> str:
    """Thresholding of an int stream by an activation module (sign or QuantReLU)."""
    dtype, levels, _ = out_type(act)
    src = low.b.dtype(x)
    bound = max(abs(src.min), abs(src.max))
    channels = low.b.shape(x)[-1]
    fn = lambda d: _flat(codes(act, (d * scale_in).reshape(1, channels, -1, 1)), channels)  # noqa: E731
    out, _ = low.thresholds(x, channels, bound, fn, levels, dtype, where, "act")
    return out


def _lower_block(low: Lowering, block: QuantBlock, x: str, stream: QuantIdentity, where: str):
    s_x = out_type(stream)[2]
    h = x
    units = list(zip(block.acts, block.convs, block.bns, strict=True))
    for u, (act, conv, bn) in enumerate(units):
        last = u == len(units) - 1
        nxt = None if last else units[u + 1]
        if isinstance(conv, AbcConv2d):
            h = _lower_abc(
                low, conv, h, bn, nxt, block, s_x if u == 0 else None, f"{where} conv{u}"
            )
            continue
        if u == 0:  # activation quantizer on the int8 stream
            h = _act_thresholds(low, h, act, s_x, f"{where} act0")
        inner = conv.conv if isinstance(conv, XnorConv2d) else conv
        wq, ws = weight_codes(inner)
        k, stride, pad = inner.kernel_size[0], inner.stride[0], inner.padding[0]
        a_scale = 1.0 if isinstance(conv, XnorConv2d) else out_type(act)[2]
        alpha = conv.alpha().detach() if isinstance(conv, XnorConv2d) else None
        post = block.h_quant if last else nxt[0]
        fn = _conv_epilogue(bn, post, ws * a_scale, alpha)
        win = low.conv_input(h, k, stride, pad)
        h = low.epilogue_mvau(win, _flat_hwc(wq), fn, post, f"{where} conv{u}")
    return _residual(low, block, x, h, s_x, where), block.out_quant


def _conv_epilogue(bn, post, acc_scale: torch.Tensor, alpha: torch.Tensor | None) -> Epilogue:
    def fn(d: torch.Tensor) -> torch.Tensor:
        v = d * acc_scale.reshape(-1, 1) if acc_scale.numel() > 1 else d * float(acc_scale)
        if alpha is not None:
            v = (v.reshape(1, d.shape[0], -1, 1) * alpha.view(1, -1, 1, 1)).reshape(d.shape)
        return _flat(codes(post, _bn4(bn)(v)), d.shape[0])

    return fn


def _lower_abc(low: Lowering, conv: AbcConv2d, h: str, bn, nxt, block, s_in, where) -> str:
    """ABC conv: N sign bases of its input, one integer MVAU with sum_m k_mn B_m weights."""
    if s_in is not None:  # bases of the int8 stream: thresholds on the stream codes
        src = low.b.dtype(h)
        bound = max(abs(src.min), abs(src.max))
        channels = low.b.shape(h)[-1]
        bases = []
        for n in range(conv.n):

            def fn(d: torch.Tensor, n: int = n) -> torch.Tensor:
                v = d.reshape(1, channels, -1, 1) * s_in + conv.shift[n]
                return _flat(codes(conv.sign, v), channels)

            out, _ = low.thresholds(
                h, channels, bound, fn, [-1, 1], BIPOLAR, f"{where} base{n}", "base"
            )
            bases.append(out)
    else:  # bases were emitted by the previous conv's epilogue
        bases = h
    h = _concat(low, bases)
    k_mn, frac = conv.coefficients()
    k_mn = k_mn.detach().to(torch.int64).numpy()
    b_m = (
        conv.sign(conv.weight_bases().detach()).detach().to(torch.int64).numpy()
    )  # [M, co, ci, k, k]
    weights = np.einsum("mn,mocij->oijnc", k_mn, b_m).reshape(b_m.shape[1], -1)
    win = low.conv_input(h, conv.weight.shape[-1], conv.stride, conv.padding)
    scale = 2.0**-frac
    extra = {"abc": [conv.m, conv.n], "frac": frac}
    if nxt is None:  # last conv of the block: requantize to the stream
        fn = lambda d: _flat(codes(block.h_quant, _bn4(bn)(d * scale)), d.shape[0])  # noqa: E731
        out = low.epilogue_mvau(win, weights, fn, block.h_quant, where)
        low.b.nodes[-2].attrs.update(extra)
        low.b.nodes[-2].params.update({"bases": b_m.astype(np.int8), "coeffs": k_mn})
        return out
    acc = low.mvau(win, weights, where, extra)
    low.b.nodes[-1].params.update({"bases": b_m.astype(np.int8), "coeffs": k_mn})
    nconv = nxt[1]
    bound = acc_bound(weights, low.b.dtype(win))
    outs = []
    for n in range(nconv.n):

        def fn(d: torch.Tensor, n: int = n) -> torch.Tensor:
            return _flat(codes(nconv.sign, _bn4(bn)(d * scale) + nconv.shift[n]), d.shape[0])

        out, flip = low.thresholds(
            acc, weights.shape[0], bound, fn, [-1, 1], BIPOLAR, f"{where} -> base{n}", "base"
        )
        if flip.any():
            raise GraphError(
                f"{where}: a BN channel with negative scale feeds ABC bases; "
                "shared accumulators cannot be flipped per base"
            )
        outs.append(out)
    return outs


def _concat(low: Lowering, parts) -> str:
    if isinstance(parts, str):
        return parts
    if len(parts) == 1:
        return parts[0]
    hh, ww, _ = low.b.shape(parts[0])
    channels = sum(low.b.shape(p)[-1] for p in parts)
    return low.b.add("StreamingConcat", parts, (hh, ww, channels), BIPOLAR, label="bases")


def _residual(low: Lowering, block: QuantBlock, x: str, h: str, s_x: float, where: str) -> str:
    sc = x
    if block.shortcut is not None:
        raise GraphError(f"{where}: projection shortcuts are not lowered yet")
    hh, ww, cout = low.b.shape(h)
    if block.stride != 1:
        sc = low.b.add(
            "DownSampler",
            [sc],
            (hh, ww, low.b.shape(sc)[-1]),
            low.b.dtype(sc),
            {"stride": block.stride},
            label="down",
        )
    extra = cout - low.b.shape(sc)[-1]
    if extra:
        sc = low.b.add(
            "ChannelPad",
            [sc],
            (hh, ww, cout),
            low.b.dtype(sc),
            {"before": extra // 2, "after": extra - extra // 2},
            label="cpad",
        )
    t = low.b.dtype(h)
    total = low.b.add(
        "AddStreams", [h, sc], (hh, ww, cout), IntType.fitting(2 * t.min, 2 * t.max), label="add"
    )
    dtype, levels, _ = out_type(block.out_quant)
    fn = lambda d: _flat(codes(block.out_quant, (d * s_x).reshape(1, cout, -1, 1)), cout)  # noqa: E731
    out, _ = low.thresholds(
        total, cout, 2 * max(abs(t.min), t.max), fn, levels, dtype, f"{where} add", "stream"
    )
    return out


# -- BNN-PYNQ --------------------------------------------------------------------------------
def lower_bnn_pynq(model: nn.Module, shape_chw: tuple[int, int, int], name: str) -> Graph:
    """CNV / TFC / SFC / LFC (brevitas_examples) -> integer graph."""
    c, h, w = shape_chw
    low = Lowering((h, w, c))
    if isinstance(model, CNV):
        layers = [*model.conv_features, *model.linear_features]
    elif isinstance(model, FC):
        layers = list(model.features)
    else:
        raise GraphError(f"{name}: not a BNN-PYNQ network")
    layers = [m for m in layers if not isinstance(m, nn.Dropout)]
    in_quant = layers[0]
    if not isinstance(in_quant, QuantIdentity):
        raise GraphError(f"{name}: float BNN-PYNQ networks do not lower; use w<W>a<A>")
    dtype, levels, scale = out_type(in_quant)

    def input_fn(p: torch.Tensor) -> torch.Tensor:  # the twin: x = p/255; 2x - 1; quantize
        v = 2.0 * (p / 255.0) - torch.tensor([1.0])
        return codes(in_quant, v.reshape(1, 1, -1, 1)).reshape(1, -1)

    x, _ = low.thresholds(low.b.input, 1, 255, input_fn, levels, dtype, f"{name} input", "in")
    low.b.nodes[-1].params["thresholds"] = np.repeat(low.b.nodes[-1].params["thresholds"], c, 0)
    s_in, flat = scale, False
    rest = layers[1:]
    i = 0
    while i < len(rest):
        layer = rest[i]
        if isinstance(layer, nn.MaxPool2d):
            hh, ww, cc = low.b.shape(x)
            kk = layer.kernel_size
            x = low.b.add(
                "StreamingMaxPool",
                [x],
                (hh // kk, ww // kk, cc),
                low.b.dtype(x),
                {"kernel": kk},
                label="pool",
            )
            i += 1
            continue
        wq, ws = weight_codes(layer)
        if isinstance(layer, QuantLinear) and not flat:
            x, wq = _flatten(low, x, wq)
            flat = True
        acc_scale = float(ws[0]) * s_in
        norm = rest[i + 1]
        if isinstance(norm, TensorNorm):  # last layer: accumulator -> float affine
            acc = low.mvau(x, wq.reshape(wq.shape[0], -1), "last fc")
            d = (norm.running_var + norm.eps).pow(0.5)
            ops = [
                ("mul", torch.tensor([acc_scale])),
                ("sub", norm.running_mean),
                ("div", d),
                ("mul", norm.weight),
                ("add", norm.bias),
            ]
            logits = low.affine(acc, ops)
            low.label_select(logits)
            return low.b.finish(logits, {"model": name, "input_chw": list(shape_chw)})
        act = rest[i + 2]
        weights = _flat_hwc(wq) if isinstance(layer, QuantConv2d) else wq
        if isinstance(layer, QuantConv2d):
            x = low.conv_input(x, layer.kernel_size[0], layer.stride[0], layer.padding[0])

        def fn(d, norm=norm, act=act, acc_scale=acc_scale):
            v = d * acc_scale
            shaped = (
                v.reshape(1, d.shape[0], -1, 1)
                if isinstance(norm, nn.BatchNorm2d)
                else v.reshape(1, d.shape[0], -1)
            )
            return _flat(codes(act, norm(shaped)), d.shape[0])

        x = low.epilogue_mvau(x, weights, fn, act, f"{name} layer {i}")
        s_in = out_type(act)[2]
        i += 3
    raise GraphError(f"{name}: no final TensorNorm found")


def _flatten(low: Lowering, x: str, wq: np.ndarray):
    """Flatten NHWC for a linear layer; permute NCHW-ordered weight columns to match.

    The flattened tensor is the same stream read as one vector, so this relabels the
    tensor's shape rather than adding a node.
    """
    shape = low.b.shape(x)
    size = math.prod(shape)
    if len(shape) == 3:
        hh, ww, cc = shape
        perm = np.arange(size).reshape(cc, hh, ww).transpose(1, 2, 0).reshape(-1)
        wq = wq[:, perm]
        low.b.tensors[x].shape = (size,)
    return x, wq
