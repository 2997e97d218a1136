"""Fast exact execution of the integer dataflow graph: a compiled plan of torch CPU kernels.

:func:`compile_plan` walks the graph once and proves, from the uint8 input range alone (it does
not trust declared tensor types), an integer interval for every tensor; from these it picks
each node's kernel and number format. :meth:`Plan.run` then executes batches. The result equals
:func:`hwbed.ir.reference.execute` bit for bit, by this argument:

- **Number formats.** Every integer tensor is held as float32 when its proven magnitude is
  at most 2^24, as float64 up to 2^53, else as int64 (refused beyond 2^62). IEEE float32/64
  represent every integer of that magnitude exactly, and a sum, difference or product of
  such integers whose exact value also lies in that range is computed exactly (round to
  nearest of a representable value is the value itself).
- **GEMM (MVAU).** acc_j = sum_k w_jk x_k. In any summation order, blocking or FMA use,
  every partial sum and product is bounded by B_j = sum_k |w_jk| * max|x|. The GEMM runs in
  the narrowest format whose exact range holds max_j B_j (float32 GEMM for every binary and
  small-int layer; float64 for e.g. the ResNet FC over pooled sums; int64 otherwise). BLAS
  sgemm never uses Strassen-like algorithms; torch's reduced-precision fp32 matmul modes
  (bf16/tf32) would break the argument, so float32 GEMMs are promoted to float64 whenever
  :func:`fp32_gemm_is_ieee` is false at run time. Convolutions are im2col (a strided view)
  plus GEMM: torch's conv2d is avoided because NNPACK/Winograd transforms are not exact.
- **Thresholds** count exactly: a table over the proven input interval built with the
  reference's own :func:`~hwbed.ir.reference.threshold`, one compare for a single step,
  or an int64 ``searchsorted`` of channel-offset thresholds clipped to the interval
  (clipping to [lo, hi + 1] keeps every count for inputs in [lo, hi]).
- **Pooling, padding, windows, adds, concatenation** move or add integers within the
  proven ranges, hence exact in the chosen format. ``Affine`` and ``LabelSelect`` call the
  reference's own code on int64 inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from hwbed.ir.graph import Graph, Node
from hwbed.ir.reference import run_node, threshold
from hwbed.ir.types import GraphError

F32_EXACT = 2**24
"""Largest magnitude below which every integer (and every exact sum of two) is a float32."""
F64_EXACT = 2**53
I64_SAFE = 2**62
SHIFT_EXACT = 2**23
"""float32 holds every multiple of 1/2 of magnitude <= 2^23 (shifted threshold kernels)."""
LUT_MAX = 2**20
"""Largest threshold table (input values x channels) built; larger ones use buckets."""


def fp32_gemm_is_ieee() -> bool:
    """Whether torch's CPU float32 matmul currently runs in full IEEE float32."""
    mkldnn = getattr(torch.backends.mkldnn, "matmul", None)
    mode = getattr(mkldnn, "fp32_precision", "none")
    return torch.get_float32_matmul_precision() == "highest" and mode in ("none", "ieee")


def format_for(bound: int) -> torch.dtype:
    """The narrowest exact number format for integers of magnitude <= ``bound``."""
    if bound <= F32_EXACT:
        return torch.float32
    if bound <= F64_EXACT:
        return torch.float64
    if bound <= I64_SAFE:
        return torch.int64
    raise GraphError(f"proven magnitude {bound} exceeds int64; no exact fast path")


@dataclass(frozen=True)
class Interval:
    """Proven integer range [lo, hi] of a tensor."""

    lo: int
    hi: int

    @property
    def mag(self) -> int:
        return max(abs(self.lo), abs(self.hi))

    def union(self, *others: Interval) -> Interval:
        return Interval(
            min(self.lo, *(o.lo for o in others)), max(self.hi, *(o.hi for o in others))
        )


@dataclass
class Step:
    """One compiled node: its kernel and the proven interval of its output (None: float)."""

    node: str
    op: str
    kernel: str
    inputs: list[str]
    output: str
    shape: tuple[int, ...]
    interval: Interval | None
    fn: Callable[..., torch.Tensor] = field(repr=False)


