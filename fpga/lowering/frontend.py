"""Front-end of the lowering: read a Brevitas twin module by module into integer nodes.

Each conv/linear becomes an MVAU over exact integer codes (weights from ``quant_weight()``,
activations from the quantizer in front of it). The float epilogue behind each accumulator
(alpha, BN, shifts, the next quantizer) becomes a Thresholding node whose table is built by
enumeration with the twin's own modules (:mod:`hwbed.fpga.lowering.thresholds`). Later passes absorb
thresholds into MVAUs and prove accumulator widths.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np
import torch
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear
from brevitas_examples.bnn_pynq.models.CNV import CNV
from brevitas_examples.bnn_pynq.models.FC import FC
from brevitas_examples.bnn_pynq.models.tensor_norm import TensorNorm
from torch import nn

from hwbed.fpga.lowering.thresholds import quant_levels, thresholds_for
from hwbed.ir.builder import GraphBuilder
from hwbed.ir.graph import Graph
from hwbed.ir.opkit import magnitude
from hwbed.ir.ops.mvau import acc_bound
from hwbed.ir.types import BIPOLAR, TERNARY, GraphError, IntType
from hwbed.models.layers import F32_EXACT, AbcConv2d, XnorConv2d
from hwbed.models.resnet import QuantBlock, ResNet

Epilogue = Callable[[torch.Tensor], torch.Tensor]
"""Maps float conv/linear outputs shaped [1, C, D, 1] (or [1, C, D]) to integer codes."""


_NAMES: ContextVar[tuple[str, dict[nn.Module, str]]] = ContextVar("names", default=("", {}))


@contextmanager
def module_names(model: nn.Module, network: str):
    """Name ``model``'s modules in this context's refusals: ``<network> <module path>``."""
    token = _NAMES.set((network, {m: n for n, m in model.named_modules()}))
    try:
        yield
    finally:
        _NAMES.reset(token)


def where_of(module: nn.Module | None, where: str | None = None) -> str:
    """``where`` if given, else ``<network> <module path>`` from :func:`module_names`."""
    if where:
        return where
    network, names = _NAMES.get()
    path = names.get(module) if module is not None else None
    return " ".join(p for p in (network, path or type(module).__name__) if p)


def check_exact_scale(scale: torch.Tensor, what: str, where: str) -> None:
    """Refuse a quantizer scale that is not exactly a power of two (any element, per channel).

    Only then are integer codes times the scale, and float32 sums of them, exact, so that the
    twin's float math depends on the integer accumulator alone (docs/architecture.md).
    """
    s = scale.detach().to(torch.float64).reshape(-1).numpy()
    mantissa, _ = np.frexp(s)
    bad = ~(np.isfinite(s) & (s > 0) & (mantissa == 0.5))
    if bad.any():
        raise GraphError(
            f"{where}: {what} scale {float(s[bad][0]):.6g} is not a power of two; "
            "the integer graph cannot equal the twin"
        )


def _exact_quant(qt, what: str, where: str):
    """``qt`` after checking its scale (power of two) and zero point (0)."""
    check_exact_scale(qt.scale, what, where)
    if (qt.zero_point.detach() != 0).any():
        raise GraphError(
            f"{where}: {what} zero point is not 0; the lowering reads codes as value / scale"
        )
    return qt


def quant_out(module: nn.Module, value: torch.Tensor, where: str | None = None):
    """The QuantTensor a Brevitas activation module returns for ``value``.

    A module without an enabled activation quantizer (a float layer) is refused.
    """
    proxy = getattr(module, "act_quant", None)
    if proxy is None or not getattr(proxy, "is_quant_enabled", False):
        raise GraphError(
            f"{where_of(module, where)}: {type(module).__name__} quantizes nothing (a float "
            "activation); only quantized networks lower to an integer graph"
        )
    old = module.return_quant_tensor
    module.return_quant_tensor = True
    try:
        return module(value)
    finally:
        module.return_quant_tensor = old


def codes(module: nn.Module, value: torch.Tensor, where: str | None = None) -> torch.Tensor:
    """Integer codes of a Brevitas activation quantizer applied to ``value``.

    value / scale is exact for the power-of-two scales checked here; Brevitas' own ``int()``
    is not used because its validity check rejects all-equal binary tensors.
    """
    qt = _exact_quant(quant_out(module, value, where), "activation", where_of(module, where))
    return torch.round(qt.value / qt.scale + qt.zero_point)


def out_type(module: nn.Module, where: str | None = None) -> tuple[IntType, list[int], float]:
    """(integer type, output codes, scale) of an activation quantizer.

    Refuses a float module, a scale that is not one power of two for the whole tensor, and a
    zero point other than 0: the lowering's integer codes would not be the twin's.
    """
    where = where_of(module, where)
    qt = _exact_quant(quant_out(module, torch.zeros(1, 1, 1, 1), where), "activation", where)
    bits, signed = int(qt.bit_width), bool(qt.signed)
    scales = qt.scale.detach().reshape(-1)
    if not bool((scales == scales[0]).all()):
        raise GraphError(f"{where}: per-channel activation scales are not lowered")
    scale = float(scales[0])
    if bits == 1 and signed:
        return BIPOLAR, [-1, 1], scale
    levels = quant_levels(bits, signed, False)
    return IntType("int" if signed else "uint", bits), levels, scale


def weight_codes(layer: nn.Module, where: str | None = None) -> tuple[np.ndarray, torch.Tensor]:
    """(int64 codes [cout, ...], float scale broadcastable to the output channels).

    Refuses a layer without an enabled weight quantizer and a scale that is not a power of
    two (per-channel power-of-two scales are fine).
    """
    where = where_of(layer, where)
    proxy = getattr(layer, "weight_quant", None)
    if proxy is None or not getattr(proxy, "is_quant_enabled", False):
        raise GraphError(
            f"{where}: {type(layer).__name__} has float weights (no quantizer); "
            "only quantized networks lower to an integer graph"
        )
    qw = _exact_quant(layer.quant_weight(), "weight", where)
    return qw.int().detach().to(torch.int64).numpy(), qw.scale.detach().reshape(-1)


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
        repeat: int = 1,
    ) -> tuple[str, np.ndarray]:
        """Append Thresholding(x) reproducing ``fn``; return (tensor, flip mask).

        ``repeat``: the table built for ``channels`` serves each of ``repeat`` channel groups.
        """
        thr, flip = thresholds_for(fn, bound, channels, levels_out, where)
        thr = np.repeat(thr, repeat, 0)
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

    def mvau(
        self,
        x: str,
        weights: np.ndarray,
        label: str,
        extra: dict | None = None,
        exact_sum: bool = False,
        params: dict[str, np.ndarray] | None = None,
    ) -> str:
        """Append an MVAU without activation: acc = x . W^T over the last axis.

        ``extra`` and ``params`` are further attributes and params of the node (ABC's bases).

        Refuses an accumulator bound above :data:`F32_EXACT`: beyond it the twin's
        float32 sums may round, and no integer graph can follow them. ``exact_sum``: the
        twin's layer sums exactly (float64) and rounds once to float32 (``IntConv2d``,
        ``ExactLinear``), a function of the integer accumulator at any bound.
        """
        in_type = self.b.dtype(x)
        bound = acc_bound(weights, in_type)
        if bound > F32_EXACT and not exact_sum:
            network = _NAMES.get()[0]
            where = label if label.startswith(network) else f"{network} {label}".strip()
            raise GraphError(
                f"{where}: accumulator bound {bound} (sum |w| * max |x|) exceeds 2^24, where "
                "the twin's float32 sums start to round; the integer graph cannot equal the twin"
            )
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
            {"weights": weights.astype(np.int64), **(params or {})},
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
        exact_sum: bool = False,
        extra: dict | None = None,
        params: dict[str, np.ndarray] | None = None,
    ) -> str:
        """MVAU then Thresholding with ``fn``; negative-slope channels get negated weights.

        ``extra`` and ``params`` go to the MVAU (:meth:`mvau`).
        """
        acc = self.mvau(x, weights, where, extra, exact_sum, params)
        dtype, lv = levels if levels is not None else out_type(out_module)[:2]
        bound = acc_bound(weights, self.b.dtype(x))
        out, flip = self.thresholds(acc, weights.shape[0], bound, fn, lv, dtype, where)
        if flip.any():
            node = self.b.producer(acc)
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

    def flatten(self, x: str) -> str:
        """Append Flatten: [H, W, C] -> (H*W*C,), the same stream read as one vector."""
        return self.b.add("Flatten", [x], (math.prod(self.b.shape(x)),), self.b.dtype(x))

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
    """Quantized CIFAR or ImageNet ResNet (xnor, abc, wXaY) -> integer graph.

    The stem is an 8-bit conv on uint8 pixels; an ImageNet stem then max-pools the stream
    (``ResNet.features``: the pool reads ``stem_quant``'s output). Blocks are lowered unit by
    unit with an option-A or projection shortcut. The head is a global sum pool, then for
    CIFAR the 8-bit FC on that sum (a mean over a power-of-two count is the sum times a power
    of two) and for ImageNet a Thresholding of the sum by the twin's quantized mean before it.
    """
    spec = model.spec
    if not spec.quantized:
        raise GraphError(
            f"{spec.name}: only quantized networks lower to an integer graph; "
            "float variants run as the torch twin or through onnxruntime"
        )
    c, h, w = shape_chw
    low = Lowering((h, w, c))
    with module_names(model, spec.name):
        # stem: uint8 pixels (PixelQuant(255 x) is exact, scale 1) -> 8-bit conv -> BN -> stream
        x = _conv(
            low, low.b.input, model.stem_conv, model.stem_bn, model.stem_quant, 1.0, "stem conv"
        )
        stream = model.stem_quant
        if model.pool is not None:
            x = _window_max_pool(low, x, model.pool, f"{spec.name} stem pool")
        for i, block in enumerate(model.blocks):
            x, stream = _lower_block(low, block, x, stream, f"block {i}")
        logits = _head(low, model, x, stream)
    low.label_select(logits)
    return low.b.finish(logits, {"model": spec.name, "input_chw": list(shape_chw)})


def _conv(low: Lowering, h: str, conv: nn.Module, bn, post, a_scale: float, where: str) -> str:
    """A binary or multi-bit conv on the codes ``h`` (value = code * ``a_scale``), then its BN and
    the quantizer ``post``: FMPadding/window, MVAU and thresholds."""
    inner = conv.conv if isinstance(conv, XnorConv2d) else conv
    wq, ws = weight_codes(inner)
    k, stride, pad = inner.kernel_size[0], inner.stride[0], inner.padding[0]
    alpha = conv.alpha().detach() if isinstance(conv, XnorConv2d) else None
    fn = _conv_epilogue(bn, post, ws * a_scale, alpha)
    win = low.conv_input(h, k, stride, pad)
    exact = bool(getattr(inner, "exact_sum", False))
    return low.epilogue_mvau(win, _flat_hwc(wq), fn, post, where, exact_sum=exact)


def _window_max_pool(low: Lowering, x: str, pool: nn.MaxPool2d, where: str) -> str:
    """nn.MaxPool2d on a stream of codes: FMPadding with the type's minimum, window, Pool.

    The twin pools the stream's values code * s (s > 0), so the max of the values is the max
    of the codes times s. PyTorch pads with -inf and requires padding <= kernel / 2, so every
    window holds an input value; padding with the smallest code of the type instead changes
    no maximum (FINN's InferPool pads with the input type's minimum too).
    """
    k, s, q, dil = (
        tuple(v) if isinstance(v, tuple | list) else (v, v)
        for v in (pool.kernel_size, pool.stride or pool.kernel_size, pool.padding, pool.dilation)
    )
    if len({k[0], k[1]}) > 1 or len({s[0], s[1]}) > 1 or len({q[0], q[1]}) > 1:
        raise GraphError(f"{where}: only square max pools are lowered, got kernel {k}, stride {s}")
    (k, s, q) = (k[0], s[0], q[0])
    if dil != (1, 1) or pool.ceil_mode or pool.return_indices or 2 * q > k:
        raise GraphError(
            f"{where}: max pool with dilation {dil}, ceil_mode {pool.ceil_mode} or padding {q} "
            f"above kernel {k} / 2 is not lowered"
        )
    dtype = low.b.dtype(x)
    hh, ww, cc = low.b.shape(x)
    if q:
        hh, ww = hh + 2 * q, ww + 2 * q
        x = low.b.add(
            "FMPadding",
            [x],
            (hh, ww, cc),
            dtype,
            {"pad": q, "pad_value": dtype.min},
            label="poolpad",
        )
    oh, ow = (hh - k) // s + 1, (ww - k) // s + 1
    if min(oh, ow) < 1:
        raise GraphError(f"{where}: a {hh}x{ww} map is smaller than the {k}x{k} pool")
    win = low.b.add(
        "ConvolutionInputGenerator",
        [x],
        (oh, ow, k * k * cc),
        dtype,
        {"kernel": k, "stride": s, "IFMDim": [hh, ww], "OFMDim": [oh, ow], "IFMChannels": cc},
        label="poolwin",
    )
    return low.b.add(
        "Pool",
        [win],
        (oh, ow, cc),
        dtype,
        {"Function": "MaxPool", "kernel": k, "channels": cc},
        label="maxpool",
    )


def _head(low: Lowering, model: ResNet, x: str, stream) -> str:
    """Global sum pool -> (ImageNet: quantized mean) -> 8-bit FC -> float affine: the logits."""
    name = model.spec.name
    hh, ww, cc = low.b.shape(x)
    positions = hh * ww
    t = low.b.dtype(x)
    quant = model.pool_quant
    if quant is None and positions & (positions - 1):
        raise GraphError(
            f"{name}: global average over {hh}x{ww} is not a power of two, "
            "so the twin's mean is not an exact integer sum; not lowered"
        )
    pooled = low.b.add(
        "GlobalAccPool",
        [x],
        (cc,),
        IntType.fitting(t.min * positions, t.max * positions),
        {"positions": positions},
        label="pool",
    )
    fq, fs = weight_codes(model.fc)
    s_stream = out_type(stream)[2]
    # ExactLinear: float64 sum rounded once to float32, times a power of two, then the
    # bias; the Affine rounds the exact integer to float32 the same way (round to even)
    exact = bool(getattr(model.fc, "exact_sum", False))
    if quant is None:  # CIFAR: the FC reads the mean = sum * 2^-log2(HW) itself
        acc = low.mvau(pooled, fq, "fc", exact_sum=exact)
        scale = torch.tensor([s_stream * float(fs[0]) / positions], dtype=torch.float32)
    else:
        if quant is not stream:
            raise GraphError(f"{name}: the pooled mean's quantizer is not the stream's")
        q, s_pool = _pooled_codes(low, pooled, quant, s_stream, t, (hh, ww), f"{name} pool")
        acc = low.mvau(q, fq, "fc", exact_sum=exact)
        scale = torch.tensor([s_pool * float(fs[0])], dtype=torch.float32)
    check_exact_scale(scale, "logit", f"{name} fc")
    return low.affine(acc, [("mul", scale), ("add", model.fc.bias)])


POOL_CHUNK = 1 << 22
"""Elements per tensor the pooled-mean enumeration builds at a time."""


def _pooled_codes(
    low: Lowering, pooled: str, quant, s_stream: float, stream_t: IntType, hw, where: str
):
    """Thresholding of the integer sum S of every channel by the twin's quantized mean.

    The twin computes ``quant(features.mean(dim=(2, 3)))``; torch's mean is the sum (exact:
    codes times a power of two) divided once by H*W, so it is a function of S alone. The
    table is enumerated with those very ops: a map holding S * s at one position and zeros
    elsewhere has the same sum, hence the same mean, as every map whose codes sum to S.
    """
    cc = low.b.shape(pooled)[0]
    hh, ww = hw
    bound = hh * ww * magnitude(stream_t)
    dtype, levels, s_pool = out_type(quant)
    rows = max(1, POOL_CHUNK // (cc * hh * ww))

    def fn(d: torch.Tensor) -> torch.Tensor:  # d: [C, D] float32 sums S (|S| < 2^24: exact)
        parts = []
        for lo in range(0, d.shape[1], rows):
            part = d[:, lo : lo + rows].T * s_stream  # [D', C] exact
            maps = torch.zeros(part.shape[0], cc, hh, ww)
            maps[:, :, 0, 0] = part
            parts.append(codes(quant, maps.mean(dim=(2, 3))).T)
        return torch.cat(parts, dim=1)

    out, flip = low.thresholds(pooled, cc, bound, fn, levels, dtype, where, "poolq")
    if flip.any():
        raise GraphError(f"{where}: the quantized mean falls as the sum rises; not lowered")
    return out, s_pool


def _act_thresholds(low: Lowering, x: str, act: nn.Module, scale_in: float, where: str) -> str:
    """Thresholding of an int stream by an activation module (sign or QuantReLU)."""
    dtype, levels, _ = out_type(act)
    src = low.b.dtype(x)
    bound = magnitude(src)
    channels = low.b.shape(x)[-1]
    fn = lambda d: _flat(codes(act, (d * scale_in).reshape(1, channels, -1, 1)), channels)  # noqa: E731
    out, _ = low.thresholds(x, channels, bound, fn, levels, dtype, where, "act")
    return out


def _lower_block(low: Lowering, block: QuantBlock, x: str, stream: QuantIdentity, where: str):
    """One block, unit by unit (two 3x3 convs, or ResNet50's 1x1-3x3-1x1 bottleneck): each
    unit's epilogue quantizes for the next unit (its activation, or ABC's bases), the last
    one to the stream's scale (``h_quant``); then the shortcut and the add."""
    s_x = out_type(stream)[2]
    h = x
    counts = (len(block.acts), len(block.convs), len(block.bns))
    if len(set(counts)) != 1:
        raise GraphError(
            f"{where_of(block)}: {counts[0]} activations, {counts[1]} convs and {counts[2]} "
            "BatchNorms; a block holds one of each per unit"
        )
    units = list(zip(block.acts, block.convs, block.bns, strict=True))
    for u, (act, conv, bn) in enumerate(units):
        last = u == len(units) - 1
        nxt = None if last else units[u + 1]
        name = f"{where} conv{u}"
        if isinstance(conv, AbcConv2d):
            post = block.h_quant if last else None
            h = _lower_abc(low, conv, h, bn, nxt, post, s_x if u == 0 else None, name)
            continue
        if u == 0 and isinstance(act, nn.Identity):  # the conv reads the stream itself
            a_scale = s_x
        elif u == 0:  # activation quantizer on the stream
            h = _act_thresholds(low, h, act, s_x, f"{where} act0")
            a_scale = 1.0 if isinstance(conv, XnorConv2d) else out_type(act)[2]
        else:
            a_scale = 1.0 if isinstance(conv, XnorConv2d) else out_type(act)[2]
        post = block.h_quant if last else nxt[0]
        h = _conv(low, h, conv, bn, post, a_scale, name)
    return _residual(low, block, x, h, s_x, where), block.out_quant


