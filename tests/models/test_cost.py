"""Memory and NCC against networks counted by hand (METHOD.md, "Cost metrics").

Memory follows the study's column: stored weights (and the scales defining them) only; BN
and activation-side parameters are counted apart, in ``folded_mb`` (hwbed.models.cost).
"""

from __future__ import annotations

import pytest
import torch

from hwbed.models.cost import model_cost
from hwbed.models.pruning import keep_count
from hwbed.models.zoo import build_model

MB = 8e6  # bits per MB (10^6 bytes)


def cifar_convs(depth=20, size=8, keep=lambda c: c):
    """(cin, cout, positions) of every inner 3x3 conv of a CIFAR ResNet on size x size,
    with ``keep(width)`` intermediate channels inside each block."""
    per_stage, out, cin = (depth - 2) // 6, [], 16
    for s, width in enumerate((16, 32, 64)):
        side = size // 2**s
        for _ in range(per_stage):
            mid = keep(width)
            out += [(cin, mid, side * side), (mid, width, side * side)]
            cin = width
    return out


def hand_resnet20(kind="float", m=1, n=1, w_bits=32, keep=lambda c: c):
    """Totals for resnet20 on 1x8x8 with 10 classes, by the METHOD rules.

    Returns (params, stored bits, MACs, NCC, folded bits): folded are the BN (and ABC
    activation-basis) parameters at 32 bits, which the memory does not count."""
    params = bits = macs = folded = 0
    ncc = 0.0
    # stem conv 1->16 3x3 on 64 positions and the classifier 64->10 (+bias): full precision
    for w, b, pos in [(16 * 9, 0, 64), (640, 10, 1)]:
        params += w + b
        bits += 32 * (w + b)
        macs += w * pos
        ncc += w * pos
    # batch norms: stem, and one per conv of every block, 4 numbers per channel: not stored
    bn_channels = 16 + sum(cout for _, cout, _ in cifar_convs(keep=keep))
    params += 4 * bn_channels
    folded += 32 * 4 * bn_channels
    for cin, cout, pos in cifar_convs(keep=keep):
        w = cin * cout * 9
        macs += w * pos
        if kind == "float":
            params += w
            bits += 32 * w
            ncc += w * pos
        elif kind == "xnor":
            params += w
            bits += w + 32 * cout  # one sign bit per weight, alpha per output channel
            ncc += w * pos / 48
        elif kind == "abc":
            params += w + m + n + n  # weights, alpha_m, beta_n, shift_n
            bits += m * w + 32 * m  # weight bases and their scales alpha_m
            folded += 32 * 2 * n  # activation bases: beta_n, shift_n
            ncc += w * pos * m * n / 48
        else:  # int
            params += w
            bits += w_bits * w + 32  # one per-tensor scale
            ncc += w * pos
    return params, bits, macs, ncc, folded


def _check(cost, params, bits, macs, ncc, folded=None):
    assert cost.params == params
    assert cost.macs == macs
    assert cost.memory_mb == pytest.approx(bits / MB, rel=1e-12)
    assert sum(r.memory_mb for r in cost.layers) == pytest.approx(cost.memory_mb, rel=1e-12)
    if folded is not None:
        assert cost.folded_mb == pytest.approx(folded / MB, rel=1e-12)
    for r in cost.layers:  # BN and activation scales: visible rows, no stored memory
        if r.kind in ("norm", "scales"):
            assert r.memory_mb == 0 and r.folded_mb == pytest.approx(32 * r.params / MB)
    assert cost.ncc_m == pytest.approx(ncc / 1e6, rel=1e-12)
    assert sum(r.macs for r in cost.layers) == cost.macs
    assert sum(r.ncc_m for r in cost.layers) == pytest.approx(cost.ncc_m, rel=1e-12)


def _cost(spec, shape=(1, 8, 8)):
    torch.manual_seed(0)
    return model_cost(build_model(spec, *shape, 10), spec, shape)


