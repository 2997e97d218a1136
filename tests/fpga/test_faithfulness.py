"""Exact or refused: the front-end proves integer-faithfulness (power-of-two scales, float32-exact
accumulators, the expected layout) or refuses through every path that lowers; BNN-PYNQ's wXaY
twins have power-of-two scales; float BNN-PYNQ twins build, run and are refused."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from brevitas.core.restrict_val import RestrictValueType
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear
from brevitas_examples.bnn_pynq.models.CNV import CNV
from brevitas_examples.bnn_pynq.models.FC import FC
from torch import nn

from hwbed.cli import run
from hwbed.fpga.lowering.frontend import out_type, weight_codes
from hwbed.fpga.lowering.lower import lower
from hwbed.fpga.lowering.spec_matrix import calibrated_twin, probe_images, twin_logits
from hwbed.fpga.lowering.thresholds import thresholds_for
from hwbed.ir.types import GraphError
from hwbed.models.bnn_pynq import ExactSumConv2d
from hwbed.models.zoo import build_model

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:Keyword arguments are being passed")

FC_SHAPE, CNV_SHAPE = (1, 8, 8), (3, 32, 32)
NOT_POW2 = "is not a power of two; the integer graph cannot equal the twin"
BIT_PAIRS = [(b, c) for b in range(1, 9) for c in sorted({b, 9 - b})]
"""Every W and every A in 1..8 (the diagonal and the anti-diagonal)."""


def _expected_scale(bits: int) -> float:
    return 1.0 if bits <= 2 else 2.0 ** -(bits - 1)


@pytest.fixture
def examples_scales(monkeypatch):
    """Build BNN-PYNQ twins with brevitas_examples' own scales (1/7, 1/127, ...)."""
    monkeypatch.setattr("hwbed.models.bnn_pynq.power_of_two_scales", lambda net: net)


# -- BNN-PYNQ wXaY: power-of-two scales ------------------------------------------------------
@pytest.mark.parametrize("arch", ["tfc", "cnv"])
def test_bnn_pynq_scales_are_powers_of_two(arch):
    shape = CNV_SHAPE if arch == "cnv" else FC_SHAPE
    for w, a in BIT_PAIRS:
        model = build_model(f"{arch}-w{w}a{a}", *shape, 10)
        layers = [m for m in model.modules() if isinstance(m, (QuantConv2d, QuantLinear))]
        acts = [m for m in model.modules() if isinstance(m, QuantIdentity)]
        assert {float(weight_codes(m, "w")[1][0]) for m in layers} == {_expected_scale(w)}
        first = 2.0**-7 if arch == "cnv" else _expected_scale(a)  # CNV's Q1.7 input
        assert out_type(acts[0], "in")[2] == first
        assert {out_type(m, "act")[2] for m in acts[1:]} == {_expected_scale(a)}


@pytest.mark.parametrize("spec", ["tfc-w1a1", "tfc-w2a2", "cnv-w1a1", "cnv-w2a2"])
def test_w1a1_w2a2_are_brevitas_examples_networks(spec):
    """FINN's BNN-PYNQ networks: hwbed's twin computes what brevitas_examples' class does."""
    arch, bits = spec.split("-")[0], int(spec[-1])
    shape = CNV_SHAPE if arch == "cnv" else FC_SHAPE
    torch.manual_seed(0)
    ours = build_model(spec, *shape, 10)
    torch.manual_seed(0)
    theirs = (
        CNV(10, bits, bits, 8, 3)
        if arch == "cnv"
        else FC(10, bits, bits, bits, 1, (64, 64, 64), (math.prod(shape),))
    )
    x = torch.rand(8, *shape)
    with torch.no_grad():
        for model in (ours, theirs):
            torch.manual_seed(1)  # the same dropout masks
            model.train()(x)
        assert torch.equal(ours.eval()(x), theirs.eval()(x))
    assert ours.state_dict().keys() == theirs.state_dict().keys()


@pytest.mark.parametrize("spec", ["tfc-w4a4", "tfc-w8a8", "tfc-w3a5", "cnv-w4a4"])
def test_multibit_twins_do_not_depend_on_the_batch(spec):
    shape = CNV_SHAPE if spec.startswith("cnv") else FC_SHAPE
    model = calibrated_twin(spec, shape)
    x = probe_images(shape, 20)
    assert np.array_equal(twin_logits(model, x), twin_logits(model, x, batch=1))


