"""The model-spec grammar shared by every CLI and API: ``<arch>[-<variant>]``.

Architectures
    ``resnet20 resnet32 resnet44 resnet56`` (CIFAR-style, option-A shortcuts),
    ``resnet18 resnet50`` (ImageNet-style), ``cnv tfc lfc sfc`` (FINN's BNN-PYNQ networks).
Variants
    (none) or ``vanilla``            full precision
    ``kd``                           full precision, trained by distillation from a teacher
    ``prune-<g>[<rate>]``            g in filter|channel|kernel|weight, rate in percent (default 50)
    ``xnor``                         XNOR-Net: binary weights, per-channel alpha, sign activations
    ``abc<M>x<N>``                   ABC-Net: M binary weight bases, N binary activation bases
    ``w<W>a<A>``                     uniform integer quantization, W-bit weights, A-bit activations
Examples: ``resnet20``, ``resnet56-kd``, ``resnet20-prune-filter30``, ``resnet20-xnor``,
``resnet20-abc3x3``, ``cnv-w1a1``, ``resnet20-w4a4``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CIFAR_RESNETS = {"resnet20": 20, "resnet32": 32, "resnet44": 44, "resnet56": 56}
IMAGENET_RESNETS = {"resnet18": 18, "resnet50": 50}
BNN_PYNQ = ("cnv", "tfc", "lfc", "sfc")
ARCHS = (*CIFAR_RESNETS, *IMAGENET_RESNETS, *BNN_PYNQ)
PRUNE_GRANULARITIES = ("filter", "channel", "kernel", "weight")

_VARIANT_RE = re.compile(
    r"^(?:(?P<vanilla>vanilla)|(?P<kd>kd)|(?P<xnor>xnor)"
    r"|prune-(?P<prune>filter|channel|kernel|weight)(?P<rate>\d+)?"
    r"|abc(?P<m>\d+)x(?P<n>\d+)|w(?P<w>\d+)a(?P<a>\d+))$"
)


class SpecError(ValueError):
    """A model spec that does not follow the grammar or names an unsupported combination."""


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec. ``kind`` is one of vanilla, kd, prune, xnor, abc, int."""

    arch: str
    kind: str = "vanilla"
    prune: str | None = None
    rate: float = 0.0
    m: int = 0
    n: int = 0
    w_bits: int = 32
    a_bits: int = 32

    @property
    def name(self) -> str:
        """Canonical spelling, e.g. ``resnet20-prune-filter50``."""
        suffix = {
            "vanilla": "",
            "kd": "-kd",
            "xnor": "-xnor",
            "prune": f"-prune-{self.prune}{round(self.rate * 100)}",
            "abc": f"-abc{self.m}x{self.n}",
            "int": f"-w{self.w_bits}a{self.a_bits}",
        }[self.kind]
        return self.arch + suffix

    @property
    def quantized(self) -> bool:
        """True when the network is built from Brevitas quant layers."""
        return self.kind in ("xnor", "abc", "int")

    @property
    def binary(self) -> bool:
        """True for XNOR and ABC networks (binary inner layers)."""
        return self.kind in ("xnor", "abc")

    @property
    def family(self) -> str:
        """``cifar-resnet``, ``imagenet-resnet`` or ``bnn-pynq``."""
        if self.arch in CIFAR_RESNETS:
            return "cifar-resnet"
        if self.arch in IMAGENET_RESNETS:
            return "imagenet-resnet"
        return "bnn-pynq"

    def __str__(self) -> str:
        return self.name


def parse_spec(text: str | ModelSpec) -> ModelSpec:
    """Parse ``<arch>[-<variant>]``; raise :class:`SpecError` naming what is wrong."""
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
    if not variant:
        return ModelSpec(arch)
    mt = _VARIANT_RE.match(variant)
    if mt is None:
        raise SpecError(
            f"unknown variant {variant!r} in spec {text!r}; expected vanilla, kd, xnor, "
            "abc<M>x<N>, "
            f"w<W>a<A> or prune-<{'|'.join(PRUNE_GRANULARITIES)}>[<rate%>]"
        )
    g = mt.groupdict()
    if g["vanilla"]:
        spec = ModelSpec(arch)
    elif g["kd"]:
        spec = ModelSpec(arch, "kd")
    elif g["xnor"]:
        spec = ModelSpec(arch, "xnor", w_bits=1, a_bits=1)
    elif g["prune"]:
        rate = int(g["rate"]) if g["rate"] is not None else 50
        if not 0 < rate < 100:
            raise SpecError(f"pruning rate must be within 1..99 percent, got {rate} in {text!r}")
        spec = ModelSpec(arch, "prune", prune=g["prune"], rate=rate / 100)
    elif g["m"]:
        m, n = int(g["m"]), int(g["n"])
        if not (1 <= m <= 8 and 1 <= n <= 8):
            raise SpecError(f"ABC bases must be within 1..8, got M={m}, N={n} in {text!r}")
        spec = ModelSpec(arch, "abc", m=m, n=n, w_bits=1, a_bits=1)
    else:
        w, a = int(g["w"]), int(g["a"])
        if not (1 <= w <= 8 and 1 <= a <= 8):
            raise SpecError(f"bit widths must be within 1..8, got w{w}a{a} in {text!r}")
        spec = ModelSpec(arch, "int", w_bits=w, a_bits=a)
    _check_supported(spec, text)
    return spec


def _check_supported(spec: ModelSpec, text: str) -> None:
    if spec.family == "bnn-pynq" and spec.kind not in ("vanilla", "kd", "int"):
        raise SpecError(
            f"variant {spec.kind!r} is not defined for {spec.arch} in {text!r}; "
            f"the BNN-PYNQ networks take vanilla, kd or w<W>a<A> (e.g. {spec.arch}-w1a1)"
        )
    if spec.family != "bnn-pynq" and spec.kind == "int" and (spec.w_bits < 2 or spec.a_bits < 2):
        raise SpecError(f"{text!r}: ResNet w<W>a<A> needs W, A >= 2 (use -xnor for binary ResNets)")
