"""The model-spec grammar shared by every CLI and API.

``<arch>[-kd][-prune-<g>[<rate>]][-xnor|-abc<M>x<N>|-w<W>a<A>]``, or ``<arch>-vanilla``.

Architectures
    ``resnet20 resnet32 resnet44 resnet56`` (CIFAR-style, option-A shortcuts),
    ``resnet18 resnet50`` (ImageNet-style), ``cnv tfc lfc sfc`` (FINN's BNN-PYNQ networks).
Parts, each optional, in this order
    ``kd``                  trained by distillation from a teacher
    ``prune-<g>[<rate>]``   g in filter|channel|kernel|weight, rate in percent (default 50)
    ``xnor``                XNOR-Net: binary weights, per-channel alpha, sign activations
    ``abc<M>x<N>``          ABC-Net: M binary weight bases, N binary activation bases
    ``w<W>a<A>``            uniform integer quantization, W-bit weights, A-bit activations
Without a precision part the network is full precision (``vanilla`` alone says so).
Examples: ``resnet20``, ``resnet56-kd``, ``resnet20-prune-filter30``, ``resnet20-xnor``,
``resnet20-abc3x3``, ``cnv-w1a1``, ``resnet20-prune-filter50-w8a8``, ``resnet20-kd-xnor``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CIFAR_RESNETS = {"resnet20": 20, "resnet32": 32, "resnet44": 44, "resnet56": 56}
IMAGENET_RESNETS = {"resnet18": 18, "resnet50": 50}
BNN_PYNQ = ("cnv", "tfc", "lfc", "sfc")
ARCHS = (*CIFAR_RESNETS, *IMAGENET_RESNETS, *BNN_PYNQ)
PRUNE_GRANULARITIES = ("filter", "channel", "kernel", "weight")
GRAMMAR = "<arch>[-kd][-prune-<g>[<rate>]][-xnor|-abc<M>x<N>|-w<W>a<A>]"

_PRUNE_RE = re.compile(r"^(?P<g>[a-z]+?)(?P<rate>\d+)?$")
_ABC_RE = re.compile(r"^abc(?P<m>\d+)x(?P<n>\d+)$")
_INT_RE = re.compile(r"^w(?P<w>\d+)a(?P<a>\d+)$")
_ORDER = ("kd", "prune", "precision")


class SpecError(ValueError):
    """A model spec that does not follow the grammar or names an unsupported combination."""


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec.

    ``quant`` is the precision (float, xnor, abc, int); ``kd`` and ``prune`` say how the
    network was compressed besides, independently of its precision.
    """

    arch: str
    quant: str = "float"
    kd: bool = False
    prune: str | None = None
    rate: float = 0.0
    m: int = 0
    n: int = 0
    w_bits: int = 32
    a_bits: int = 32

    @property
    def name(self) -> str:
        """Canonical spelling, e.g. ``resnet20-kd-prune-filter50-w8a8``."""
        return "-".join(p for p in (self.arch, _compression(self), self.precision) if p)

    @property
    def precision(self) -> str:
        """The precision part of the name: ``""``, ``xnor``, ``abc<M>x<N>`` or ``w<W>a<A>``."""
        return {
            "float": "",
            "xnor": "xnor",
            "abc": f"abc{self.m}x{self.n}",
            "int": f"w{self.w_bits}a{self.a_bits}",
        }[self.quant]

    @property
    def quantized(self) -> bool:
        """True when the network is built from Brevitas quant layers."""
        return self.quant != "float"

    @property
    def binary(self) -> bool:
        """True for XNOR and ABC networks (binary inner layers)."""
        return self.quant in ("xnor", "abc")

    @property
    def family(self) -> str:
        """``cifar-resnet``, ``imagenet-resnet`` or ``bnn-pynq``."""
        if self.arch in CIFAR_RESNETS:
            return "cifar-resnet"
        if self.arch in IMAGENET_RESNETS:
            return "imagenet-resnet"
        return "bnn-pynq"

    def at_precision(self, precision: str) -> ModelSpec:
        """This network at another precision, e.g. ``"w8a8"``, or ``""`` for full precision."""
        return parse_spec("-".join(p for p in (self.arch, _compression(self), precision) if p))

    def __str__(self) -> str:
        return self.name


def _compression(spec: ModelSpec) -> str:
    """The parts between the architecture and the precision, e.g. ``kd-prune-filter50``."""
    parts = ["kd"] if spec.kd else []
    if spec.prune is not None:
        parts.append(f"prune-{spec.prune}{round(spec.rate * 100)}")
    return "-".join(parts)