@pytest.mark.parametrize(
    "spec, exact", [("cnv-w8a8", [3, 4, 5]), ("cnv-w8a7", [5]), ("cnv-w7a7", [])]
)
def test_cnv_sums_past_2_24_are_taken_in_float64(spec, exact):
    """Where a CNV sum can pass 2^24 the twin sums in float64 and rounds once."""
    model = calibrated_twin(spec, CNV_SHAPE)
    convs = [m for m in model.conv_features if isinstance(m, QuantConv2d)]
    assert [i for i, m in enumerate(convs) if isinstance(m, ExactSumConv2d)] == exact
    x = 2.0 * torch.rand(2, *CNV_SHAPE) - 1.0
    with torch.no_grad():
        for module in model.conv_features:
            if isinstance(module, ExactSumConv2d):
                w = module.quant_weight().value
                assert torch.equal(module(x), F.conv2d(x.double(), w.double()).float())
            x = module(x)


# -- refusals: scales, accumulators ------------------------------------------------------------
@pytest.mark.parametrize(
    "spec, where, what",
    [("tfc-w4a4", "input", "activation"), ("tfc-w4a2", "layer 0", "weight")],
)
def test_non_power_of_two_scale_is_refused(examples_scales, spec, where, what):
    model = calibrated_twin(spec, FC_SHAPE)
    with pytest.raises(GraphError, match=rf"^{spec} {where}: {what} scale 0\.142857 {NOT_POW2}$"):
        lower(model, spec, FC_SHAPE)


def test_non_power_of_two_resnet_weight_is_refused():
    """ResNet paths meet the same check; the module is named by its path in the twin."""
    model = calibrated_twin("resnet20-w4a4", FC_SHAPE)
    proxy = model.blocks[0].convs[1].weight_quant
    proxy.quant_injector = proxy.quant_injector.let(restrict_scaling_type=RestrictValueType.FP)
    proxy.init_tensor_quant()
    with pytest.raises(
        GraphError, match=rf"^resnet20-w4a4 blocks\.0\.convs\.1: weight scale \S+ {NOT_POW2}$"
    ):
        lower(model, "resnet20-w4a4", FC_SHAPE)


def test_accumulator_beyond_float32_integers_is_refused():
    """1x64x64 inputs, all weights at the largest code: 4096 * 127 * 128 > 2^24."""
    shape = (1, 64, 64)
    model = calibrated_twin("tfc-w8a8", shape)
    with torch.no_grad():
        model.features[2].weight.fill_(1.0)
    with pytest.raises(
        GraphError, match=r"^tfc-w8a8 layer 0: accumulator bound 66584576 .* exceeds 2\^24"
    ):
        lower(model, "tfc-w8a8", shape)


def test_bisected_thresholds_stay_in_the_accumulator_domain():
    """A channel whose every code is reached at -bound: its thresholds are -bound, not below."""
    bound, channels = 1 << 16, 100  # (2 bound + 1) * channels > 2^22: bisection

    def fn(d):
        return torch.where(torch.arange(channels)[:, None] == 0, 3.0, (d > 0) * 3.0)

    thr, flip = thresholds_for(fn, bound, channels, [0, 1, 2, 3], "t")
    assert not flip.any()
    assert (thr[0] == -bound).all() and (thr[1:] == 1).all()


# -- refusals through every path: lower(), the simulator from a checkpoint, the build CLI --------
@pytest.fixture
def unfaithful_checkpoint(examples_scales, tmp_path):
    from hwbed.models.checkpoint import CheckpointMeta, save_checkpoint
    from hwbed.models.spec import parse_spec

    path = tmp_path / "tfc-w4a4.pt"
    meta = CheckpointMeta(parse_spec("tfc-w4a4"), "digits", FC_SHAPE, 10, complete=True)
    save_checkpoint(path, calibrated_twin("tfc-w4a4", FC_SHAPE), meta)
    return path


def test_simulator_from_checkpoint_refuses(unfaithful_checkpoint):
    from hwbed.attacks.backends import make_executable

    with pytest.raises(GraphError, match=rf"tfc-w4a4 input: activation scale 0\.142857 {NOT_POW2}"):
        make_executable("sim", unfaithful_checkpoint)