def _conv_epilogue(bn, post, acc_scale: torch.Tensor, alpha: torch.Tensor | None) -> Epilogue:
    def fn(d: torch.Tensor) -> torch.Tensor:
        v = d * acc_scale.reshape(-1, 1) if acc_scale.numel() > 1 else d * float(acc_scale)
        if alpha is not None:
            v = (v.reshape(1, d.shape[0], -1, 1) * alpha.view(1, -1, 1, 1)).reshape(d.shape)
        return _flat(codes(post, _bn4(bn)(v)), d.shape[0])

    return fn


def _lower_abc(low: Lowering, conv: AbcConv2d, h, bn, nxt, post, s_in, where: str):
    """ABC conv: N sign bases of its input, one integer MVAU with sum_m k_mn B_m weights.

    ``s_in`` set: ``h`` is a stream of codes (scale ``s_in``) and the bases are thresholds on
    it; else ``h`` holds the bases the previous unit's epilogue emitted. The epilogue emits
    the next unit's bases (``nxt``), or requantizes with ``post`` (the stream's scale).
    """
    if s_in is not None:  # bases of the stream: thresholds on the stream codes
        src = low.b.dtype(h)
        bound = magnitude(src)
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
    taps = int(np.prod(b_m.shape[2:]))
    twin_bound = int(np.abs(k_mn).sum()) * taps  # the twin's einsum over k_mn * d_mn
    if twin_bound > F32_EXACT:
        raise GraphError(
            f"{where}: the twin's sum over k_mn * d_mn reaches {twin_bound} > 2^24, where "
            "float32 sums start to round; the integer graph cannot equal the twin"
        )
    weights = np.einsum("mn,mocij->oijnc", k_mn, b_m).reshape(b_m.shape[1], -1)
    win = low.conv_input(h, conv.weight.shape[-1], conv.stride, conv.padding)
    scale = 2.0**-frac
    extra = {"abc": [conv.m, conv.n], "frac": frac}
    params = {"bases": b_m.astype(np.int8), "coeffs": k_mn}
    if nxt is None:  # last conv of the unit: requantize with ``post``
        fn = lambda d: _flat(codes(post, _bn4(bn)(d * scale)), d.shape[0])  # noqa: E731
        return low.epilogue_mvau(win, weights, fn, post, where, extra=extra, params=params)
    acc = low.mvau(win, weights, where, extra, params=params)
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
    """Shortcut (option A or projection) + residual branch, requantized by ``out_quant``.

    Both branches must be codes on the stream's scale s (``h_quant`` and the projection's
    quantizer share the stream's proxy): then h * s + x * s = (h + x) * s exactly, and the
    block's output is a function of the integer sum.
    """
    hh, ww, cout = low.b.shape(h)
    if out_type(block.h_quant)[2] != s_x:
        raise GraphError(f"{where}: the residual branch is not on the stream's scale")
    if block.shortcut is not None:
        sc = _projection(low, block.shortcut, x, s_x, f"{where} shortcut")
    else:
        sc = x
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
    if low.b.shape(sc) != low.b.shape(h):
        raise GraphError(
            f"{where}: shortcut {list(low.b.shape(sc))} and residual branch "
            f"{list(low.b.shape(h))} differ"
        )
    t, u = low.b.dtype(h), low.b.dtype(sc)
    lo, hi = t.min + u.min, t.max + u.max
    total = low.b.add("AddStreams", [h, sc], (hh, ww, cout), IntType.fitting(lo, hi), label="add")
    dtype, levels, _ = out_type(block.out_quant)
    fn = lambda d: _flat(codes(block.out_quant, (d * s_x).reshape(1, cout, -1, 1)), cout)  # noqa: E731
    out, _ = low.thresholds(
        total, cout, max(abs(lo), abs(hi)), fn, levels, dtype, f"{where} add", "stream"
    )
    return out


