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
  every partial sum and product is bounded by B_j = sum_k |w_jk| * max|x|, the largest
  accumulator over inputs in [-max|x|, max|x|] (:func:`hwbed.ir.ops.mvau.acc_range`). The
  GEMM runs in the narrowest format whose exact range holds max_j B_j (float32 GEMM for
  every binary and small-int layer; float64 for e.g. the ResNet FC over pooled sums; int64
  otherwise). BLAS sgemm never uses Strassen-like algorithms; torch's reduced-precision
  fp32 matmul modes (bf16/tf32) would break the argument, so float32 GEMMs are promoted to
  float64 whenever :func:`fp32_gemm_is_ieee` is false at run time. Convolutions are im2col
  (a strided view) plus GEMM: torch's conv2d is avoided because NNPACK/Winograd transforms
  are not exact.
- **Thresholds** count exactly: a table over the proven input interval built with the
  reference's own :func:`~hwbed.ir.reference.threshold`, one compare for a single step,
  or an int64 ``searchsorted`` of channel-offset thresholds clipped to the interval
  (clipping to [lo, hi + 1] keeps every count for inputs in [lo, hi]).
- **Pooling, padding, windows, adds, concatenation, flattening** move or add integers within
  the proven ranges, hence exact in the chosen format. Ops without a kernel (``Affine``,
  ``LabelSelect``) run the reference's own code on int64 inputs.