class Plan:
    """A graph compiled for fast exact execution; call :meth:`run` on uint8 NHWC pixels."""

    def __init__(self, graph: Graph, chunk: int = 64):
        graph.validate()
        self.graph = graph
        self.chunk = chunk
        in_t = graph.tensors[graph.input]
        if in_t.dtype.kind not in ("uint", "int"):
            raise GraphError(f"graph input {graph.input} has type {in_t.dtype}, expected integers")
        self.input_interval = Interval(in_t.dtype.min, in_t.dtype.max)
        self.input_shape = tuple(in_t.shape)
        needed = _ancestors(graph)
        iv = {graph.input: self.input_interval}
        fused = {}  # tensor -> the node producing it, run inside its sole consumer's step
        self.steps = []
        for node in graph.nodes:
            out = node.outputs[0]
            if out not in needed:
                continue
            if _fusable(node, graph, iv):
                fused[out] = node
                iv[out] = _fused_interval(node, iv)
                continue
            step = _compile(node, [iv.get(t) for t in node.inputs], graph, fused, iv)
            iv[step.output] = step.interval
            self.steps.append(step)
        self.intervals = iv
        last_use = {}
        for i, step in enumerate(self.steps):
            for t in step.inputs:
                last_use[t] = i
        self._free = [
            [t for t in s.inputs if last_use[t] == i and t != graph.output]
            for i, s in enumerate(self.steps)
        ]

    def describe(self) -> list[dict]:
        """One row per step: node, op, kernel and proven output interval."""
        return [
            {
                "node": s.node,
                "op": s.op,
                "kernel": s.kernel,
                "interval": None if s.interval is None else [s.interval.lo, s.interval.hi],
            }
            for s in self.steps
        ]

    def run(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (or integer) NHWC pixels -> the graph output (float32 logits)."""
        x = np.asarray(pixels)
        if x.ndim != 1 + len(self.input_shape) or tuple(x.shape[1:]) != self.input_shape:
            raise GraphError(
                f"input shape {tuple(x.shape)} does not match the graph's "
                f"[N, {', '.join(map(str, self.input_shape))}]"
            )
        if x.dtype.kind not in "iu":
            raise GraphError(f"input pixels must be integers, got dtype {x.dtype}")
        lo, hi = self.input_interval.lo, self.input_interval.hi
        full_uint8 = x.dtype == np.uint8 and (lo, hi) == (0, 255)
        if x.size and not full_uint8 and (x.min() < lo or x.max() > hi):
            raise GraphError(
                f"input values {x.min()}..{x.max()} outside the graph input range {lo}..{hi}"
            )
        if len(x) <= self.chunk:
            return self._run(x)
        starts = range(0, len(x), self.chunk)
        return np.concatenate([self._run(x[i : i + self.chunk]) for i in starts])

    def _run(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        env = {
            self.graph.input: torch.from_numpy(np.require(x, requirements="CW")).to(
                format_for(self.input_interval.mag)
            )
        }
        ieee = fp32_gemm_is_ieee()
        # NNPACK's Winograd/FFT is inexact; inference mode skips autograd bookkeeping
        with torch.inference_mode(), torch.backends.nnpack.flags(enabled=False):
            return self._steps(n, env, ieee)

    def _steps(self, n: int, env: dict, ieee: bool) -> np.ndarray:
        for step, free in zip(self.steps, self._free, strict=True):
            out = step.fn(*(env[t] for t in step.inputs), ieee=ieee)
            env[step.output] = out.reshape(n, *step.shape)  # flatten = relabel, as the reference
            for t in free:
                del env[t]
        out = env[self.graph.output]
        if self.intervals[self.graph.output] is not None:  # an integer output, as the reference
            out = out.to(torch.int64)
        return out.numpy()


def compile_plan(graph: Graph, chunk: int = 64) -> Plan:
    """Compile ``graph`` once; ``chunk`` bounds the images run at a time (memory)."""
    return Plan(graph, chunk)


def execute(graph: Graph, pixels: np.ndarray) -> np.ndarray:
    """One-off fast execution (compiles a plan each call; keep a :class:`Plan` for batches)."""
    return Plan(graph).run(pixels)


# -- compilation of one node ---------------------------------------------------------------
def _ancestors(graph: Graph) -> set[str]:
    """Tensors the graph output depends on (LabelSelect and other side outputs are skipped)."""
    needed = {graph.output}
    for node in reversed(graph.nodes):
        if node.outputs[0] in needed:
            needed.update(node.inputs)
    return needed


def _fusable(node: Node, graph: Graph, iv: dict) -> bool:
    """Whether ``node`` runs inside its sole consumer's step instead of as its own step.

    A sliding window feeding only an MVAU (a convolution) or a Pool (a max pool), a zero
    padding feeding only a convolution's window (the convolution's ``padding``), a padding
    feeding only a max pool's window with a value no larger than any input (the pool's -inf
    padding, with every window holding an input), an add feeding only a Thresholding (one
    pass).
    """
    out = node.outputs[0]
    if out == graph.output or any(iv.get(t) is None for t in node.inputs):
        return False
    users = graph.consumers(out)
    if len(users) != 1:
        return False
    user = users[0]
    if node.op == "ConvolutionInputGenerator":
        return user.op in ("MVAU", "Pool")
    if node.op == "FMPadding":
        if user.op != "ConvolutionInputGenerator" or not _fusable(
            user, graph, {**iv, out: iv[node.inputs[0]]}
        ):
            return False
        window_user = graph.consumers(user.outputs[0])[0]
        if window_user.op == "Pool":
            q, k = node.attrs["pad"], user.attrs["kernel"]
            return node.attrs["pad_value"] <= iv[node.inputs[0]].lo and 2 * q <= k
        return node.attrs["pad_value"] == 0
    if node.op == "AddStreams":
        return user.op == "Thresholding"
    return False


def _fused_interval(node: Node, iv: dict) -> Interval:
    x = iv[node.inputs[0]]
    if node.op == "FMPadding":
        value = node.attrs["pad_value"]
        return x.union(Interval(value, value))
    if node.op == "AddStreams":
        y = iv[node.inputs[1]]
        return Interval(x.lo + y.lo, x.hi + y.hi)
    return x


def _compile(node: Node, ivs: list[Interval | None], graph: Graph, fused: dict, iv: dict) -> Step:
    """One node's step; ``fused`` maps tensors to the producers run inside their consumer."""
    a, p = node.attrs, node.params
    out = node.outputs[0]
    shape = tuple(graph.tensors[out].shape)

    def step(kernel: str, interval: Interval | None, fn, inputs=None) -> Step:
        return Step(
            node.name, node.op, kernel, list(inputs or node.inputs), out, shape, interval, fn
        )

    if node.op in ("Affine", "LabelSelect"):  # tiny [N, classes] tensors: the reference's code

        def ref(*xs, ieee):
            ins = [
                v.numpy() if iv is None else v.to(torch.int64).numpy()
                for v, iv in zip(xs, ivs, strict=True)
            ]
            return torch.from_numpy(np.ascontiguousarray(run_node(node, ins)))

        return step("reference", None, ref)
    if any(v is None for v in ivs):
        raise GraphError(f"node {node.name}: {node.op} on a float tensor has no integer semantics")
    x = ivs[0]
    if node.op == "Thresholding":
        channels = graph.tensors[node.inputs[0]].shape[-1]
        add = fused.get(node.inputs[0])
        if add is None:
            thr = _thresholding(node, p["thresholds"], x, channels)
            return step(thr.kernel, thr.out, lambda v, ieee: thr.raw(v))
        u, w = (iv[t] for t in add.inputs)
        bound = max(u.mag, w.mag, x.mag)  # u, w and u + w (+ the shift) in any order
        thr = _thresholding(node, p["thresholds"], x, channels, bound)
        if thr.shift is not None:

            def add_thr(u, w, ieee):
                y = torch.add(u.to(torch.float32), thr.shift)
                return thr.fn(y.add_(w.to(torch.float32)))

            return step(f"add+{thr.kernel}", thr.out, add_thr, add.inputs)
        fmt = format_for(bound)
        return step(
            f"add+{thr.kernel}",
            thr.out,
            lambda u, w, ieee: thr.fn(u.to(fmt) + w.to(fmt)),
            add.inputs,
        )
    if node.op == "MVAU":
        window = fused.get(node.inputs[0])
        pad = None if window is None else fused.get(window.inputs[0])
        inputs = (pad or window or node).inputs
        return _mvau(node, x, lambda *args: step(*args, inputs), window, pad)
    if node.op == "FMPadding":
        q, value = a["pad"], a["pad_value"]
        iv = x.union(Interval(value, value))
        fmt = format_for(iv.mag)
        return step("pad", iv, lambda v, ieee: F.pad(v.to(fmt), (0, 0, q, q, q, q), value=value))
    if node.op == "ConvolutionInputGenerator":
        k, s = a["kernel"], a["stride"]
        return step("im2col-view", x, lambda v, ieee: _windows(v, k, s))
    if node.op == "Pool":
        return _pool(node, x, step, fused.get(node.inputs[0]), fused, iv)
    if node.op == "StreamingMaxPool":
        k = a["kernel"]

        def maxpool(v, ieee):
            if v.dtype == torch.float32:  # channels-last max_pool2d: same windows, max is exact
                return F.max_pool2d(v.permute(0, 3, 1, 2), k, k).permute(0, 2, 3, 1)
            n, h, w, c = v.shape
            v = v[:, : h // k * k, : w // k * k]
            return v.reshape(n, h // k, k, w // k, k, c).amax(dim=(2, 4))

        return step("maxpool", x, maxpool)
    if node.op == "AddStreams":
        y = ivs[1]
        iv = Interval(x.lo + y.lo, x.hi + y.hi)
        fmt = format_for(max(iv.mag, x.mag, y.mag))
        return step("add", iv, lambda u, v, ieee: u.to(fmt) + v.to(fmt))
    if node.op == "DownSampler":
        s = a["stride"]
        return step("slice", x, lambda v, ieee: v[:, ::s, ::s, :])
    if node.op == "ChannelPad":
        before, after = a["before"], a["after"]
        iv = x.union(Interval(0, 0))
        return step("pad", iv, lambda v, ieee: F.pad(v, (before, after)))
    if node.op == "StreamingConcat":
        iv = x.union(*ivs[1:])
        fmt = format_for(iv.mag)
        return step("concat", iv, lambda *vs, ieee: torch.cat([v.to(fmt) for v in vs], dim=-1))
    if node.op == "GlobalAccPool":
        positions = int(np.prod(graph.tensors[node.inputs[0]].shape[:-1]))
        iv = Interval(positions * x.lo, positions * x.hi)  # every partial sum lies within
        fmt = format_for(iv.mag)
        return step("sum", iv, lambda v, ieee: v.to(fmt).sum(dim=(1, 2)))
    raise GraphError(f"node {node.name}: the fast path has no kernel for {node.op!r}")


def _pool(node: Node, x: Interval, step, window: Node | None, fused: dict, iv: dict) -> Step:
    """Max over windows: with its window (and padding) fused, torch's max_pool2d on the map,
    else the max over each position's k*k taps. A max only selects one of its inputs, so it
    is exact in any format; torch's -inf padding gives the maxima of the fused padding, whose
    value is no larger than any input (and torch pads at most k / 2, so every window holds
    an input): the output lies within the unpadded input's interval."""
    k, c = node.attrs["kernel"], node.attrs["channels"]
    if window is None:

        def taps(v, ieee):
            n, oh, ow, _ = v.shape
            return v.reshape(n, oh, ow, k * k, c).amax(dim=3)

        return step("maxpool-taps", x, taps)
    pad = fused.get(window.inputs[0])
    s, q = window.attrs["stride"], 0 if pad is None else pad.attrs["pad"]
    src = (pad or window).inputs
    out = iv[src[0]]

    def maxpool(v, ieee):
        if v.dtype in (torch.float32, torch.float64):
            return F.max_pool2d(v.permute(0, 3, 1, 2), k, s, padding=q).permute(0, 2, 3, 1)
        if q:  # int64: pad with the smallest input value, then each window's max
            v = F.pad(v, (0, 0, q, q, q, q), value=out.lo)
        w = _windows(v, k, s)
        return w.reshape(*w.shape[:3], k * k, c).amax(dim=3)

    return step("maxpool-pad" if q else "maxpool", out, maxpool, src)


def _windows(v: torch.Tensor, k: int, s: int) -> torch.Tensor:
    """[N, H, W, C] -> [N, OH, OW, k, k, C] strided view; flattening gives (kh, kw, c) order."""
    n, h, w, c = v.shape
    v = v.contiguous()
    oh, ow = (h - k) // s + 1, (w - k) // s + 1
    sn, sh, sw, sc = v.stride()
    view = v.as_strided((n, oh, ow, k, k, c), (sn, sh * s, sw * s, sh, sw, sc))
    return view.reshape(n, oh, ow, k * k * c)


def conv_is_exact() -> bool:
    """Whether torch's CPU float32 conv2d is a plain sum of products right now.

    With NNPACK switched off (as :meth:`Plan.run` does) torch dispatches a float32 CPU
    convolution to oneDNN (direct algorithm: jit/brgemm/gemm kernels, no Winograd) or to its
    own im2col + sgemm; both only multiply and add, in full float32 unless oneDNN's or the
    matmul's reduced-precision modes are on.
    """
    return fp32_gemm_is_ieee() and torch.backends.mkldnn.conv.fp32_precision in ("none", "ieee")


def _mvau(node: Node, x: Interval, step, window: Node | None, pad: Node | None) -> Step:
    w = node.params["weights"].astype(np.int64)
    lo = np.where(w > 0, w * x.lo, w * x.hi).sum(axis=1)
    hi = np.where(w > 0, w * x.hi, w * x.lo).sum(axis=1)
    acc = Interval(int(lo.min()), int(hi.max()))
    # every partial sum and product of any summation order is bounded by sum|w| * max|x|
    bound = max(int(np.abs(w).sum(axis=1).max(initial=0)) * x.mag, x.mag)
    fmt = format_for(bound)
    weights = {
        torch.float32: torch.from_numpy(w.T.astype(np.float32)),
        torch.float64: torch.from_numpy(w.T.astype(np.float64)),
        torch.int64: torch.from_numpy(np.ascontiguousarray(w.T)),
    }
    name = {torch.float32: "gemm-f32", torch.float64: "gemm-f64", torch.int64: "gemm-i64"}[fmt]
    thr = None
    if "thresholds" in node.params:
        thr = _thresholding(node, node.params["thresholds"], acc, w.shape[0], bound)
    # a shift (thresholds folded into a per-channel bias) implies bound + |shift| <= 2^24
    # (2^23 for half-integer shifts): every partial sum, bias added anywhere, is exact
    shift = None if thr is None else thr.shift

    def gemm(v: torch.Tensor, ieee: bool) -> torch.Tensor:
        use = torch.float64 if fmt == torch.float32 and not ieee else fmt
        y = torch.matmul(v.to(use), weights[use])
        # a float64 accumulator of |acc| <= bound converts exactly; + shift stays exact
        return y if shift is None else y.to(torch.float32).add_(shift)

    run = gemm
    if window is not None:
        k, s = window.attrs["kernel"], window.attrs["stride"]
        q = 0 if pad is None else pad.attrs["pad"]
        # [MH, (kh, kw, c)] -> [MH, c, kh, kw], channels-last like the NHWC activations
        kernel = torch.from_numpy(
            w.reshape(w.shape[0], k, k, -1).transpose(0, 3, 1, 2).astype(np.float32)
        ).contiguous(memory_format=torch.channels_last)

        def conv(v: torch.Tensor, ieee: bool) -> torch.Tensor:
            if fmt == torch.float32 and conv_is_exact():
                y = F.conv2d(
                    v.to(torch.float32).permute(0, 3, 1, 2), kernel, bias=shift, stride=s, padding=q
                )
                return y.permute(0, 2, 3, 1)
            if q:
                v = F.pad(v, (0, 0, q, q, q, q))  # fused FMPadding (pad value 0)
            return gemm(_windows(v, k, s), ieee)

        run, name = conv, name.replace("gemm", "conv") + ("-pad" if q else "")
    if thr is None:
        return step(name, acc, run)
    return step(f"{name}+{thr.kernel}", thr.out, lambda v, ieee: thr.fn(run(v, ieee)))


@dataclass
class Thresholds:
    """A compiled Thresholding: out = out_bias + out_scale * #(x >= thr[c]) per channel c.

    With ``shift`` (float32 [C]) ``fn`` takes x + shift as a float32 tensor it may overwrite
    (a producing convolution adds the shift as its bias); without, ``fn`` takes x itself.
    """

    kernel: str
    out: Interval
    shift: torch.Tensor | None
    fn: Callable[[torch.Tensor], torch.Tensor] = field(repr=False)

    def raw(self, v: torch.Tensor) -> torch.Tensor:
        """The thresholds applied to x (any exact format)."""
        if self.shift is None:
            return self.fn(v)
        return self.fn(torch.add(v.to(torch.float32), self.shift))


def _thresholding(
    node: Node, thr: np.ndarray, x: Interval, channels: int, bound: int | None = None
) -> Thresholds:
    """Compile thresholds over inputs in ``x``, computed with partial sums of magnitude at most
    ``bound`` (default: |x|): shifted float32 kernels when bound + |shift| <= 2^23, where
    float32 holds every multiple of 1/2 (so every partial sum, with the shift added anywhere,
    is exact); otherwise integer compares or searchsorted."""
    b, s = int(node.attrs["out_bias"]), int(node.attrs["out_scale"])
    thr = np.broadcast_to(thr, (channels, thr.shape[1])).astype(np.int64)
    steps = thr.shape[1]
    out = Interval(min(b, b + s * steps), max(b, b + s * steps))
    ofmt = format_for(out.mag)
    bound = x.mag if bound is None else bound
    room = SHIFT_EXACT - bound  # the largest |shift| the float32 argument allows
    room_int = F32_EXACT - bound  # the same for integer shifts: all partial sums integers
    small_out = 2 * out.mag <= SHIFT_EXACT  # out and (b + s/2) +- s/2 are exact float32
    # clipping keeps #(x >= t) for every x in [lo, hi]: t < lo -> lo (always), t > hi -> hi + 1
    clipped = np.clip(thr, x.lo, x.hi + 1)
    span = x.hi - x.lo + 1
    if steps == 1:
        t = clipped[:, 0]
        if small_out and int(np.abs(t).max(initial=0)) + 1 <= room:
            # y = x - t + 1/2 is never 0: sign(y) = +1 iff x >= t; out = b + s/2 + s/2 * sign
            mid, half = b + s / 2, s / 2
            shift = torch.from_numpy(0.5 - t.astype(np.float64)).to(torch.float32)

            def sign(y: torch.Tensor) -> torch.Tensor:
                y = y.sign_()
                return y if (mid, half) == (0, 1) else y.mul_(half).add_(mid)

            return Thresholds("thr-sign", out, shift, sign)
        t = torch.from_numpy(t.copy()).to(format_for(x.mag + 1))
        hit, miss = torch.tensor(b + s, dtype=ofmt), torch.tensor(b, dtype=ofmt)
        return Thresholds(
            "thr-cmp", out, None, lambda v: torch.where(v.to(t.dtype) >= t, hit, miss)
        )
    if small_out and span * channels <= LUT_MAX and x.mag <= F32_EXACT:
        table = _table(x, thr, b, s)  # [span, C], the reference's own threshold
        affine = _affine_kernel(x, table, b, s, out, steps)
        if affine is not None:
            return Thresholds("thr-affine", out, None, affine)
        if span * channels + abs(x.lo) <= room_int:
            # y = x - lo + c * span in [c * span, (c + 1) * span): the row of channel c
            lut = torch.from_numpy(table.T.reshape(-1)).to(torch.float32)
            shift = torch.from_numpy(np.arange(channels) * span - x.lo).to(torch.float32)

            def lookup(y: torch.Tensor) -> torch.Tensor:
                return lut.index_select(0, y.to(torch.int32).reshape(-1)).view(y.shape)

            return Thresholds("thr-lut", out, shift, lookup)
    bits = _bucket_bits(clipped, span)
    buckets = ((span - 1) >> bits) + 1
    if small_out and bits and buckets * channels <= LUT_MAX and abs(x.lo) <= room_int:
        return _bucket_kernel(clipped, x, bits, b, s, out)
    # channel c's values and clipped thresholds live in [lo, hi + 1] + c * (span + 1): one
    # sorted array, and #(flat <= v) = c * steps + #(own thresholds <= v)
    gap = span + 1
    if (abs(x.lo) + gap * channels) > I64_SAFE:
        raise GraphError(f"node {node.name}: threshold input range {x.lo}..{x.hi} too wide")
    shift = torch.arange(channels, dtype=torch.int64) * gap
    flat = torch.from_numpy(
        (np.sort(clipped, axis=1) + np.arange(channels)[:, None] * gap).reshape(-1)
    )
    base = torch.arange(channels, dtype=torch.int64) * steps

    def search(v: torch.Tensor) -> torch.Tensor:
        count = torch.searchsorted(flat, v.to(torch.int64) + shift, right=True) - base
        return (count * s + b).to(ofmt)

    return Thresholds("thr-search", out, None, search)


def _table(x: Interval, thr: np.ndarray, b: int, s: int) -> np.ndarray:
    """[span, C] outputs of the reference's own ``threshold`` for every x in [lo, hi]."""
    rows = max(1, 2**22 // thr.size)  # bounds the [rows, C, steps] comparison
    return np.concatenate(
        [
            threshold(np.arange(v, min(v + rows, x.hi + 1))[:, None], thr, b, s)
            for v in range(x.lo, x.hi + 1, rows)
        ]
    )


def _affine_kernel(x: Interval, table: np.ndarray, b: int, s: int, out: Interval, steps: int):
    """A verified affine form of a threshold table, or None.

    count(x) = #(x >= thr[c]) of a uniform requantizer is clamp(floor(a_c x + b_c), 0, steps)
    for some reals a_c, b_c. For a fixed a the feasible b form an interval [L(a), U(a)), and
    U - L is concave in a, so a ternary search per channel finds the widest; the float32
    kernel (IEEE multiply, add, floor, clamp: each elementwise and correctly rounded, hence
    the same function of x on any tensor) is then run on every integer of [lo, hi] and kept
    only if it reproduces the table exactly.
    """
    counts = (table - b) // s  # table = b + s * count, count in [0, steps]
    xs = np.arange(x.lo, x.hi + 1, dtype=np.float64)[:, None]

    def bounds(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        v = counts - a * xs
        lower = np.where(counts > 0, v, -np.inf).max(axis=0)
        upper = np.where(counts < steps, v + 1, np.inf).min(axis=0)
        return lower, upper

    lo_a, hi_a = np.zeros(counts.shape[1]), np.full(counts.shape[1], 16.0)
    for _ in range(60):  # 16 (2/3)^60 < 1e-9: far finer than the float32 a it becomes
        m1, m2 = lo_a + (hi_a - lo_a) / 3, hi_a - (hi_a - lo_a) / 3
        g1, g2 = (np.subtract(*bounds(m)[::-1]) for m in (m1, m2))
        lo_a, hi_a = np.where(g1 < g2, m1, lo_a), np.where(g1 < g2, hi_a, m2)
    a = (lo_a + hi_a) / 2
    lower, upper = bounds(a)
    with np.errstate(invalid="ignore"):
        bias = np.where(
            np.isfinite(lower) & np.isfinite(upper),
            (lower + upper) / 2,
            np.where(np.isfinite(lower), lower + 0.5, upper - 0.5),
        )
    bias = np.nan_to_num(bias, nan=0.0, posinf=0.0, neginf=0.0)
    at = torch.from_numpy(a).to(torch.float32)
    if s == 1:  # fold out_bias: clamp(floor(a x + b + out_bias)) to [out_bias, out_bias + steps]
        bt = torch.from_numpy(bias + b).to(torch.float32)

        def affine(v: torch.Tensor) -> torch.Tensor:
            return torch.mul(v.to(torch.float32), at).add_(bt).floor_().clamp_(out.lo, out.hi)
    else:
        bt = torch.from_numpy(bias).to(torch.float32)

        def affine(v: torch.Tensor) -> torch.Tensor:
            q = torch.mul(v.to(torch.float32), at).add_(bt).floor_().clamp_(0, steps)
            return q.mul_(s).add_(b)

    got = affine(torch.from_numpy(np.broadcast_to(xs, table.shape).copy()))
    return affine if np.array_equal(got.numpy(), table) else None


def _bucket_bits(clipped: np.ndarray, span: int) -> int:
    """Largest k such that no 2^k-wide bucket holds two distinct thresholds of a channel."""
    gaps = [np.diff(np.unique(row)) for row in clipped]
    gap = min((int(g.min()) for g in gaps if g.size), default=span + 1)
    return gap.bit_length() - 1


def _bucket_kernel(
    clipped: np.ndarray, x: Interval, bits: int, b: int, s: int, out: Interval
) -> Thresholds:
    """Thresholds by bucket: x in bucket j = (x - lo) >> bits of channel c counts
    n0[j, c] (thresholds below the bucket) + m[j, c] * (x >= t[j, c]), the bucket's only
    distinct threshold t of multiplicity m. With y = x - lo (an integer in [0, 2^24)),
    floor(y * 2^-bits) * C + c indexes [bucket, channel] tables: the power-of-two scaling, the
    floor and the index arithmetic (< LUT_MAX) are exact on such integers, as are the compare
    and the multiply-add of small integers."""
    channels = clipped.shape[0]
    clipped = np.sort(clipped, axis=1)
    width = 1 << bits
    nb = ((x.hi - x.lo) >> bits) + 1
    starts = x.lo + width * np.arange(nb)
    n0 = np.stack([np.searchsorted(row, starts, "left") for row in clipped], axis=1)
    n1 = np.stack([np.searchsorted(row, starts + width, "left") for row in clipped], axis=1)
    inside = np.stack([row[np.minimum(n0[:, c], row.size - 1)] for c, row in enumerate(clipped)], 1)
    last = np.stack([row[np.maximum(n1[:, c] - 1, 0)] for c, row in enumerate(clipped)], 1)
    if ((n1 > n0) & (inside != last)).any():
        raise GraphError("threshold buckets hold two distinct thresholds (internal error)")
    t = np.where(n1 > n0, inside, starts[:, None])  # [nb, C]; no threshold: always, m = 0
    base = torch.from_numpy((b + s * n0).reshape(-1)).to(torch.float32)
    jump = torch.from_numpy((s * (n1 - n0)).reshape(-1)).to(torch.float32)
    tab = torch.from_numpy((t - x.lo).reshape(-1)).to(torch.float32)
    shift = torch.full((channels,), -x.lo, dtype=torch.float32)
    lanes = torch.arange(channels, dtype=torch.float32)
    scale = 1.0 / width

    def bucket(y: torch.Tensor) -> torch.Tensor:
        q = torch.mul(y, scale).floor_().mul_(channels).add_(lanes)
        idx = q.to(torch.int32).reshape(-1)
        flat = y.reshape(-1)
        hit = flat >= tab.index_select(0, idx)
        return jump.index_select(0, idx).mul_(hit).add_(base.index_select(0, idx)).view(y.shape)

    return Thresholds(f"thr-bucket{bits}", out, shift, bucket)