def _projection(low: Lowering, shortcut: nn.Sequential, x: str, s_x: float, where: str) -> str:
    """The 1x1 stride-s projection (conv, BN, the stream's quantizer) on the stream codes:
    DownSampler (stride > 1), MVAU and thresholds back to codes on the stream's scale."""
    layers = list(shortcut)
    if len(layers) != 3 or not isinstance(layers[1], nn.BatchNorm2d):
        raise GraphError(f"{where}: expected a conv, a BatchNorm2d and the stream's quantizer")
    conv, bn, quant = layers
    if out_type(quant)[2] != s_x:
        raise GraphError(
            f"{where}: its quantizer's scale {out_type(quant)[2]} is not the stream's {s_x}; "
            "the two branches of the add would need different scales"
        )
    if isinstance(conv, AbcConv2d):  # ABC: sign bases of the stream, its own 1x1 conv
        return _lower_abc(low, conv, x, bn, None, quant, s_x, where)
    if isinstance(conv, XnorConv2d):
        raise GraphError(f"{where}: a binary-weight projection on the stream is not lowered")
    return _conv(low, x, conv, bn, quant, s_x, where)


# -- BNN-PYNQ --------------------------------------------------------------------------------
def lower_bnn_pynq(model: nn.Module, shape_chw: tuple[int, int, int], name: str) -> Graph:
    """CNV / TFC / SFC / LFC (brevitas_examples) -> integer graph.

    The layout is brevitas_examples': an input QuantIdentity; per layer a bias-free QuantConv2d
    (then BatchNorm2d, QuantIdentity, maybe a MaxPool2d) or QuantLinear (then BatchNorm1d,
    QuantIdentity); a last QuantLinear and TensorNorm. Anything else is a ``GraphError``
    naming the layer.
    """
    c, h, w = shape_chw
    low = Lowering((h, w, c))
    if isinstance(model, CNV):
        layers = [*model.conv_features, *model.linear_features]
    elif isinstance(model, FC):
        layers = list(model.features)
    else:
        raise GraphError(f"{name}: not a BNN-PYNQ network")
    layers = [m for m in layers if not isinstance(m, nn.Dropout)]
    if not layers or not isinstance(layers[0], QuantIdentity):
        raise GraphError(f"{name}: float BNN-PYNQ networks do not lower; use w<W>a<A>")
    in_quant, where = layers[0], f"{name} input"
    dtype, levels, scale = out_type(in_quant, where)

    def input_fn(p: torch.Tensor) -> torch.Tensor:  # the twin: x = p/255; 2x - 1; quantize
        v = 2.0 * (p / 255.0) - torch.tensor([1.0])
        return codes(in_quant, v.reshape(1, 1, -1, 1), where).reshape(1, -1)

    # FC's forward flattens its input before any layer: one shared table on the flat vector
    flat = isinstance(model, FC)
    src = low.flatten(low.b.input) if flat else low.b.input
    columns = (h, w, c) if flat else None  # the NHWC map the next linear layer reads flat
    x, _ = low.thresholds(src, 1, 255, input_fn, levels, dtype, where, "in", 1 if flat else c)
    s_in, rest, i, n = scale, layers[1:], 0, 0
    while i < len(rest):
        layer, where = rest[i], f"{name} layer {n}"
        if isinstance(layer, nn.MaxPool2d):
            x = _max_pool(low, x, layer, flat, where)
            i += 1
            continue
        if not isinstance(layer, (QuantConv2d, QuantLinear)):
            raise GraphError(
                f"{where}: expected a QuantConv2d, QuantLinear or MaxPool2d, "
                f"found {type(layer).__name__}"
            )
        if layer.bias is not None:
            raise GraphError(f"{where}: {type(layer).__name__} with a bias is not lowered")
        norm = _layer_at(rest, i + 1, (nn.BatchNorm1d, nn.BatchNorm2d, TensorNorm), where)
        wq, ws = weight_codes(layer, where)
        acc_scale = ws * s_in  # exact: powers of two
        if isinstance(layer, QuantLinear):
            if not flat:
                columns = low.b.shape(x)
                x, flat = low.flatten(x), True
            if columns is not None:
                wq, columns = _nhwc_columns(wq, columns, where), None
            elif wq.shape[1] != low.b.shape(x)[-1]:
                raise GraphError(
                    f"{where}: linear layer takes {wq.shape[1]} inputs, "
                    f"the stream holds {low.b.shape(x)[-1]}"
                )
        if isinstance(norm, TensorNorm):  # last layer: accumulator -> float affine
            if not isinstance(layer, QuantLinear) or i + 2 != len(rest):
                raise GraphError(f"{where}: TensorNorm must follow the last QuantLinear")
            exact = bool(getattr(layer, "exact_sum", False))
            acc = low.mvau(x, wq.reshape(wq.shape[0], -1), "last fc", exact_sum=exact)
            d = (norm.running_var + norm.eps).pow(0.5)
            ops = [
                ("mul", acc_scale),
                ("sub", norm.running_mean),
                ("div", d),
                ("mul", norm.weight),
                ("add", norm.bias),
            ]
            logits = low.affine(acc, ops)
            low.label_select(logits)
            return low.b.finish(logits, {"model": name, "input_chw": list(shape_chw)})
        act = _layer_at(rest, i + 2, (QuantIdentity,), where)
        if isinstance(layer, QuantConv2d):
            _check_conv(low, x, layer, norm, flat, where)
            x = low.conv_input(x, layer.kernel_size[0], layer.stride[0], layer.padding[0])
            weights = _flat_hwc(wq)
        elif isinstance(norm, nn.BatchNorm1d):
            weights = wq
        else:
            raise GraphError(f"{where}: a linear layer needs a BatchNorm1d after it")
        if norm.num_features != weights.shape[0]:
            raise GraphError(
                f"{where}: {type(norm).__name__} has {norm.num_features} channels, "
                f"the layer {weights.shape[0]}"
            )

        def fn(d, norm=norm, act=act, acc_scale=acc_scale, where=where):
            v = d * acc_scale.reshape(-1, 1)
            shaped = (
                v.reshape(1, d.shape[0], -1, 1)
                if isinstance(norm, nn.BatchNorm2d)
                else v.reshape(1, d.shape[0], -1)
            )
            return _flat(codes(act, norm(shaped), where), d.shape[0])

        levels = out_type(act, where)[:2]
        exact = bool(getattr(layer, "exact_sum", False))  # models.bnn_pynq.ExactSumConv2d
        x = low.epilogue_mvau(x, weights, fn, act, where, levels=levels, exact_sum=exact)
        s_in = out_type(act, where)[2]
        i, n = i + 3, n + 1
    raise GraphError(f"{name}: no final TensorNorm found")