def test_resnet20_float_by_hand():
    params, bits, macs, ncc, folded = hand_resnet20()
    assert macs == 144 * 64 + 6 * 2304 * 64 + (4608 + 5 * 9216) * 16 + (18432 + 5 * 36864) * 4 + 640
    cost = _cost("resnet20")
    _check(cost, params, bits, macs, ncc, folded)
    assert cost.ncc_m * 1e6 == pytest.approx(cost.macs)
    assert cost.memory_mb + cost.folded_mb == pytest.approx(32 * cost.params / MB)
    assert cost.model == "resnet20"
    assert _cost("resnet20-kd").macs == cost.macs


def test_resnet20_xnor_by_hand():
    params, bits, macs, ncc, folded = hand_resnet20("xnor")
    # activation scales: the stem's stream quantizer and each block's output quantizer
    params += 10
    folded += 32 * 10
    cost = _cost("resnet20-xnor")
    _check(cost, params, bits, macs, ncc, folded)
    rows = {r.name: r for r in cost.layers}
    assert rows["stem_conv"].precision == "fp32" and rows["fc"].precision == "fp32"
    assert rows["blocks.0.convs.0.conv"].precision == "xnor"
    assert rows["blocks.0.convs.0.conv"].ncc_m == pytest.approx(2304 * 64 / 48 / 1e6)
    assert rows["activation scales"].params == 10


@pytest.mark.parametrize(("m", "n"), [(1, 1), (3, 3), (5, 2)])
def test_resnet20_abc_by_hand(m, n):
    params, bits, macs, ncc, folded = hand_resnet20("abc", m=m, n=n)
    params += 10
    folded += 32 * 10
    _check(_cost(f"resnet20-abc{m}x{n}"), params, bits, macs, ncc, folded)


@pytest.mark.parametrize("bits_w", [2, 4, 8])
def test_resnet20_int_by_hand(bits_w):
    params, bits, macs, ncc, folded = hand_resnet20("int", w_bits=bits_w)
    # activation scales: the stem's and each block's output quantizer (10), one per ReLU
    # quantizer in front of each inner conv (18), each block's branch requantizer (9)
    params += 10 + 18 + 9
    folded += 32 * 37
    cost = _cost(f"resnet20-w{bits_w}a4")
    _check(cost, params, bits, macs, ncc, folded)
    assert {r.precision for r in cost.layers if r.kind == "conv"} == {"fp32", f"int{bits_w}"}


@pytest.mark.parametrize("rate", [50, 30])
@pytest.mark.parametrize("granularity", ["filter", "channel"])
def test_structured_pruned_resnet20_by_hand(granularity, rate):
    params, bits, macs, ncc, folded = hand_resnet20(keep=lambda c: keep_count(c, rate / 100))
    cost = _cost(f"resnet20-prune-{granularity}{rate}")
    _check(cost, params, bits, macs, ncc, folded)
    assert cost.macs < _cost("resnet20").macs


@pytest.mark.parametrize(("granularity", "rate"), [("weight", 50), ("kernel", 50), ("weight", 70)])
def test_masked_pruned_resnet20_by_hand(granularity, rate):
    params, bits, macs, ncc, folded = hand_resnet20()
    for cin, cout, pos in cifar_convs():
        n = cin * cout * (9 if granularity == "weight" else 1)
        removed = (n - keep_count(n, rate / 100)) * (1 if granularity == "weight" else 9)
        params -= removed
        bits -= 32 * removed
        macs -= removed * pos
        ncc -= removed * pos
    _check(_cost(f"resnet20-prune-{granularity}{rate}"), params, bits, macs, ncc, folded)


