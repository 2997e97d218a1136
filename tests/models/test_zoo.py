"""Every arch x variant builds and runs on small inputs; STE gradients; export-ready eval mode."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from brevitas.nn import QuantIdentity, QuantReLU

from hwbed.models.layers import AbcConv2d, XnorConv2d, option_a_shortcut
from hwbed.models.quantizers import BinaryAct, PixelQuant
from hwbed.models.resnet import QuantBlock, ResNet
from hwbed.models.spec import BNN_PYNQ, CIFAR_RESNETS, IMAGENET_RESNETS, SpecError, parse_spec
from hwbed.models.zoo import arch_config, build_model, input_size

RESNET_VARIANTS = (
    "",
    "-vanilla",
    "-kd",
    "-prune-filter",
    "-prune-channel30",
    "-prune-kernel",
    "-prune-weight",
    "-xnor",
    "-abc1x1",
    "-abc3x3",
    "-abc5x5",
    "-w2a2",
    "-w4a4",
    "-w8a8",
    "-w2a8",
)
BNN_VARIANTS = ("", "-kd", "-w1a1", "-w1a2", "-w2a2", "-w4a4")
# The default run covers every variant kind on every architecture family; the full cross
# product of archs and variant parameters (deep CIFAR ResNets, ResNet50, every ABC/int size)
# is marked slow, since building deep Brevitas networks costs seconds each on a small CPU.
DEFAULT = {
    "resnet20": set(RESNET_VARIANTS),
    "resnet32": {"", "-xnor"},
    "resnet44": {"", "-prune-filter"},
    "resnet56": {"", "-prune-channel30"},
    "resnet18": {
        "",
        "-kd",
        "-prune-filter",
        "-prune-channel30",
        "-prune-kernel",
        "-prune-weight",
        "-xnor",
        "-abc1x1",
        "-w4a4",
    },
    "resnet50": {"", "-prune-filter", "-prune-kernel", "-xnor"},
}
ALL_SPECS = [
    pytest.param(arch + v, marks=[] if v in DEFAULT[arch] else [pytest.mark.slow])
    for arch in (*CIFAR_RESNETS, *IMAGENET_RESNETS)
    for v in RESNET_VARIANTS
] + [arch + v for arch in BNN_PYNQ for v in BNN_VARIANTS]


def _shape(spec: str) -> tuple[int, int, int]:
    arch = parse_spec(spec).arch
    return (3, 32, 32) if arch in ("cnv", "resnet18", "resnet50") else (1, 8, 8)


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_forward_shapes_train_and_eval(spec):
    torch.manual_seed(0)
    shape = _shape(spec)
    model = build_model(spec, *shape, classes=7)
    x = torch.rand(2, *shape)
    model.train()
    out = model(x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("spec", ["resnet20", "resnet20-xnor", "resnet20-abc3x3", "resnet20-w4a4"])
def test_resnet_handles_other_input_sizes(spec):
    for shape in [(3, 32, 32), (1, 5, 7)]:
        model = build_model(spec, *shape, classes=10).eval()
        assert model(torch.rand(3, *shape)).shape == (3, 10)


def test_cnv_rejects_other_input_sizes():
    assert input_size("cnv-w1a1") == 32
    assert input_size("resnet20") is None
    with pytest.raises(ValueError, match="32x32"):
        build_model("cnv-w1a1", 3, 28, 28, 10)


def test_build_model_rejects_bad_spec():
    with pytest.raises(SpecError):
        build_model("resnet20-w1a1", 1, 8, 8, 10)


@pytest.mark.parametrize(
    ("arch", "blocks"),
    [
        ("resnet20", 9),
        ("resnet32", 15),
        ("resnet44", 21),
        ("resnet56", 27),
        ("resnet18", 8),
        ("resnet50", 16),
    ],
)
def test_resnet_depths(arch, blocks):
    model = build_model(arch, 3, 32, 32, 10)
    assert len(model.blocks) == blocks
    convs = sum(len(b.convs) for b in model.blocks)
    fc_and_stem = 2
    if arch in CIFAR_RESNETS:
        assert convs + fc_and_stem == CIFAR_RESNETS[arch]
    else:
        assert convs + fc_and_stem == IMAGENET_RESNETS[arch]
    expected = {"resnet18": 512, "resnet50": 2048}.get(arch, 64)
    assert model.fc.in_features == expected


def test_option_a_shortcut_subsamples_and_zero_pads():
    x = torch.arange(2 * 4 * 4 * 4, dtype=torch.float32).view(2, 4, 4, 4)
    y = option_a_shortcut(x, 8, 2)
    assert y.shape == (2, 8, 2, 2)
    assert torch.equal(y[:, 2:6], x[:, :, ::2, ::2])
    assert not y[:, :2].any() and not y[:, 6:].any()


def test_variant_layers():
    def kinds(spec):
        return {type(m).__name__ for m in build_model(spec, 1, 8, 8, 10).modules()}

    assert "XnorConv2d" in kinds("resnet20-xnor")
    assert "AbcConv2d" in kinds("resnet20-abc3x3") and "XnorConv2d" not in kinds("resnet20-abc3x3")
    assert "QuantConv2d" in kinds("resnet20-w4a4")
    assert not any(k.startswith("Quant") for k in kinds("resnet20"))
    assert kinds("resnet20-kd") == kinds("resnet20")
    # XNOR keeps ResNet18's 1x1 downsampling convs at 8 bits; ABC binarizes them
    xnor18 = build_model("resnet18-xnor", 3, 32, 32, 10)
    abc18 = build_model("resnet18-abc3x3", 3, 32, 32, 10)
    shortcuts = [b.shortcut for b in xnor18.blocks if b.shortcut is not None]
    assert len(shortcuts) == 3
    for s in shortcuts:
        assert not isinstance(s[0], XnorConv2d)
        assert int(s[0].quant_weight().bit_width) == 8
    assert all(isinstance(b.shortcut[0], AbcConv2d) for b in abc18.blocks if b.shortcut is not None)


# --- STE gradients -------------------------------------------------------------------------

GRAD_SPECS = [
    "resnet20",
    "resnet20-prune-filter",
    "resnet20-prune-kernel",
    "resnet20-xnor",
    "resnet20-abc1x1",
    "resnet20-abc3x3",
    "resnet20-w4a4",
    "resnet18-xnor",
    "resnet18-abc1x1",
    "cnv-w1a1",
    "cnv-w2a2",
    "tfc-w1a1",
    "sfc",
    pytest.param("resnet50-w2a2", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("spec", GRAD_SPECS)
def test_every_parameter_gets_a_gradient(spec, calibrated):
    torch.manual_seed(1)
    shape = _shape(spec)
    model = build_model(spec, *shape, classes=10)
    x, y = torch.rand(8, *shape), torch.arange(8) % 10
    calibrated(model, x)
    model.train()
    F.cross_entropy(model(x), y).backward()
    names = [n for n, _ in model.named_parameters()]
    assert names
    scale_grads = []
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{spec}: {name} gets no gradient"
        if "scaling_impl.value" in name:
            # a requantizer whose input already lies on its grid has a zero LSQ gradient
            # (round(x/s) - x/s = 0), e.g. a block output on the stream's own scale
            scale_grads.append(p.grad.abs().sum())
        else:
            assert p.grad.abs().sum() > 0, f"{spec}: {name} has an all-zero gradient"
    if scale_grads:
        assert sum(g > 0 for g in scale_grads) >= max(1, len(scale_grads) // 2), scale_grads
    # the parameters that make the variant must be among them
    if "xnor" in spec:
        assert any(n.endswith("convs.0.conv.weight") for n in names)
    if "abc" in spec:
        for leaf in ("alpha", "beta", "shift", "weight"):
            assert any(n.endswith(f"convs.0.{leaf}") for n in names), leaf
    if parse_spec(spec).quant == "int" and parse_spec(spec).family != "bnn-pynq":
        assert any("scaling_impl.value" in n for n in names)


def test_xnor_latent_weight_gradient_is_straight_through():
    """d/dW of sum(conv(x, sign(W)) * alpha) reaches W through sign (STE) and through alpha."""
    torch.manual_seed(2)
    layer = XnorConv2d(3, 4, 3, 1, 1)
    x = torch.randn(2, 3, 5, 5).sign()
    w = layer.weight.detach().clone().requires_grad_(True)
    ref = (
        F.conv2d(x, w + (w.sign() - w).detach(), padding=1)
        * w.abs().mean(dim=(1, 2, 3)).view(1, -1, 1, 1)
    ).sum()
    ref.backward()
    layer(x).sum().backward()
    torch.testing.assert_close(layer.weight.grad, w.grad)


# --- export-ready eval mode ----------------------------------------------------------------


def _binary_act_outputs(model):
    outs, hooks = [], []
    for m in model.modules():
        if isinstance(m, QuantIdentity) and int(m.act_quant.bit_width()) == 1:
            hooks.append(m.register_forward_hook(lambda _m, _i, o: outs.append(o.detach())))
    return outs, hooks


@pytest.mark.parametrize(
    "spec",
    [
        "resnet20-xnor",
        "resnet20-abc3x3",
        "resnet18-xnor",
        "resnet18-abc1x1",
        "cnv-w1a1",
        "tfc-w1a1",
        "sfc-w1a1",
    ],
)
def test_eval_binary_activations_are_exactly_pm1(spec, calibrated):
    torch.manual_seed(3)
    shape = _shape(spec)
    model = build_model(spec, *shape, classes=10)
    calibrated(model, torch.rand(8, *shape))
    model.eval()
    outs, hooks = _binary_act_outputs(model)
    with torch.no_grad():
        model(torch.rand(4, *shape))
    for h in hooks:
        h.remove()
    assert outs, "no binary activation quantizer ran"
    for o in outs:
        assert torch.isin(o, torch.tensor([-1.0, 1.0])).all()
        assert (o == 1).any() and (o == -1).any()


@pytest.mark.parametrize(
    "spec",
    [
        "resnet20",
        "resnet20-xnor",
        "resnet20-abc3x3",
        "resnet20-w4a4",
        "resnet20-prune-filter",
        "resnet20-prune-weight",
        "cnv-w1a1",
        "cnv",
        "tfc-w1a1",
        "resnet18-xnor",
    ],
)
def test_eval_outputs_are_deterministic(spec, calibrated):
    torch.manual_seed(4)
    shape = _shape(spec)
    model = build_model(spec, *shape, classes=10)
    calibrated(model, torch.rand(8, *shape))
    model.eval()
    x = torch.rand(5, *shape)
    with torch.no_grad():
        a, b = model(x), model(x)
        single = model(x[:1])
    assert torch.equal(a, b)
    if not parse_spec(spec).quantized:  # no batch statistics (float: up to conv rounding)
        torch.testing.assert_close(single, a[:1], rtol=1e-4, atol=1e-4)


def test_binary_act_is_sign_with_unit_scale():
    q = QuantIdentity(act_quant=BinaryAct).eval()
    out = q(torch.tensor([0.0, -0.0, 1e-6, -1e-6, 0.3, -0.3, 7.0, -7.0]))
    assert torch.equal(out, torch.tensor([1.0, 1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0]))


def test_pixel_quant_rounds_half_to_even_and_saturates():
    q = QuantIdentity(act_quant=PixelQuant).eval()
    out = q(torch.tensor([0.5, 1.5, 2.5, 17.2, 254.5, 254.6, 300.0, -3.0]))
    assert torch.equal(out, torch.tensor([0.0, 2.0, 2.0, 17.0, 254.0, 255.0, 255.0, 0.0]))


def test_xnor_conv_is_integer_before_alpha(calibrated):
    torch.manual_seed(5)
    model = build_model("resnet20-xnor", 1, 8, 8, 10)
    calibrated(model, torch.rand(8, 1, 8, 8))
    model.eval()
    seen = []

    def hook(xnor, inputs, out):
        x = inputs[0]
        inner = xnor.conv(x)
        seen.append((xnor, x, inner, out))

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, XnorConv2d)]
    with torch.no_grad():
        model(torch.rand(3, 1, 8, 8))
    for h in hooks:
        h.remove()
    assert len(seen) == 18
    for xnor, x, inner, out in seen:
        assert torch.isin(x, torch.tensor([-1.0, 1.0])).all()  # a binary activation feeds it
        assert torch.equal(inner, torch.round(inner))
        cin, k = xnor.conv.in_channels, xnor.conv.kernel_size[0]
        assert inner.abs().max() <= cin * k * k
        # the integer is the +/-1 dot product, alpha the mean |W| per output channel
        w = xnor.weight.detach()
        signs = torch.where(w >= 0, 1.0, -1.0)
        assert torch.equal(xnor.conv.quant_weight().value, signs)
        ref = F.conv2d(x, signs, stride=xnor.conv.stride, padding=xnor.conv.padding)
        assert torch.equal(inner, ref)
        alpha = w.abs().mean(dim=(1, 2, 3))
        assert torch.equal(xnor.alpha(), alpha)
        assert torch.equal(out, inner * alpha.view(1, -1, 1, 1))


@pytest.mark.parametrize(("m", "n"), [(1, 1), (3, 3), (5, 2)])
def test_abc_output_times_two_to_f_is_integer(m, n):
    torch.manual_seed(6)
    layer = AbcConv2d(4, 6, 3, 1, 1, m=m, n=n).eval()
    x = torch.randn(2, 4, 6, 6)
    with torch.no_grad():
        out = layer(x)
        k, frac = layer.coefficients()
    scaled = out * 2.0**frac
    assert torch.equal(scaled, torch.round(scaled))
    assert scaled.abs().max() > 0
    # k are int8 codes of alpha_m * beta_n with one power-of-two scale
    c = (layer.alpha.view(-1, 1) * layer.beta.view(1, -1)).detach()
    assert torch.equal(k, torch.round(k)) and k.abs().max() <= 127
    assert 64 <= k.abs().max() <= 127  # the scale uses the int8 range
    assert (k * 2.0**-frac - c).abs().max() <= 2.0 ** -(frac + 1) + 1e-7
    # reference: sum_mn k_mn conv(sign(x + v_n), B_m) * 2^-F from first principles
    sign = lambda t: torch.where(t >= 0, 1.0, -1.0)  # noqa: E731
    w = layer.weight.detach()
    ref = torch.zeros_like(out)
    for mi in range(m):
        bm = sign(w - w.mean() + layer.u[mi] * w.std())
        for ni in range(n):
            an = sign(x + layer.shift[ni].detach())
            ref += k[mi, ni] * F.conv2d(an, bm, padding=1)
    assert torch.equal(out, ref * 2.0**-frac)


def test_abc_output_is_integer_inside_a_network(calibrated):
    torch.manual_seed(7)
    model = build_model("resnet20-abc3x3", 1, 8, 8, 10)
    calibrated(model, torch.rand(8, 1, 8, 8))
    model.eval()
    outs = []
    hooks = [
        m.register_forward_hook(lambda mod, _i, o: outs.append((mod, o)))
        for m in model.modules()
        if isinstance(m, AbcConv2d)
    ]
    with torch.no_grad():
        model(torch.rand(3, 1, 8, 8))
    for h in hooks:
        h.remove()
    assert len(outs) == 18
    for mod, o in outs:
        _, frac = mod.coefficients()
        scaled = o * 2.0**frac
        assert torch.equal(scaled, torch.round(scaled))


def test_quant_block_stream_scale_is_power_of_two(calibrated):
    torch.manual_seed(8)
    model = build_model("resnet20-w4a4", 1, 8, 8, 10)
    calibrated(model, torch.rand(8, 1, 8, 8))
    model.eval()
    for mod in model.modules():
        if isinstance(mod, (QuantIdentity, QuantReLU)) and mod.act_quant.is_quant_enabled:
            scale = mod.act_quant.scale()
            if scale is not None:
                log = torch.log2(scale)
                assert torch.equal(log, torch.round(log)), scale
    blocks = [b for b in model.blocks if isinstance(b, QuantBlock)]
    assert len(blocks) == 9
    for b in blocks:  # the residual branch is requantized to the stream's scale before the add
        assert b.h_quant.act_quant.scale() == b.h_quant.act_quant.scale()


def test_arch_config_records_pruned_widths():
    model = build_model("resnet20-prune-filter", 1, 8, 8, 10)
    assert arch_config(model) == {"mids": [[8]] * 3 + [[16]] * 3 + [[32]] * 3}
    assert isinstance(model, ResNet)
    assert arch_config(build_model("tfc-w1a1", 1, 8, 8, 10)) == {}
