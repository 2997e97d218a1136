"""PTQ: a float ResNet's deployed 8-bit twin computes its function, lowers bit for bit, keeps
its weights (quantized) and pruning, calibrates on the training split; the int ResNets' uint8
post-ReLU stream, and the int8 stream of checkpoints saved before it."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from brevitas.nn import QuantIdentity, QuantReLU

from hwbed.models.checkpoint import (
    CheckpointMeta,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from hwbed.models.data import load_dataset, to_float
from hwbed.models.pruning import inner_convs
from hwbed.models.quantize import (
    QuantizeError,
    calibration_subset,
    deployed_spec,
    images_digest,
    ptq,
    quantized_copy,
)
from hwbed.models.quantize_checkpoint import quantize_checkpoint
from hwbed.models.resnet import RELU_STREAM, ResNet
from hwbed.models.spec import parse_spec
from hwbed.models.training import FINETUNE_LR, RunConflictError, TrainConfig, train
from hwbed.models.zoo import arch_config, build_model

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:Keyword arguments are being passed")
SHAPE = (1, 8, 8)


def _scale_module(quant):
    return quant.act_quant.fused_activation_quant_proxy.tensor_quant.scaling_impl


@pytest.fixture
def float_net(random_twin):
    """``float_net(spec="resnet20")``: a random float network with non-trivial BN statistics
    (train-mode passes)."""

    def make(spec: str = "resnet20") -> ResNet:
        return random_twin(spec, SHAPE, passes=4, batch=32)

    return make


def _pixels(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *SHAPE), dtype=np.uint8)


def _logits(model, x: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return model(to_float(x))


def test_int_resnet_mirrors_the_float_relu_placement():
    model = build_model("resnet20-w4a4", *SHAPE, 10)
    assert model.relu_stream and arch_config(model)["stream"] == RELU_STREAM
    for quant in [model.stem_quant, *(b.out_quant for b in model.blocks)]:
        assert isinstance(quant, QuantReLU) and not quant.act_quant.is_signed
        assert int(quant.act_quant.bit_width()) == 8
    stream = model.stem_quant
    for block in model.blocks:  # the branch: signed 9 bits on the input stream's own scale
        assert block.h_quant.act_quant.is_signed and int(block.h_quant.act_quant.bit_width()) == 9
        assert _scale_module(block.h_quant) is _scale_module(stream)
        stream = block.out_quant
    w8 = build_model("resnet20-w8a8", *SHAPE, 10)  # 8-bit activations read the stream itself
    assert w8.blocks[1].acts[0].act_quant is w8.blocks[0].out_quant.act_quant
    xnor = build_model("resnet20-xnor", *SHAPE, 10)  # binary ResNets keep the int8 stream
    assert not xnor.relu_stream and "stream" not in arch_config(xnor)
    assert isinstance(xnor.stem_quant, QuantIdentity) and xnor.stem_quant.act_quant.is_signed


@pytest.mark.parametrize(
    "float_spec", ["resnet20", "resnet20-prune-filter50", "resnet20-prune-kernel50"]
)
def test_ptq_twin_computes_the_float_function_and_lowers_bit_exactly(float_net, float_spec):
    from hwbed.fpga.lowering.lower import lower
    from hwbed.ir.reference import execute

    net = float_net(float_spec)
    spec = parse_spec(float_spec).at_precision("w8a8")
    twin = ptq(net, spec, _pixels(256, seed=2)).eval()
    x = _pixels(64)
    want, got = _logits(net, x), _logits(twin, x)
    assert (got.argmax(1) == want.argmax(1)).float().mean() >= 0.9
    assert (got - want).abs().max() < 0.1 * want.abs().max()
    graph = lower(twin, spec, SHAPE)
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    assert np.array_equal(execute(graph, nhwc), got.numpy())  # bit for bit
    # 8-bit convs read the uint8 stream itself: no thresholds but the adds' (and the MVAUs')
    assert [n.op for n in graph.nodes].count("Thresholding") == len(twin.blocks)
    if spec.prune is None:  # the identity tables the front-end emits are dropped exactly
        raw = lower(twin, spec, SHAPE, passes=())
        assert [n.op for n in raw.nodes].count("Thresholding") > 2 * len(twin.blocks)
        assert np.array_equal(execute(raw, nhwc), got.numpy())
    mvaus = [n for n in graph.nodes if n.op == "MVAU"]
    if spec.prune == "filter":  # the removed filters are gone from the device
        assert mvaus[1].params["weights"].shape[0] == 8
    if spec.prune == "kernel":  # masked kernels stay zero in the integer weights
        convs = inner_convs(twin)
        w = mvaus[1].params["weights"].reshape(16, 3, 3, 16)  # [cout, kh, kw, cin]
        mask = convs[0].weight_mask[:, :, 0, 0].bool().numpy()  # [cout, cin]
        assert (w.transpose(0, 3, 1, 2)[~mask] == 0).all() and (~mask).sum() == 128


def _expected_codes(w: torch.Tensor, bits: int, per_channel: bool):
    """Brevitas' power-of-two weight quantization, restated: s = 2^ceil(log2 max|w|) / 2^(b-1)."""
    m = w.abs().flatten(1).amax(1) if per_channel else w.abs().max().reshape(1)
    s = 2.0 ** torch.ceil(torch.log2(m)) / 2 ** (bits - 1)
    s = s.view(-1, *([1] * (w.dim() - 1))) if per_channel else s
    q = 2 ** (bits - 1) - 1
    return torch.clamp(torch.round(w / s), -q, q), s


