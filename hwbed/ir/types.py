"""Tensor types of the integer graph (qonnx/FINN DataType names) and the graph's error."""

from __future__ import annotations

from dataclasses import dataclass


class GraphError(ValueError):
    """A graph that is malformed, or an operation the lowering cannot map exactly."""


@dataclass(frozen=True)
class IntType:
    """Integer tensor type: ``bipolar`` ({-1, +1}), ``uint<bits>``, ``int<bits>``, or float32.

    ``frac`` fractional bits make it a fixed-point type (value = integer * 2^-frac);
    ``ternary`` is int2 restricted to {-1, 0, +1} (binary activations with zero padding).
    """

    kind: str
    bits: int
    frac: int = 0

    @property
    def is_integer(self) -> bool:
        return self.kind != "float"

    @property
    def min(self) -> int:
        if not self.is_integer:
            raise GraphError(f"{self} has no integer range")
        return {"bipolar": -1, "uint": 0, "int": -(2 ** (self.bits - 1)), "ternary": -1}[self.kind]

    @property
    def max(self) -> int:
        if not self.is_integer:
            raise GraphError(f"{self} has no integer range")
        return {
            "bipolar": 1,
            "uint": 2**self.bits - 1,
            "int": 2 ** (self.bits - 1) - 1,
            "ternary": 1,
        }[self.kind]

    @property
    def finn(self) -> str:
        """FINN's DataType name (BIPOLAR, UINT8, INT9, FIXED<w,i>, FLOAT32)."""
        if self.kind == "float":
            return "FLOAT32"
        if self.kind == "bipolar":
            return "BIPOLAR"
        if self.kind == "ternary":
            return "TERNARY"
        if self.frac:
            return f"FIXED<{self.bits},{self.bits - self.frac}>"
        return f"{self.kind.upper()}{self.bits}"

    def __str__(self) -> str:
        return self.finn

    @staticmethod
    def parse(text: str) -> IntType:
        t = text.upper()
        if t == "FLOAT32":
            return FLOAT32
        if t == "BIPOLAR":
            return BIPOLAR
        if t == "TERNARY":
            return TERNARY
        if t.startswith("FIXED<") and t.endswith(">"):
            parts = t[6:-1].split(",")
            if len(parts) == 2 and all(v.strip().isdigit() for v in parts):
                bits, ints = (int(v) for v in parts)
                if 0 <= ints <= bits and bits > 0:
                    return IntType("int", bits, bits - ints)
        for kind in ("UINT", "INT"):
            digits = t[len(kind) :]
            if t.startswith(kind) and digits.isdigit() and int(digits) > 0:
                return IntType(kind.lower(), int(digits))
        raise GraphError(f"unknown data type {text!r}")

    @staticmethod
    def fitting(lo: int, hi: int) -> IntType:
        """Smallest uint/int type holding every integer in [lo, hi]."""
        if lo >= 0:
            return IntType("uint", max(1, int(hi).bit_length()))
        bits = max(int(-lo - 1).bit_length(), int(hi).bit_length()) + 1
        return IntType("int", bits)


BIPOLAR = IntType("bipolar", 1)
TERNARY = IntType("ternary", 2)
FLOAT32 = IntType("float", 32)
