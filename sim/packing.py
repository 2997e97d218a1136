"""Two INT8 products per DSP multiplier (Xilinx WP486), with correction and depth limit.

Products a*c and b*c that share ``c`` come out of one multiply ((a << S) + D) * c: the
pre-adder forms A + D with A = a << S and D = b, INMODE = 00100, B = c.  A chain of K MACs
leaves P = sum(a*c) * 2**S + sum(b*c).  The low field is signed(P[S-1:0]); the high field is
(P >>> S) + P[S-1] (a negative low field borrows one from the high field).

The low field holds an S-bit signed sum, so a chain may be at most ``max_depth`` long;
longer chains must be drained into fabric accumulators (:meth:`Int8Packing.dot_drained`).
S defaults to 18 on DSP48E2 (27-bit pre-adder) and 17 on DSP48E1 (25-bit pre-adder, where
the shifted operand must avoid -128 when b < 0: the default E1 ``a_range`` is [-127, 127]).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from hwbed.sim.dsp48 import (
    INMODE_D_PLUS_A,
    Family,
    OpCount,
    SliceConfig,
    accumulate,
    to_signed,
)

_DEFAULT_SHIFT = {Family.E1: 17, Family.E2: 18}


@dataclass(frozen=True)
class Int8Packing:
    """A packing of two products sharing operand ``c`` into one slice.

    a_range, b_range, c_range: inclusive operand ranges the hardware must accept (a is the
    shifted operand, b the low one, c the shared B-port operand).  ``None`` for a_range
    means [-128, 127] on E2 and [-127, 127] on E1.  Construction raises ValueError when a
    corner of the ranges overflows the pre-adder, or when no chain (K >= 1) is exact.
    """

    family: Family = Family.E2
    shift: int | None = None
    a_range: tuple[int, int] | None = None
    b_range: tuple[int, int] = (-128, 127)
    c_range: tuple[int, int] = (-128, 127)

    def __post_init__(self) -> None:
        if self.shift is None:
            object.__setattr__(self, "shift", _DEFAULT_SHIFT[self.family])
        if self.a_range is None:
            lo = -127 if self.family is Family.E1 else -128
            object.__setattr__(self, "a_range", (lo, 127))
        for name in ("a_range", "b_range", "c_range"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name} is empty")
        w = self.family.amult_bits
        for a, b in itertools.product(self.a_range, self.b_range):
            packed = a * (1 << self.shift) + b
            if not -(1 << (w - 1)) <= packed < 1 << (w - 1):
                raise ValueError(
                    f"pre-adder overflow on {self.family.name}: a={a}, b={b} gives {packed}, "
                    f"outside the signed {w}-bit range; narrow a_range or b_range"
                )
        for name, port, bits in (("b_range", "D", w), ("c_range", "B", 18)):
            lo, hi = getattr(self, name)
            if lo < -(1 << (bits - 1)) or hi >= 1 << (bits - 1):
                raise ValueError(f"{name} does not fit the signed {bits}-bit {port} port")
        if self.max_depth < 1:
            raise ValueError(f"shift={self.shift} leaves no room for even one product")

    @property
    def config(self) -> SliceConfig:
        """The slice configuration used for packed MACs."""
        return SliceConfig(family=self.family, use_mult=True, use_preadder=True)

    @property
    def max_depth(self) -> int:
        """Longest chain K for which both fields are exact for every operand in range.

        Low field: K * min(b*c) >= -2**(S-1) and K * max(b*c) <= 2**(S-1) - 1.  Whole P:
        K times the packed product ((a << S) + b) * c stays inside the signed 48-bit range.
        """
        s = self.shift
        corners = list(itertools.product(self.a_range, self.b_range, self.c_range))
        low = [b * c for _, b, c in corners]
        whole = [(a * (1 << s) + b) * c for a, b, c in corners]
        limits = [k for k in (_depth(low, s), _depth(whole, 48)) if k is not None]
        if not limits:
            raise ValueError("all products are zero: the depth is unbounded")
        return min(limits)

    def pack(self, a, b) -> tuple[np.ndarray, np.ndarray]:
        """Port values (A, D) for operands a (shifted) and b; checks the declared ranges."""
        a = _in_range("a", a, self.a_range)
        b = _in_range("b", b, self.b_range)
        return a << self.shift, b

    def unpack(self, p) -> tuple[np.ndarray, np.ndarray]:
        """(sum a*c, sum b*c) from P (signed or 48-bit pattern), with the borrow correction."""
        s = self.shift
        p = to_signed(p, 48)
        lo = to_signed(p, s)
        hi = (p >> s) + (p >> (s - 1) & 1)
        return hi, lo

    def dot(self, a, b, c, counter: OpCount | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact (sum_k a*c, sum_k b*c) over axis 0 through one packed slice chain per element.

        a, b, c broadcast to ``(K, ...)``; raises ValueError when K > max_depth or an operand
        lies outside its declared range.  ``counter.packed_int8`` grows by the slice ops used.
        """
        a, b, c = np.broadcast_arrays(np.asarray(a), np.asarray(b), np.asarray(c))
        if a.ndim == 0:
            raise ValueError("dot needs a leading reduction axis")
        k = a.shape[0]
        if k > self.max_depth:
            raise ValueError(
                f"packed chain of depth {k} exceeds max_depth={self.max_depth}: the low field "
                "could overflow into the high one; drain earlier (dot_drained)"
            )
        a_port, d_port = self.pack(a, b)
        c = _in_range("c", c, self.c_range)
        p = accumulate(self.config, a_port, c, d=d_port, inmode=INMODE_D_PLUS_A)
        if counter is not None:
            counter.packed_int8 += a.size
        return self.unpack(p)

    def dot_drained(self, a, b, c, counter: OpCount | None = None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`dot` over any K: chains of at most max_depth, summed in (int64) fabric."""
        a, b, c = np.broadcast_arrays(np.asarray(a), np.asarray(b), np.asarray(c))
        if a.ndim == 0:
            raise ValueError("dot_drained needs a leading reduction axis")
        hi = np.zeros(a.shape[1:], dtype=np.int64)
        lo = np.zeros(a.shape[1:], dtype=np.int64)
        for start in range(0, a.shape[0], self.max_depth):
            sl = slice(start, start + self.max_depth)
            h, l_ = self.dot(a[sl], b[sl], c[sl], counter)
            hi += h
            lo += l_
        return hi, lo


def _depth(values: list[int], bits: int) -> int | None:
    """Largest K with K*min(values) >= -2**(bits-1), K*max(values) < 2**(bits-1); None: any."""
    half = 1 << (bits - 1)
    hi, lo = max(values), min(values)
    limits = [
        k
        for k in ((half - 1) // hi if hi > 0 else None, half // -lo if lo < 0 else None)
        if k is not None
    ]
    return min(limits) if limits else None


def _in_range(name: str, value, rng: tuple[int, int]) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"operand {name} must hold integers, got dtype {arr.dtype}")
    if arr.size and (arr.min() < rng[0] or arr.max() > rng[1]):
        raise ValueError(f"operand {name} outside its declared range {list(rng)}")
    return arr.astype(np.int64)