def parse_spec(text: str | ModelSpec) -> ModelSpec:
    """Parse a spec (see the module docstring); raise :class:`SpecError` naming the bad part."""
    if isinstance(text, ModelSpec):
        return text
    s = text.strip().lower()
    arch, sep, variant = s.partition("-")
    if arch not in ARCHS:
        raise SpecError(
            f"unknown architecture {arch!r} in spec {text!r}; known: {', '.join(ARCHS)}"
        )
    if sep and not variant:
        raise SpecError(f"empty variant after '-' in spec {text!r}; drop the '-' for vanilla")
    if variant == "vanilla":
        return ModelSpec(arch)
    if "vanilla" in variant.split("-"):
        raise SpecError(
            f"'vanilla' stands alone in {text!r}: it means full precision with no other part; "
            f"grammar: {GRAMMAR}"
        )
    fields: dict = {}
    seen: list[str] = []
    tokens = variant.split("-") if variant else []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token == "prune":
            if i + 1 == len(tokens):
                raise SpecError(_unknown("prune", text, "prune needs -<g>[<rate>]"))
            part, used = "prune", _prune(tokens[i + 1], text)
            i += 1
        elif token == "kd":
            part, used = "kd", {"kd": True}
        else:
            part, used = "precision", _precision(token, text)
        if part in seen:
            raise SpecError(f"{text!r} names the {part} part twice; grammar: {GRAMMAR}")
        if seen and _ORDER.index(part) < _ORDER.index(seen[-1]):
            raise SpecError(
                f"{token!r} comes after the {seen[-1]} part in {text!r}; "
                f"the parts go in this order: {GRAMMAR}"
            )
        seen.append(part)
        fields.update(used)
        i += 1
    spec = ModelSpec(arch, **fields)
    _check_supported(spec, text)
    return spec


def _unknown(token: str, text: str, hint: str = "") -> str:
    return (
        f"unknown variant {token!r} in spec {text!r}; expected vanilla, kd, "
        f"prune-<{'|'.join(PRUNE_GRANULARITIES)}>[<rate%>], xnor, abc<M>x<N> or w<W>a<A>"
        + (f" ({hint})" if hint else "")
        + f"; grammar: {GRAMMAR}"
    )


def _prune(token: str, text: str) -> dict:
    mt = _PRUNE_RE.match(token)
    if mt is None or mt["g"] not in PRUNE_GRANULARITIES:
        raise SpecError(_unknown(f"prune-{token}", text))
    rate = int(mt["rate"]) if mt["rate"] is not None else 50
    if not 0 < rate < 100:
        raise SpecError(f"pruning rate must be within 1..99 percent, got {rate} in {text!r}")
    return {"prune": mt["g"], "rate": rate / 100}


def _precision(token: str, text: str) -> dict:
    if token == "xnor":
        return {"quant": "xnor", "w_bits": 1, "a_bits": 1}
    if mt := _ABC_RE.match(token):
        m, n = int(mt["m"]), int(mt["n"])
        if not (1 <= m <= 8 and 1 <= n <= 8):
            raise SpecError(f"ABC bases must be within 1..8, got M={m}, N={n} in {text!r}")
        return {"quant": "abc", "m": m, "n": n, "w_bits": 1, "a_bits": 1}
    if mt := _INT_RE.match(token):
        w, a = int(mt["w"]), int(mt["a"])
        if not (1 <= w <= 8 and 1 <= a <= 8):
            raise SpecError(f"bit widths must be within 1..8, got w{w}a{a} in {text!r}")
        return {"quant": "int", "w_bits": w, "a_bits": a}
    raise SpecError(_unknown(token, text))


def _check_supported(spec: ModelSpec, text: str) -> None:
    if spec.family == "bnn-pynq" and spec.binary:
        raise SpecError(
            f"variant {spec.quant!r} is not defined for {spec.arch} in {text!r}; "
            f"the BNN-PYNQ networks take vanilla, kd or w<W>a<A> (e.g. {spec.arch}-w1a1)"
        )
    if spec.family == "bnn-pynq" and spec.prune is not None:
        raise SpecError(
            f"prune-{spec.prune} is not defined for {spec.arch} in {text!r}; "
            "pruning acts on the residual blocks of the ResNets"
        )
    if spec.family != "bnn-pynq" and spec.quant == "int" and (spec.w_bits < 2 or spec.a_bits < 2):
        raise SpecError(f"{text!r}: ResNet w<W>a<A> needs W, A >= 2 (use -xnor for binary ResNets)")