def test_carried_weights_are_the_float_weights_quantized(float_net):
    net = float_net()
    twin = quantized_copy(net, "resnet20-w8a8")
    pairs = [(net.stem_conv.weight / 255.0, twin.stem_conv, True)]  # pixels 0..255, not [0, 1]
    pairs += [
        (a.weight, b, False) for a, b in zip(inner_convs(net), inner_convs(twin), strict=True)
    ]
    pairs.append((net.fc.weight, twin.fc, False))
    for w, layer, per_channel in pairs:
        qw = layer.quant_weight()
        codes, scale = _expected_codes(w.detach(), 8, per_channel)
        assert torch.equal(qw.int().float(), codes)
        assert torch.equal(qw.scale.reshape(scale.shape), scale)
    assert torch.equal(twin.fc.bias, net.fc.bias)
    bns = {n: m for n, m in twin.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    for name, bn in net.named_modules():  # BN stays float: it folds into the thresholds
        if isinstance(bn, torch.nn.BatchNorm2d):
            for key, value in bn.state_dict().items():
                assert torch.equal(value, bns[name].state_dict()[key]), (name, key)


def test_kernel_pruned_zeros_stay_zero_through_qat_and_a_round_trip(
    tmp_path, calibrated, float_net
):
    net = float_net("resnet20-prune-kernel50")
    twin = quantized_copy(net, "resnet20-prune-kernel50-w8a8")
    calibrated(twin, torch.rand(16, *SHAPE))
    opt = torch.optim.Adam(twin.parameters(), lr=1e-2)
    twin.train()
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(twin(torch.rand(8, *SHAPE)), torch.arange(8))
        opt.zero_grad()
        loss.backward()
        opt.step()
    twin.eval()
    for conv, src in zip(inner_convs(twin), inner_convs(net), strict=True):
        assert torch.equal(conv.weight_mask, src.weight_mask)
        codes = conv.quant_weight().int()
        assert (codes[conv.weight_mask == 0] == 0).all()
    meta = CheckpointMeta(parse_spec("resnet20-prune-kernel50-w8a8"), "digits", SHAPE, 10)
    save_checkpoint(tmp_path / "m.pt", twin, meta)
    loaded, _ = load_checkpoint(tmp_path / "m.pt")
    x = _pixels(8)
    assert torch.equal(_logits(copy.deepcopy(loaded), x), _logits(twin, x))  # export copies it


def test_int_checkpoint_without_the_stream_marker_loads_the_int8_stream(tmp_path, calibrated):
    """Checkpoints saved before the uint8 stream keep their meaning (arch holds only mids)."""
    torch.manual_seed(3)
    legacy = ResNet(parse_spec("resnet20-w4a4"), 1, 10, relu_stream=False)
    calibrated(legacy, torch.rand(16, *SHAPE))
    legacy.eval()
    meta = CheckpointMeta(parse_spec("resnet20-w4a4"), "digits", SHAPE, 10)
    save_checkpoint(tmp_path / "old.pt", legacy, meta)
    assert read_checkpoint(tmp_path / "old.pt")["arch"] == {
        "mids": [[16]] * 3 + [[32]] * 3 + [[64]] * 3
    }
    loaded, _ = load_checkpoint(tmp_path / "old.pt")
    assert not loaded.relu_stream
    assert isinstance(loaded.stem_quant, QuantIdentity) and loaded.stem_quant.act_quant.is_signed
    x = _pixels(16)
    assert torch.equal(_logits(loaded, x), _logits(legacy, x))
    # today's int ResNet records its stream; a round trip keeps the branch tied to it
    torch.manual_seed(3)
    new = build_model("resnet20-w4a4", *SHAPE, 10)
    calibrated(new, torch.rand(16, *SHAPE))
    new.eval()
    save_checkpoint(tmp_path / "new.pt", new, meta)
    back, _ = load_checkpoint(tmp_path / "new.pt")
    assert back.relu_stream
    assert torch.equal(_logits(back, x), _logits(new, x))
    assert not torch.equal(_logits(back, x), _logits(loaded, x))
    assert all(
        _scale_module(b.h_quant) is _scale_module(a.out_quant)
        for a, b in zip(back.blocks[:-1], back.blocks[1:], strict=True)
    )


@pytest.fixture(scope="module")
def float_ckpt_tiny(tmp_path_factory):
    """A float resnet20 after one epoch on 64 digits (weights, BN statistics, a card)."""
    out = tmp_path_factory.mktemp("float") / "resnet20"
    cfg = TrainConfig(
        model="resnet20", epochs=1, limit=64, batch_size=32, out=str(out), progress=False
    )
    return train(cfg)


def test_quantize_checkpoint_calibrates_on_the_training_split(float_ckpt_tiny, tmp_path):
    out = quantize_checkpoint(
        float_ckpt_tiny, "w8a8", tmp_path / "q", calibration_images=48, progress=False
    )
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["spec"] == "resnet20-w8a8" and card["epoch"] == 0
    origin = card["quantized_from"]
    assert origin["spec"] == "resnet20" and origin["checkpoint"] == str(float_ckpt_tiny)
    assert origin["sha256"] == card["result_settings"]["init_sha256"]
    assert origin["finetune_epochs"] == 0 and 0 <= origin["test_accuracy"] <= 1
    x_train, _, _ = load_dataset("digits", "train")
    x_test, _, _ = load_dataset("digits", "test")
    images = calibration_subset(x_train, 48, 0)
    assert origin["calibration"]["images"] == 48 and origin["calibration"]["split"] == "train"
    assert origin["calibration"]["images_sha256"] == images_digest(images)
    assert images_digest(images) != images_digest(calibration_subset(x_test, 48, 0))
    # the scales are those that calibrating on these images gives, every one a power of two
    model, _ = load_checkpoint(out)
    float_model, _ = load_checkpoint(float_ckpt_tiny)
    again = ptq(float_model, "resnet20-w8a8", images)
    scales = {n: p for n, p in model.named_parameters() if "scaling_impl.value" in n}
    assert scales and all(
        torch.equal(p, dict(again.named_parameters())[n]) for n, p in scales.items()
    )
    s = model.stem_quant.act_quant.scale().item()
    assert s != 1.0 and math.log2(s) == round(math.log2(s))
    # a rerun is the same run; other calibration settings are another
    assert (
        quantize_checkpoint(
            float_ckpt_tiny, "w8a8", tmp_path / "q", calibration_images=48, progress=False
        )
        == out
    )
    with pytest.raises(
        RunConflictError, match="calibration_images=48, asked calibration_images=32"
    ):
        quantize_checkpoint(
            float_ckpt_tiny, "w8a8", tmp_path / "q", calibration_images=32, progress=False
        )


def test_fine_tune_is_a_resumable_qat_run_at_the_fine_tune_rate(float_ckpt_tiny, tmp_path):
    out = quantize_checkpoint(
        float_ckpt_tiny, "w8a8", tmp_path / "ft", finetune_epochs=1, calibration_images=32,
        progress=False,
    )  # fmt: skip
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["epoch"] == 1 and card["quantized_from"]["finetune_epochs"] == 1
    assert card["result_settings"]["lr"] == FINETUNE_LR
    assert card["result_settings"]["optimizer"] == "adam"


def test_prune_int_spec_trains_prunes_and_calibrates_the_copy(tmp_path):
    cfg = TrainConfig(
        model="resnet20-prune-filter50-w8a8", epochs=0, pretrain_epochs=1, limit=64,
        batch_size=32, calibration_images=32, out=str(tmp_path / "run"), progress=False,
    )  # fmt: skip
    ckpt = train(cfg)
    card = json.loads(ckpt.with_suffix(".json").read_text())
    origin = card["quantized_from"]
    assert origin["pruned_here"] and origin["spec"] == "resnet20-prune-filter50"
    assert origin["checkpoint"] == str(tmp_path / "run" / "pretrain" / "model.pt")
    assert card["result_settings"]["calibration_images"] == 32
    model, _ = load_checkpoint(ckpt)
    assert arch_config(model)["mids"][0] == [8] and model.relu_stream
    assert model.stem_quant.act_quant.scale().item() != 1.0  # calibrated, not the initial value
    assert train(cfg) == ckpt  # complete
    with pytest.raises(
        RunConflictError, match="calibration_images=32, asked calibration_images=16"
    ):
        train(TrainConfig(**{**cfg.__dict__, "calibration_images": 16}))


def test_kd_int_student_from_its_float_version(float_ckpt_tiny, tmp_path):
    kd = train(
        TrainConfig(
            model="resnet20-kd", epochs=1, limit=64, batch_size=32, teacher=str(float_ckpt_tiny),
            out=str(tmp_path / "kd"), progress=False,
        )
    )  # fmt: skip
    out = quantize_checkpoint(kd, "w8a8", tmp_path / "q", finetune_epochs=1, progress=False)
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["spec"] == "resnet20-kd-w8a8"
    assert card["quantized_from"]["spec"] == "resnet20-kd"
    assert card["settings"]["teacher"] == str(float_ckpt_tiny)  # the teacher in kd's card


@pytest.mark.parametrize(
    ("spec", "precision", "message"),
    [
        ("resnet20", "w8", "--quantize takes a precision w<W>a<A>"),
        ("resnet20", "xnor", "--quantize takes a precision w<W>a<A>"),
        ("resnet20", "w9a8", "bit widths must be within 1..8"),
        ("resnet20", "w1a8", "needs W, A >= 2"),
        ("resnet20-w4a4", "w8a8", "resnet20-w4a4 is already quantized (w4a4)"),
        ("cnv", "w8a8", "cnv is a BNN-PYNQ network"),
    ],
)
def test_deployed_spec_refusals(spec, precision, message):
    with pytest.raises(QuantizeError) as info:
        deployed_spec(spec, precision)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_deployed_spec_names():
    assert deployed_spec("resnet20-kd", "W8A8").name == "resnet20-kd-w8a8"
    assert deployed_spec("resnet20-prune-filter50", "w8a8").name == "resnet20-prune-filter50-w8a8"
    assert deployed_spec("resnet56-kd-prune-kernel30", "w4a8").name == (
        "resnet56-kd-prune-kernel30-w4a8"
    )
