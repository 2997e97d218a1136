"""The model-spec grammar: valid specs, canonical names, and a clear message for every error."""

from __future__ import annotations

import pytest

from hwbed.models.spec import ARCHS, BNN_PYNQ, ModelSpec, SpecError, parse_spec

RESNETS = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet18", "resnet50")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("resnet20", ModelSpec("resnet20")),
        ("resnet20-vanilla", ModelSpec("resnet20")),
        ("resnet56-kd", ModelSpec("resnet56", kd=True)),
        ("resnet20-xnor", ModelSpec("resnet20", "xnor", w_bits=1, a_bits=1)),
        ("resnet20-prune-filter", ModelSpec("resnet20", prune="filter", rate=0.5)),
        ("resnet20-prune-filter30", ModelSpec("resnet20", prune="filter", rate=0.3)),
        ("resnet18-prune-channel", ModelSpec("resnet18", prune="channel", rate=0.5)),
        ("resnet44-prune-kernel75", ModelSpec("resnet44", prune="kernel", rate=0.75)),
        ("resnet50-prune-weight1", ModelSpec("resnet50", prune="weight", rate=0.01)),
        ("resnet32-prune-weight99", ModelSpec("resnet32", prune="weight", rate=0.99)),
        ("resnet20-abc3x3", ModelSpec("resnet20", "abc", m=3, n=3, w_bits=1, a_bits=1)),
        ("resnet18-abc5x1", ModelSpec("resnet18", "abc", m=5, n=1, w_bits=1, a_bits=1)),
        ("resnet20-w4a4", ModelSpec("resnet20", "int", w_bits=4, a_bits=4)),
        ("resnet20-w2a8", ModelSpec("resnet20", "int", w_bits=2, a_bits=8)),
        ("cnv-w1a1", ModelSpec("cnv", "int", w_bits=1, a_bits=1)),
        ("tfc-w1a2", ModelSpec("tfc", "int", w_bits=1, a_bits=2)),
        ("lfc-kd", ModelSpec("lfc", kd=True)),
        ("sfc", ModelSpec("sfc")),
        ("  ResNet20-XNOR ", ModelSpec("resnet20", "xnor", w_bits=1, a_bits=1)),
        ("resnet20-kd-xnor", ModelSpec("resnet20", "xnor", kd=True, w_bits=1, a_bits=1)),
        (
            "resnet20-prune-filter50-w8a8",
            ModelSpec("resnet20", "int", prune="filter", rate=0.5, w_bits=8, a_bits=8),
        ),
        (
            "resnet56-kd-prune-weight30-abc3x1",
            ModelSpec(
                "resnet56", "abc", kd=True, prune="weight", rate=0.3, m=3, n=1, w_bits=1, a_bits=1
            ),
        ),
        ("resnet56-kd-w8a8", ModelSpec("resnet56", "int", kd=True, w_bits=8, a_bits=8)),
        ("cnv-kd-w2a2", ModelSpec("cnv", "int", kd=True, w_bits=2, a_bits=2)),
    ],
)
def test_valid_specs(text, expected):
    assert parse_spec(text) == expected


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("resnet20", "resnet20"),
        ("resnet20-vanilla", "resnet20"),
        ("RESNET56-KD", "resnet56-kd"),
        ("resnet20-prune-filter", "resnet20-prune-filter50"),
        ("resnet20-prune-channel050", "resnet20-prune-channel50"),
        ("resnet20-prune-kernel29", "resnet20-prune-kernel29"),
        ("resnet20-prune-weight57", "resnet20-prune-weight57"),
        ("resnet20-abc1x1", "resnet20-abc1x1"),
        ("resnet20-w4a4", "resnet20-w4a4"),
        ("cnv-w1a1", "cnv-w1a1"),
        ("resnet20-kd-prune-filter-w8a8", "resnet20-kd-prune-filter50-w8a8"),
        ("RESNET18-PRUNE-CHANNEL050-XNOR", "resnet18-prune-channel50-xnor"),
    ],
)
def test_canonical_names(text, name):
    spec = parse_spec(text)
    assert spec.name == name
    assert str(spec) == name
    assert parse_spec(spec.name) == spec  # the canonical name parses back to the same spec


@pytest.mark.parametrize("rate", range(1, 100))
def test_every_prune_rate_round_trips(rate):
    spec = parse_spec(f"resnet20-prune-weight{rate}")
    assert spec.name == f"resnet20-prune-weight{rate}"
    assert spec.rate == rate / 100