def test_tfc_w1a1_by_hand():
    # 64 -> 64 -> 64 -> 64 -> 10, no biases, BatchNorm1d after the hidden layers, TensorNorm
    first, hidden, last = 64 * 64, 64 * 64, 64 * 10
    params = first + 2 * hidden + last + 3 * 4 * 64 + 4
    bits = 32 * first + 2 * (hidden + 32) + 32 * last  # BN and TensorNorm not stored
    macs = first + 2 * hidden + last
    ncc = first + 2 * hidden / 48 + last
    cost = _cost("tfc-w1a1")
    _check(cost, params, bits, macs, ncc, folded=32 * (3 * 4 * 64 + 4))
    assert [r.precision for r in cost.layers if r.kind == "linear"] == [
        "fp32",
        "binary",
        "binary",
        "fp32",
    ]


def test_tfc_w2a2_counts_multibit_macs_fully():
    first, hidden, last = 64 * 64, 64 * 64, 64 * 10
    cost = _cost("tfc-w2a2")
    assert cost.ncc_m == pytest.approx((first + 2 * hidden + last) / 1e6)
    assert [r.precision for r in cost.layers if r.kind == "linear"] == [
        "fp32",
        "int2",
        "int2",
        "fp32",
    ]


def test_cnv_w1a1_macs():
    # CNV: 3x3 valid convs 3-64-64 | pool | 64-128-128 | pool | 128-256-256, FC 256-512-512-10
    convs = [(3, 64, 30), (64, 64, 28), (64, 128, 12), (128, 128, 10), (128, 256, 3), (256, 256, 1)]
    fcs = [(256, 512), (512, 512), (512, 10)]
    macs = sum(ci * co * 9 * s * s for ci, co, s in convs) + sum(i * o for i, o in fcs)
    binary = macs - 3 * 64 * 9 * 900 - 5120
    cost = _cost("cnv-w1a1", (3, 32, 32))
    assert cost.macs == macs
    assert cost.ncc_m == pytest.approx((3 * 64 * 9 * 900 + 5120 + binary / 48) / 1e6)


def test_resnet18_xnor_keeps_downsampling_convs_full_precision():
    cost = _cost("resnet18-xnor", (3, 32, 32))
    rows = [r for r in cost.layers if ".shortcut." in r.name and r.kind == "conv"]
    assert len(rows) == 3
    for r, (cin, cout) in zip(rows, [(64, 128), (128, 256), (256, 512)], strict=True):
        assert r.precision == "fp32"
        assert r.params == cin * cout
        assert r.memory_mb == pytest.approx(32 * cin * cout / MB)
        assert r.ncc_m == pytest.approx(r.macs / 1e6)
    abc = _cost("resnet18-abc1x1", (3, 32, 32))
    assert all(
        r.precision == "abc1x1" for r in abc.layers if ".shortcut." in r.name and r.kind == "conv"
    )


def test_binary_networks_are_cheaper():
    float_cost, xnor, abc = _cost("resnet20"), _cost("resnet20-xnor"), _cost("resnet20-abc3x3")
    assert xnor.memory_mb < abc.memory_mb < float_cost.memory_mb
    assert xnor.ncc_m < abc.ncc_m < float_cost.ncc_m
    assert xnor.macs == abc.macs == float_cost.macs


def test_cost_leaves_the_model_as_it_was():
    model = build_model("resnet20-w4a4", 1, 8, 8, 10).train()
    hooks = sum(len(m._forward_hooks) for m in model.modules())
    model_cost(model, "resnet20-w4a4", (1, 8, 8))
    assert model.training
    assert sum(len(m._forward_hooks) for m in model.modules()) == hooks


# --- the memory convention on networks written out by hand ---------------------------------