Each op registers its :class:`Kernel` in :data:`KERNELS` (how it compiles, and whether it
runs inside its consumer's step); the declared fallback is the reference's code. The plan is
a list of steps over numbered slots: a batch costs one call per step; what does not depend
on the values is decided at compile time, and the torch settings exactness depends on are
read once per run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from hwbed.ir.backend import Backend
from hwbed.ir.graph import Graph, Node
from hwbed.ir.opdef import op_def
from hwbed.ir.opkit import Proven
from hwbed.ir.ops.mvau import acc_range
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


def conv_is_exact() -> bool:
    """Whether torch's CPU float32 conv2d is a plain sum of products right now.

    With NNPACK switched off (as :meth:`Plan.run` does) torch dispatches a float32 CPU
    convolution to oneDNN (direct algorithm: jit/brgemm/gemm kernels, no Winograd) or to its
    own im2col + sgemm; both only multiply and add, in full float32 unless oneDNN's or the
    matmul's reduced-precision modes are on.
    """
    return fp32_gemm_is_ieee() and torch.backends.mkldnn.conv.fp32_precision in ("none", "ieee")


def format_for(bound: int) -> torch.dtype:
    """The narrowest exact number format for integers of magnitude <= ``bound``."""
    if bound <= F32_EXACT:
        return torch.float32
    if bound <= F64_EXACT:
        return torch.float64
    if bound <= I64_SAFE:
        return torch.int64
    raise GraphError(f"proven magnitude {bound} exceeds int64; no exact fast path")


def _to(v: torch.Tensor, fmt: torch.dtype) -> torch.Tensor:
    """``v`` in format ``fmt`` (no call into torch when it already is)."""
    return v if v.dtype == fmt else v.to(fmt)


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
    interval: Interval | None
    fn: Callable[..., torch.Tensor] = field(repr=False)


class _Settings:
    """The torch settings the kernels' exactness depends on, read once per run."""

    __slots__ = ("conv", "ieee")

    def __init__(self):
        self.ieee = self.conv = False

    def read(self) -> None:
        self.ieee, self.conv = fp32_gemm_is_ieee(), conv_is_exact()


class _Compiler:
    """Compilation state: the graph, the proven intervals so far, the producers fused into
    their consumer's step (by output tensor) and the run-time settings."""

    def __init__(self, graph: Graph, settings: _Settings):
        self.graph, self.settings = graph, settings
        self.iv: dict[str, Interval | None] = {}
        self.fused: dict[str, Node] = {}

    def sole_user(self, node: Node) -> Node | None:
        """The only consumer of ``node``'s output, unless that is the graph output."""
        out = node.outputs[0]
        users = self.graph.consumers(out)
        return users[0] if len(users) == 1 and out != self.graph.output else None

    def fusion(self, node: Node) -> Interval | None:
        """``node``'s output interval if it runs inside its sole consumer's step, else None."""
        fuse = KERNELS.entry(node).fuse
        user = self.sole_user(node)
        if fuse is None or user is None or any(self.iv.get(t) is None for t in node.inputs):
            return None
        return fuse(self, node, user)

    def integers(self, node: Node) -> list[Interval]:
        """The proven intervals of ``node``'s inputs; a float input has no integer kernel."""
        ivs = [self.iv.get(t) for t in node.inputs]
        if any(v is None for v in ivs):
            raise GraphError(
                f"node {node.name}: {node.op} on a float tensor has no integer semantics"
            )
        return ivs

    def step(
        self,
        node: Node,
        kernel: str,
        interval: Interval | None,
        fn: Callable[..., torch.Tensor],
        inputs: list[str] | None = None,
    ) -> Step:
        ins = list(inputs or node.inputs)
        return Step(node.name, node.op, kernel, ins, node.outputs[0], interval, fn)


@dataclass(frozen=True)
class Kernel:
    """How the fast path runs one op: ``compile(c, node)`` returns its :class:`Step`;
    ``fuse(c, node, user)``, if given, returns the node's output interval when it runs inside
    its sole consumer ``user``'s step instead of its own (None: it does not)."""

    compile: Callable[[_Compiler, Node], Step]
    fuse: Callable[[_Compiler, Node, Node], Interval | None] | None = None


def _reference(c: _Compiler, node: Node) -> Step:
    """The reference's own code on int64 inputs (ops without a kernel: the tiny [N, classes]
    float head); the output's interval is the op's own proven range (None: float)."""
    ivs = [c.iv.get(t) for t in node.inputs]
    ins = [None if v is None else Proven(v.lo, v.hi) for v in ivs]
    proven = op_def(node).proven(c.graph, node, ins)
    ints = [v is not None for v in ivs]

    def ref(*xs):
        ins = [v.to(torch.int64).numpy() if i else v.numpy() for v, i in zip(xs, ints, strict=True)]
        return torch.from_numpy(np.ascontiguousarray(run_node(node, ins)))

    return c.step(
        node, "reference", None if proven is None else Interval(proven.lo, proven.hi), ref
    )


KERNELS: Backend[Kernel] = Backend("fast", fallback=Kernel(_reference), fallback_is="reference")
"""Op -> its :class:`Kernel`; an op without one runs the reference's code."""


def _kernel(*ops: str, fuse: Callable[[_Compiler, Node, Node], Interval | None] | None = None):
    """Decorator: register a compile function (and fusion rule) for ``ops``."""

    def add(compile: Callable[[_Compiler, Node], Step]):
        KERNELS.register(*ops)(Kernel(compile, fuse))
        return compile

    return add


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
        self._settings = _Settings()
        c = _Compiler(graph, self._settings)
        c.iv[graph.input] = self.input_interval
        needed = _ancestors(graph)
        self.steps: list[Step] = []
        for node in graph.nodes:
            out = node.outputs[0]
            if out not in needed:
                continue
            fused = c.fusion(node)
            if fused is not None:
                c.fused[out], c.iv[out] = node, fused
                continue
            step = KERNELS.entry(node).compile(c, node)
            c.iv[out] = step.interval
            self.steps.append(step)
        self.intervals = c.iv
        self._program, self._slots = _program(graph, self.steps)
        self._format = format_for(self.input_interval.mag)
        self._integer_output = c.iv[graph.output] is not None  # int64, as the reference

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
        self.graph.check_input(x)
        if x.dtype.kind not in "iu":
            raise GraphError(f"input pixels must be integers, got dtype {x.dtype}")
        lo, hi = self.input_interval.lo, self.input_interval.hi
        full_uint8 = x.dtype == np.uint8 and (lo, hi) == (0, 255)
        if x.size and not full_uint8 and (x.min() < lo or x.max() > hi):
            raise GraphError(
                f"input values {x.min()}..{x.max()} outside the graph input range {lo}..{hi}"
            )
        self._settings.read()
        # NNPACK's Winograd/FFT is inexact; inference mode skips autograd bookkeeping
        with torch.inference_mode(), torch.backends.nnpack.flags(enabled=False):
            if len(x) <= self.chunk:
                return self._run(x)
            starts = range(0, len(x), self.chunk)
            return np.concatenate([self._run(x[i : i + self.chunk]) for i in starts])

    def _run(self, x: np.ndarray) -> np.ndarray:
        env: list[torch.Tensor | None] = [None] * self._slots
        env[0] = torch.from_numpy(np.require(x, requirements="CW")).to(self._format)
        for fn, ins, out, free in self._program:
            env[out] = fn(*[env[i] for i in ins])
            for i in free:
                env[i] = None
        y = env[-1]
        return (y.to(torch.int64) if self._integer_output else y).numpy()


def compile_plan(graph: Graph, chunk: int = 64) -> Plan:
    """Compile ``graph`` once; ``chunk`` bounds the images run at a time (memory)."""
    return Plan(graph, chunk)


def execute(graph: Graph, pixels: np.ndarray) -> np.ndarray:
    """One-off fast execution (compiles a plan each call; keep a :class:`Plan` for batches)."""
    return Plan(graph).run(pixels)


def _ancestors(graph: Graph) -> set[str]:
    """Tensors the graph output depends on (LabelSelect and other side outputs are skipped)."""
    needed = {graph.output}
    for node in reversed(graph.nodes):
        if node.outputs[0] in needed:
            needed.update(node.inputs)
    return needed


def _program(graph: Graph, steps: list[Step]) -> tuple[list[tuple], int]:
    """The steps over numbered slots (the input first, the graph output last): (kernel, input
    slots, output slot, slots freed after it), and the number of slots."""
    order = [graph.input, *(s.output for s in steps if s.output != graph.output), graph.output]
    slot = {t: i for i, t in enumerate(dict.fromkeys(order))}
    last = {t: i for i, s in enumerate(steps) for t in s.inputs}
    program = [
        (
            s.fn,
            tuple(slot[t] for t in s.inputs),
            slot[s.output],
            tuple(slot[t] for t in dict.fromkeys(s.inputs) if last[t] == i and t != graph.output),
        )
        for i, s in enumerate(steps)
    ]
    return program, len(slot)


# -- kernels, one per op -------------------------------------------------------------------
_WINDOW_USERS = ("MVAU", "Pool")
"""Consumers that run a sliding window inside their own step (a convolution, a max pool)."""


def _window_fuse(c: _Compiler, node: Node, user: Node) -> Interval | None:
    """A sliding window feeding only an MVAU or a Pool runs inside it."""
    return c.iv[node.inputs[0]] if user.op in _WINDOW_USERS else None


@_kernel("ConvolutionInputGenerator", fuse=_window_fuse)
def _window(c: _Compiler, node: Node) -> Step:
    (x,) = c.integers(node)
    k, s = node.attrs["kernel"], node.attrs["stride"]
    return c.step(node, "im2col-view", x, lambda v: _windows(v, k, s))


def _pad_interval(c: _Compiler, node: Node) -> Interval:
    value = node.attrs["pad_value"]
    return c.iv[node.inputs[0]].union(Interval(value, value))


def _pad_fuse(c: _Compiler, node: Node, user: Node) -> Interval | None:
    """A padding feeding only a fused window: a convolution's zero ``padding``, or a max
    pool's -inf padding when the value is no larger than any input and every window holds an
    input (2 q <= k)."""
    window_user = c.sole_user(user)
    if user.op != "ConvolutionInputGenerator" or window_user is None:
        return None
    value, q = node.attrs["pad_value"], node.attrs["pad"]
    if window_user.op == "MVAU":
        fits = value == 0
    else:
        fits = window_user.op == "Pool" and value <= c.iv[node.inputs[0]].lo
        fits = fits and 2 * q <= user.attrs["kernel"]
    return _pad_interval(c, node) if fits else None


@_kernel("FMPadding", fuse=_pad_fuse)
def _pad(c: _Compiler, node: Node) -> Step:
    c.integers(node)
    q, value = node.attrs["pad"], node.attrs["pad_value"]
    iv = _pad_interval(c, node)
    fmt = format_for(iv.mag)
    return c.step(node, "pad", iv, lambda v: F.pad(_to(v, fmt), (0, 0, q, q, q, q), value=value))


def _add_fuse(c: _Compiler, node: Node, user: Node) -> Interval | None:
    """An add feeding only a Thresholding runs inside it (one pass)."""
    if user.op != "Thresholding":
        return None
    x, y = (c.iv[t] for t in node.inputs)
    return Interval(x.lo + y.lo, x.hi + y.hi)


@_kernel("AddStreams", fuse=_add_fuse)
def _add(c: _Compiler, node: Node) -> Step:
    x, y = c.integers(node)
    iv = Interval(x.lo + y.lo, x.hi + y.hi)
    fmt = format_for(max(iv.mag, x.mag, y.mag))
    return c.step(node, "add", iv, lambda u, v: _to(u, fmt) + _to(v, fmt))


@_kernel("Thresholding")
def _thresholds(c: _Compiler, node: Node) -> Step:
    (x,) = c.integers(node)
    thresholds = node.params["thresholds"]
    channels = c.graph.tensors[node.inputs[0]].shape[-1]
    add = c.fused.get(node.inputs[0])
    if add is None:
        thr = _thresholding(node, thresholds, x, channels)
        return c.step(node, thr.kernel, thr.out, thr.raw)
    u, w = (c.iv[t] for t in add.inputs)
    bound = max(u.mag, w.mag, x.mag)  # u, w and u + w (+ the shift) in any order
    thr = _thresholding(node, thresholds, x, channels, bound)
    kernel = f"add+{thr.kernel}"
    if thr.shift is not None:
        shift, fn = thr.shift, thr.fn

        def add_shifted(u, w):
            return fn(torch.add(_to(u, torch.float32), shift).add_(_to(w, torch.float32)))

        return c.step(node, kernel, thr.out, add_shifted, add.inputs)
    fmt, fn = format_for(bound), thr.fn
    return c.step(node, kernel, thr.out, lambda u, w: fn(_to(u, fmt) + _to(w, fmt)), add.inputs)


@_kernel("MVAU")
def _mvau_kernel(c: _Compiler, node: Node) -> Step:
    (x,) = c.integers(node)
    window = c.fused.get(node.inputs[0])
    pad = None if window is None else c.fused.get(window.inputs[0])
    return _mvau(c, node, x, window, pad)


@_kernel("Pool")
def _pool_kernel(c: _Compiler, node: Node) -> Step:
    (x,) = c.integers(node)
    return _pool(c, node, x, c.fused.get(node.inputs[0]))


@_kernel("StreamingMaxPool")
def _maxpool(c: _Compiler, node: Node) -> Step:
    (x,) = c.integers(node)
    k = node.attrs["kernel"]

    def maxpool(v):
        if v.dtype == torch.float32:  # channels-last max_pool2d: same windows, max is exact
            return F.max_pool2d(v.permute(0, 3, 1, 2), k, k).permute(0, 2, 3, 1)
        n, h, w, ch = v.shape
        v = v[:, : h // k * k, : w // k * k]
        return v.reshape(n, h // k, k, w // k, k, ch).amax(dim=(2, 4))

    return c.step(node, "maxpool", x, maxpool)


@_kernel("DownSampler")
def _downsample(c: _Compiler, node: Node) -> Step:
    (x,) = c.integers(node)
    s = node.attrs["stride"]
    return c.step(node, "slice", x, lambda v: v[:, ::s, ::s, :])


@_kernel("ChannelPad")
def _channel_pad(c: _Compiler, node: Node) -> Step:
    (x,) = c.integers(node)
    before, after = node.attrs["before"], node.attrs["after"]
    return c.step(node, "pad", x.union(Interval(0, 0)), lambda v: F.pad(v, (before, after)))


@_kernel("StreamingConcat")
def _concat(c: _Compiler, node: Node) -> Step:
    x, *rest = c.integers(node)
    iv = x.union(*rest)
    fmt = format_for(iv.mag)
    return c.step(node, "concat", iv, lambda *vs: torch.cat([_to(v, fmt) for v in vs], dim=-1))


@_kernel("GlobalAccPool")
def _global_acc_pool(c: _Compiler, node: Node) -> Step:
    (x,) = c.integers(node)
    positions = int(np.prod(c.graph.tensors[node.inputs[0]].shape[:-1]))
    iv = Interval(positions * x.lo, positions * x.hi)  # every partial sum lies within
    fmt = format_for(iv.mag)
    return c.step(node, "sum", iv, lambda v: _to(v, fmt).sum(dim=(1, 2)))


@_kernel("Flatten")
def _flatten(c: _Compiler, node: Node) -> Step:
    """[N, H, W, C] -> [N, H*W*C] in NHWC order: a view, values unchanged (any format)."""
    return c.step(node, "flatten", c.iv[node.inputs[0]], lambda v: v.flatten(1))


def _pool(c: _Compiler, node: Node, x: Interval, window: Node | None) -> Step:
    """Max over windows: with its window (and padding) fused, torch's max_pool2d on the map,
    else the max over each position's k*k taps. A max only selects one of its inputs, so it
    is exact in any format; torch's -inf padding gives the maxima of the fused padding, whose
    value is no larger than any input (and torch pads at most k / 2, so every window holds
    an input): the output lies within the unpadded input's interval."""
    k, ch = node.attrs["kernel"], node.attrs["channels"]
    if window is None:

        def taps(v):
            n, oh, ow, _ = v.shape
            return v.reshape(n, oh, ow, k * k, ch).amax(dim=3)

        return c.step(node, "maxpool-taps", x, taps)
    pad = c.fused.get(window.inputs[0])
    s, q = window.attrs["stride"], 0 if pad is None else pad.attrs["pad"]
    src = (pad or window).inputs
    out = c.iv[src[0]]

    def maxpool(v):
        if v.dtype in (torch.float32, torch.float64):
            return F.max_pool2d(v.permute(0, 3, 1, 2), k, s, padding=q).permute(0, 2, 3, 1)
        if q:  # int64: pad with the smallest input value, then each window's max
            v = F.pad(v, (0, 0, q, q, q, q), value=out.lo)
        w = _windows(v, k, s)
        return w.reshape(*w.shape[:3], k * k, ch).amax(dim=3)

    return c.step(node, "maxpool-pad" if q else "maxpool", out, maxpool, src)


def _windows(v: torch.Tensor, k: int, s: int) -> torch.Tensor:
    """[N, H, W, C] -> [N, OH, OW, k, k, C] strided view; flattening gives (kh, kw, c) order."""
    n, h, w, ch = v.shape
    v = v.contiguous()
    oh, ow = (h - k) // s + 1, (w - k) // s + 1
    sn, sh, sw, sc = v.stride()
    view = v.as_strided((n, oh, ow, k, k, ch), (sn, sh * s, sw * s, sh, sw, sc))
    return view.reshape(n, oh, ow, k * k * ch)


def _mvau(c: _Compiler, node: Node, x: Interval, window: Node | None, pad: Node | None) -> Step:
    w = node.params["weights"].astype(np.int64)
    lo, hi = acc_range(w, x.lo, x.hi)
    acc = Interval(int(lo.min()), int(hi.max()))
    # sum_k |w_jk| * max|x| (the range over [-|x|, |x|]) bounds every partial sum and
    # product of any summation order; the inputs must convert too
    _, rows = acc_range(w, -x.mag, x.mag)
    bound = max(int(rows.max(initial=0)), x.mag)
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
    settings = c.settings

    def gemm(v: torch.Tensor) -> torch.Tensor:
        use = torch.float64 if fmt == torch.float32 and not settings.ieee else fmt
        y = torch.matmul(_to(v, use), weights[use])
        # a float64 accumulator of |acc| <= bound converts exactly; + shift stays exact
        return y if shift is None else _to(y, torch.float32).add_(shift)

    run = gemm
    if window is not None:
        k, s = window.attrs["kernel"], window.attrs["stride"]
        q = 0 if pad is None else pad.attrs["pad"]
        # [MH, (kh, kw, c)] -> [MH, c, kh, kw], channels-last like the NHWC activations
        kernel = torch.from_numpy(
            w.reshape(w.shape[0], k, k, -1).transpose(0, 3, 1, 2).astype(np.float32)
        ).contiguous(memory_format=torch.channels_last)

        def conv(v: torch.Tensor) -> torch.Tensor:
            if fmt == torch.float32 and settings.conv:
                v = _to(v, torch.float32).permute(0, 3, 1, 2)
                return F.conv2d(v, kernel, bias=shift, stride=s, padding=q).permute(0, 2, 3, 1)
            if q:
                v = F.pad(v, (0, 0, q, q, q, q))  # fused FMPadding (pad value 0)
            return gemm(_windows(v, k, s))

        run, name = conv, name.replace("gemm", "conv") + ("-pad" if q else "")
    inputs = (pad or window or node).inputs
    if thr is None:
        return c.step(node, name, acc, run, inputs)
    fn = thr.fn
    return c.step(node, f"{name}+{thr.kernel}", thr.out, lambda v: fn(run(v)), inputs)


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
        return self.fn(torch.add(_to(v, torch.float32), self.shift))


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
            "thr-cmp", out, None, lambda v: torch.where(_to(v, t.dtype) >= t, hit, miss)
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
        count = torch.searchsorted(flat, _to(v, torch.int64) + shift, right=True) - base
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
            return torch.mul(_to(v, torch.float32), at).add_(bt).floor_().clamp_(out.lo, out.hi)
    else:
        bt = torch.from_numpy(bias).to(torch.float32)

        def affine(v: torch.Tensor) -> torch.Tensor:
            q = torch.mul(_to(v, torch.float32), at).add_(bt).floor_().clamp_(0, steps)
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