def _layer_at(layers: list[nn.Module], i: int, kinds: tuple[type, ...], where: str) -> nn.Module:
    """``layers[i]`` when it is one of ``kinds``; else a GraphError naming ``where``."""
    if i < len(layers) and isinstance(layers[i], kinds):
        return layers[i]
    found = type(layers[i]).__name__ if i < len(layers) else "the end of the network"
    want = " or ".join(k.__name__ for k in kinds)
    raise GraphError(f"{where}: expected {want} after the weight layer, found {found}")


def _check_conv(low: Lowering, x: str, conv: nn.Module, norm: nn.Module, flat: bool, where: str):
    """Refuse a convolution the sliding window + MVAU cannot express exactly."""
    k, s, p = conv.kernel_size, conv.stride, conv.padding
    why = None
    if flat:
        why = "a convolution after the flatten"
    elif not isinstance(norm, nn.BatchNorm2d):
        why = f"a convolution needs a BatchNorm2d after it, found {type(norm).__name__}"
    elif k[0] != k[1] or s[0] != s[1] or p[0] != p[1] or isinstance(p, str):
        why = f"non-square kernel {k}, stride {s} or padding {p}"
    elif conv.dilation != (1, 1) or conv.groups != 1 or conv.padding_mode != "zeros":
        why = "dilated, grouped or non-zero-padded convolutions are not lowered"
    elif conv.in_channels != low.b.shape(x)[-1]:
        why = f"{conv.in_channels} input channels, the stream holds {low.b.shape(x)[-1]}"
    if why:
        raise GraphError(f"{where}: {why}")