def test_build_stop_at_lower_refuses_in_one_line(unfaithful_checkpoint, tmp_path, capsys):
    from hwbed.build import main

    argv = ["--checkpoint", str(unfaithful_checkpoint), "--out", str(tmp_path / "b")]
    code = run(main, [*argv, "--stop-step", "lower", "--no-progress"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and "Traceback" not in err, err
    want = f"error: step lower failed: tfc-w4a4 input: activation scale 0.142857 {NOT_POW2}"
    assert errors == [want], err
    assert not (tmp_path / "b" / "graph.json").exists()


# -- float BNN-PYNQ: float twins that build, train, run and are refused -------------------------
@pytest.mark.parametrize("spec", ["cnv", "cnv-kd", "tfc"])
def test_float_bnn_pynq_is_a_plain_torch_twin(spec):
    from hwbed.models.cost import model_cost

    shape = CNV_SHAPE if spec.startswith("cnv") else FC_SHAPE
    model = build_model(spec, *shape, 10)
    quant = (QuantConv2d, QuantLinear, QuantIdentity)
    assert not [m for m in model.modules() if isinstance(m, quant)]
    quantized = build_model(f"{spec}-w1a1", *shape, 10)
    assert model.state_dict().keys() == quantized.state_dict().keys()
    x = torch.rand(4, *shape)
    model.train()(x).sum().backward()
    assert model.eval()(x).shape == (4, 10)
    assert model_cost(model, spec, shape).params > 0
    with pytest.raises(GraphError, match=rf"^{spec}: float BNN-PYNQ networks do not lower"):
        lower(model, spec, shape)


def test_float_bnn_pynq_checkpoint_is_refused_by_the_simulator(tmp_path):
    from hwbed.attacks.backends import make_executable
    from hwbed.models.checkpoint import CheckpointMeta, save_checkpoint
    from hwbed.models.spec import parse_spec

    path = tmp_path / "cnv.pt"
    meta = CheckpointMeta(parse_spec("cnv"), "synthetic", CNV_SHAPE, 10, complete=True)
    save_checkpoint(path, build_model("cnv", *CNV_SHAPE, 10), meta)
    with pytest.raises(GraphError, match="cnv: float BNN-PYNQ networks do not lower"):
        make_executable("sim", path)


# -- refusals: layouts the BNN-PYNQ walk does not know -----------------------------------------
def _drop(i):
    return lambda f: f.__delitem__(i)


def _put(i, module):
    return lambda f: f.__setitem__(i, module)


def _insert(i, module):
    return lambda f: f.insert(i, module)


def _bias(i):
    return lambda f: setattr(f[i], "bias", nn.Parameter(torch.zeros(f[i].out_features)))


# tfc features: 0 in-quant, 1 dropout, then (linear, bn, act, dropout) x 3, linear 14, norm 15
@pytest.mark.parametrize(
    "edit, message",
    [
        (_put(3, nn.Identity()), r"layer 0: expected BatchNorm1d or BatchNorm2d or TensorNorm "
         r"after the weight layer, found Identity"),
        (_drop(4), r"layer 0: expected QuantIdentity after the weight layer, found QuantLinear"),
        (_insert(2, nn.ReLU()), r"layer 0: expected a QuantConv2d, QuantLinear or MaxPool2d, "
         r"found ReLU"),
        (_drop(15), r"layer 3: expected BatchNorm1d or BatchNorm2d or TensorNorm after the "
         r"weight layer, found the end of the network"),
        (_put(15, nn.BatchNorm1d(10)), r"layer 3: expected QuantIdentity after the weight "
         r"layer, found the end of the network"),
        (_insert(16, nn.Identity()), r"layer 3: TensorNorm must follow the last QuantLinear"),
        (_put(7, nn.BatchNorm1d(32)), r"layer 1: BatchNorm1d has 32 channels, the layer 64"),
        (_bias(6), r"layer 1: QuantLinear with a bias is not lowered"),
        (_insert(2, nn.MaxPool2d(2)), r"layer 0: only k x k max pools with stride k on a "
         r"feature map lower"),
    ],
)  # fmt: skip
def test_unexpected_bnn_pynq_layout_is_refused(edit, message):
    model = calibrated_twin("tfc-w1a1", FC_SHAPE)
    edit(model.features)
    with pytest.raises(GraphError, match=rf"^tfc-w1a1 {message}"):
        lower(model, "tfc-w1a1", FC_SHAPE)


def test_unexpected_cnv_pool_is_refused():
    model = calibrated_twin("cnv-w1a1", CNV_SHAPE)
    model.conv_features[7] = nn.MaxPool2d(2, stride=1)
    with pytest.raises(GraphError, match=r"^cnv-w1a1 layer 2: only k x k max pools"):
        lower(model, "cnv-w1a1", CNV_SHAPE)