def test_resnet20_xnor_memory_written_out():
    """resnet20-xnor on 1x8x8: the study's memory (stored weights and alpha), BN apart."""
    stem = 1 * 16 * 9 * 32  # full-precision first conv, no bias
    fc = (64 * 10 + 10) * 32  # full-precision classifier with bias
    binary = 6 * 16 * 16 * 9 + (16 * 32 * 9 + 5 * 32 * 32 * 9) + (32 * 64 * 9 + 5 * 64 * 64 * 9)
    assert binary == 13_824 + 50_688 + 202_752  # one bit per weight
    alpha = (6 * 16 + 6 * 32 + 6 * 64) * 32  # one 32-bit alpha per output channel
    assert stem + fc + binary + alpha == 314_176
    bn = (16 + 6 * 16 + 6 * 32 + 6 * 64) * 4 * 32  # 688 channels, 4 numbers each
    act_scales = 10 * 32  # stem stream quantizer and 9 block output quantizers
    cost = _cost("resnet20-xnor")
    assert cost.memory_mb == pytest.approx(0.039272, rel=1e-12) == 314_176 / MB
    assert cost.folded_mb == pytest.approx((bn + act_scales) / MB, rel=1e-12)
    assert cost.folded_mb == pytest.approx(0.011048, rel=1e-12)
    norms = [r for r in cost.layers if r.kind == "norm"]
    assert len(norms) == 19 and all(r.memory_mb == 0 for r in norms)


def test_resnet20_abc3x3_memory_written_out():
    """Three weight bases of one bit each, alpha_m per layer; beta_n and shift_n not stored."""
    binary = 13_824 + 50_688 + 202_752
    stored = 1 * 16 * 9 * 32 + 650 * 32 + 3 * binary + 18 * 3 * 32  # 18 ABC convs, 3 alpha_m
    assert stored == 828_928
    cost = _cost("resnet20-abc3x3")
    assert cost.memory_mb == pytest.approx(stored / MB, rel=1e-12)
    bn, act_bases, act_scales = 688 * 4 * 32, 18 * (3 + 3) * 32, 10 * 32
    assert cost.folded_mb == pytest.approx((bn + act_bases + act_scales) / MB, rel=1e-12)


def test_tfc_w1a1_memory_written_out():
    """64 -> 64 -> 64 -> 64 -> 10 on 1x8x8: first and last at 32 bits, the two inner binary."""
    stored = 64 * 64 * 32 + 2 * (64 * 64 + 32) + 64 * 10 * 32  # inner: bits + one scale
    assert stored == 159_808
    cost = _cost("tfc-w1a1")
    assert cost.memory_mb == pytest.approx(stored / MB, rel=1e-12)
    assert cost.folded_mb == pytest.approx((3 * 64 * 4 + 4) * 32 / MB, rel=1e-12)  # BN, TensorNorm


# ResNet18's weights, layer by layer: 7x7 stem, four stages of 3x3 convs, 1x1 shortcuts, fc
R18_STEM = 3 * 64 * 49
R18_INNER = [64 * 64 * 9] * 4 + [64 * 128 * 9] + [128 * 128 * 9] * 3
R18_INNER += [128 * 256 * 9] + [256 * 256 * 9] * 3 + [256 * 512 * 9] + [512 * 512 * 9] * 3
R18_SHORTCUTS = [64 * 128, 128 * 256, 256 * 512]
R18_FC = 512 * 1000 + 1000
R18_BINARY_CHANNELS = 4 * (64 + 128 + 256 + 512)  # output channels of the inner convs


def test_resnet18_memory_written_out():
    weights = R18_STEM + sum(R18_INNER) + sum(R18_SHORTCUTS) + R18_FC
    assert weights == 11_679_912  # torchvision's 11,689,512 parameters less BN's 2 x 4,800
    shape = (3, 32, 32)  # memory does not depend on the input size
    torch.manual_seed(0)
    cost = model_cost(build_model("resnet18", *shape, 1000), "resnet18", shape)
    assert cost.memory_mb == pytest.approx(32 * weights / MB, rel=1e-12) == 46.719648
    assert cost.folded_mb == pytest.approx(4 * 4800 * 32 / MB, rel=1e-12)
    xnor = model_cost(build_model("resnet18-xnor", *shape, 1000), "resnet18-xnor", shape)
    stored = 32 * (R18_STEM + sum(R18_SHORTCUTS) + R18_FC) + sum(R18_INNER)
    stored += 32 * R18_BINARY_CHANNELS  # alpha
    assert xnor.memory_mb == pytest.approx(stored / MB, rel=1e-12) == 4.166304