@pytest.mark.parametrize(
    ("text", "precision", "expected"),
    [
        ("resnet20", "w8a8", "resnet20-w8a8"),
        ("resnet20-kd-prune-filter30", "w8a8", "resnet20-kd-prune-filter30-w8a8"),
        ("resnet20-prune-channel50-xnor", "", "resnet20-prune-channel50"),
        ("cnv-kd", "w2a2", "cnv-kd-w2a2"),
    ],
)
def test_at_precision_keeps_the_compression(text, precision, expected):
    assert parse_spec(text).at_precision(precision).name == expected


def test_every_composition_round_trips():
    precisions = ("", "xnor", "abc3x1", "w8a8")
    prunes = (
        "",
        *(f"prune-{g}{r}" for g in ("filter", "channel", "kernel", "weight") for r in (1, 50)),
    )
    for kd in ("", "kd"):
        for prune in prunes:
            for precision in precisions:
                name = "-".join(p for p in ("resnet32", kd, prune, precision) if p)
                assert parse_spec(name).name == name


def test_parse_spec_passes_a_spec_through():
    spec = ModelSpec("resnet20", "xnor", w_bits=1, a_bits=1)
    assert parse_spec(spec) is spec


@pytest.mark.parametrize(
    ("text", "quantized", "binary", "family"),
    [
        ("resnet20", False, False, "cifar-resnet"),
        ("resnet20-kd", False, False, "cifar-resnet"),
        ("resnet20-prune-filter", False, False, "cifar-resnet"),
        ("resnet20-xnor", True, True, "cifar-resnet"),
        ("resnet18-abc3x3", True, True, "imagenet-resnet"),
        ("resnet50-w4a4", True, False, "imagenet-resnet"),
        ("cnv-w1a1", True, False, "bnn-pynq"),
        ("tfc", False, False, "bnn-pynq"),
    ],
)
def test_properties(text, quantized, binary, family):
    spec = parse_spec(text)
    assert (spec.quantized, spec.binary, spec.family) == (quantized, binary, family)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("resnet21", ["unknown architecture", "'resnet21'", "known: resnet20"]),
        ("", ["unknown architecture"]),
        ("vgg16-xnor", ["unknown architecture", "'vgg16'"]),
        ("resnet20-", ["empty variant", "resnet20-"]),
        ("resnet20-foo", ["unknown variant", "'foo'", "abc<M>x<N>", "prune-<filter|channel"]),
        ("resnet20-xnor-kd", ["'kd' comes after the precision part", "in this order", "[-kd]"]),
        ("resnet20-w8a8-prune-filter", ["'prune' comes after the precision part"]),
        ("resnet20-prune-filter-kd", ["'kd' comes after the prune part"]),
        ("resnet20-kd-kd", ["names the kd part twice"]),
        ("resnet20-xnor-w8a8", ["names the precision part twice"]),
        ("resnet20-prune-filter-prune-kernel", ["names the prune part twice"]),
        ("resnet20-vanilla-kd", ["'vanilla' stands alone"]),
        ("resnet20-kd-foo", ["unknown variant", "'foo'"]),
        ("resnet20-kd-prune-filter0-xnor", ["pruning rate", "got 0"]),
        ("cnv-kd-xnor", ["not defined for cnv"]),
        ("tfc-prune-weight-w2a2", ["prune-weight is not defined for tfc"]),
        ("resnet20-kd-w1a2", ["needs W, A >= 2"]),
        ("resnet20-prune", ["unknown variant"]),
        ("resnet20-prune-neuron", ["unknown variant", "'prune-neuron'"]),
        ("resnet20-prune-filter-30", ["unknown variant"]),
        ("resnet20-prune-filter0", ["pruning rate", "1..99", "got 0"]),
        ("resnet20-prune-filter100", ["pruning rate", "got 100"]),
        ("resnet20-prune-weight250", ["pruning rate", "got 250"]),
        ("resnet20-abc0x3", ["ABC bases", "M=0"]),
        ("resnet20-abc3x9", ["ABC bases", "N=9"]),
        ("resnet20-abc3", ["unknown variant"]),
        ("resnet20-w0a4", ["bit widths", "w0a4"]),
        ("resnet20-w4a9", ["bit widths", "w4a9"]),
        ("resnet20-w4", ["unknown variant"]),
        ("resnet20-w1a1", ["needs W, A >= 2", "-xnor"]),
        ("resnet18-w4a1", ["needs W, A >= 2"]),
        ("cnv-xnor", ["not defined for cnv", "cnv-w1a1"]),
        ("tfc-abc3x3", ["not defined for tfc"]),
        ("lfc-prune-filter", ["not defined for lfc"]),
    ],
)
def test_errors_have_clear_messages(text, fragments):
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_spec_error_is_a_value_error():
    assert issubclass(SpecError, ValueError)


def test_grammar_covers_the_listed_archs():
    assert set(ARCHS) == {*RESNETS, *BNN_PYNQ}
    for arch in ARCHS:
        assert parse_spec(arch).arch == arch