def _max_pool(low: Lowering, x: str, pool: nn.MaxPool2d, flat: bool, where: str) -> str:
    """StreamingMaxPool (k x k, stride k, floor) for a max pool of exactly that form."""
    k = pool.kernel_size if isinstance(pool.kernel_size, int) else pool.kernel_size[0]
    same = all(v in (k, (k, k)) for v in (pool.kernel_size, pool.stride if pool.stride else k))
    if flat or not same or pool.padding not in (0, (0, 0)) or pool.dilation not in (1, (1, 1)):
        raise GraphError(f"{where}: only k x k max pools with stride k on a feature map lower")
    if pool.ceil_mode:
        raise GraphError(f"{where}: max pool with ceil_mode is not lowered")
    hh, ww, cc = low.b.shape(x)
    return low.b.add(
        "StreamingMaxPool", [x], (hh // k, ww // k, cc), low.b.dtype(x), {"kernel": k}, label="pool"
    )


def _nhwc_columns(wq: np.ndarray, hwc: tuple[int, ...], where: str) -> np.ndarray:
    """Weights of a linear layer on a flattened [H, W, C] map: the twin flattens NCHW, the
    graph's Flatten NHWC, so the columns are permuted to match."""
    size = math.prod(hwc)
    if wq.shape[1] != size:
        raise GraphError(f"{where}: linear layer takes {wq.shape[1]} inputs, the stream {size}")
    hh, ww, cc = hwc
    return wq[:, np.arange(size).reshape(cc, hh, ww).transpose(1, 2, 0).reshape(-1)]
