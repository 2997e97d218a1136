"""ImageNet ResNets lower and equal their Brevitas twin bit for bit: the 7x7/2 stem and its
padded 3x3/2 max pool, projection shortcuts, ResNet50 bottlenecks, and the quantized mean of
a global pool over any number of positions, on the reference executor, the fast path and the
slice path; the ImageNet twin's head is exact (batch-consistent). Random calibrated weights.

The default run lowers two networks (about 40 s on two cores); every spec on a few hundred
images and the slice path are ``-m slow``.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
import torch

from hwbed.fpga.lowering.lower import lower
from hwbed.ir.executable import TorchTwin
from hwbed.ir.reference import execute
from hwbed.ir.types import GraphError, IntType
from hwbed.models.layers import exact_fc
from hwbed.models.zoo import build_model
from hwbed.sim.executable import SimExecutable
from hwbed.sim.slice_path import execute_slices

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:Keyword arguments are being passed")

SHAPE = (3, 64, 64)  # 2x2 positions at the global pool
ODD = (3, 72, 72)  # 3x3 = 9 positions: the mean is not an integer times a power of two
SLOW_SPECS = [
    "resnet18-xnor",
    "resnet18-abc3x3",
    "resnet18-w8a8",
    "resnet50-w8a8",
    "resnet18-prune-channel50-w8a8",
]


@pytest.fixture(scope="module")
def twin(random_twin):
    """``twin(spec, shape=SHAPE)``: a random-init twin of ``spec``, calibrated (BN statistics,
    Brevitas scales), in eval; built once."""
    return cache(lambda spec, shape=SHAPE: random_twin(spec, shape, end_stats=True))


@pytest.fixture(scope="module")
def lowered(twin):
    """``lowered(spec, shape=SHAPE)``: the twin's integer graph, lowered once."""
    return cache(lambda spec, shape=SHAPE: lower(twin(spec, shape), spec, shape))


@pytest.fixture(scope="module")
def simulator(lowered):
    """``simulator(spec, shape=SHAPE)``: the fast path (its plan compiles once)."""
    return cache(lambda spec, shape=SHAPE: SimExecutable(lowered(spec, shape)))


def images(shape: tuple[int, int, int], n_random: int, seed: int = 1) -> np.ndarray:
    """uint8 NCHW: all 0, all 255, checkerboards (1 px and 8 px), one channel lit,
    random {0, 255}, a ramp, then uniform random images."""
    c, h, w = shape
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    board = ((yy + xx) % 2).astype(np.uint8) * 255
    blocks = (((yy // 8) + (xx // 8)) % 2).astype(np.uint8) * 255
    lit = np.zeros((c, h, w), np.uint8)
    lit[0] = 255
    extreme = [
        np.zeros((c, h, w), np.uint8),
        np.full((c, h, w), 255, np.uint8),
        np.broadcast_to(board, (c, h, w)),
        np.broadcast_to(255 - board, (c, h, w)),
        np.broadcast_to(blocks, (c, h, w)),
        lit,
        rng.integers(0, 2, (c, h, w), dtype=np.uint8) * 255,
        np.broadcast_to(((xx * 255) // max(1, w - 1)).astype(np.uint8), (c, h, w)),
    ]
    rand = rng.integers(0, 256, (n_random, c, h, w), dtype=np.uint8)
    return np.concatenate([np.stack(extreme), rand])


@pytest.fixture(scope="module")
def check_bit_exact(twin, lowered, simulator):
    """``check_bit_exact(spec, shape, n_random, n_ref)``: every logit of the fast path on the
    extreme and ``n_random`` random images, and of the reference executor on the first ``n_ref``
    of them, equals the twin's."""

    def check(spec: str, shape: tuple[int, int, int], n_random: int, n_ref: int) -> None:
        graph = lowered(spec, shape)
        x = images(shape, n_random)
        want = TorchTwin(twin(spec, shape), spec, shape, 10)(x)
        got_fast = simulator(spec, shape)(x)
        got_ref = execute(graph, np.ascontiguousarray(x[:n_ref].transpose(0, 2, 3, 1)))
        for path, got, ref in (("fast", got_fast, want), ("reference", got_ref, want[:n_ref])):
            assert got.dtype == np.float32
            bad = int((got != ref).sum())
            assert bad == 0, f"{spec} {shape}, {path}: {bad} of {got.size} logits differ"
            assert np.array_equal(got, ref)
        labels = execute(graph, np.ascontiguousarray(x[:4].transpose(0, 2, 3, 1)), keep=True)
        assert np.array_equal(labels[graph.nodes[-1].outputs[0]][:, 0], want[:4].argmax(1))

    return check


# -- default run ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "spec, shape",
    [("resnet18-w8a8", SHAPE), ("resnet18-xnor", ODD)],
    ids=["resnet18-w8a8-64", "resnet18-xnor-72"],
)
def test_graph_equals_twin(check_bit_exact, spec, shape):
    check_bit_exact(spec, shape, 24, 10)


def test_graph_has_the_imagenet_structure(lowered):
    graph = lowered("resnet18-xnor", ODD)
    ops = [n.op for n in graph.nodes]
    stem = ops[: ops.index("Pool") + 1]
    assert stem == ["FMPadding", "ConvolutionInputGenerator", "MVAU"] + [
        "FMPadding",
        "ConvolutionInputGenerator",
        "Pool",
    ]
    pad = graph.nodes[3]
    assert pad.attrs == {"pad": 1, "pad_value": -128}  # the int8 stream's minimum
    assert graph.nodes[5].attrs == {"Function": "MaxPool", "kernel": 3, "channels": 64}
    assert ops.count("DownSampler") == 3  # the stride-2 projections' 1x1 convs
    head = ops[ops.index("GlobalAccPool") :]
    assert head == ["GlobalAccPool", "Thresholding", "MVAU", "Affine", "LabelSelect"]
    pool = graph.nodes[ops.index("GlobalAccPool")]
    assert pool.attrs["positions"] == 9


def test_uint8_stream_pads_its_pool_with_zero(lowered):
    graph = lowered("resnet18-w8a8", SHAPE)
    pool = next(n for n in graph.nodes if n.op == "Pool")
    pad = graph.producer(graph.producer(pool.inputs[0]).inputs[0])
    assert pad.op == "FMPadding" and pad.attrs["pad_value"] == 0
    assert graph.tensors[pad.inputs[0]].dtype == IntType("uint", 8)


@pytest.mark.parametrize("spec", ["resnet18-w8a8", "resnet18-xnor"])
def test_imagenet_twin_is_batch_consistent(twin, spec):
    """Its head's logits are a function of the integer sum: batch 1 and batch 20 agree."""
    shape = SHAPE if spec.endswith("w8a8") else ODD
    model = twin(spec, shape)
    x = torch.from_numpy(images(shape, 4)).float() / 255.0
    with torch.no_grad():
        batch = model(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(len(x))])
    assert torch.equal(batch, single)


def test_exact_linear_is_one_rounding_of_the_exact_sum():
    """ExactLinear: float32(exact sum) + bias, whatever the batch; ``F.linear`` with a bias
    may add it to partial sums inside the GEMM (MKL does for 512 inputs)."""
    fc = exact_fc(512, 10).eval()
    with torch.no_grad():
        fc.bias.normal_()
        fc.weight.normal_(0, 0.05)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(-128, 128, (20, 512), generator=g).float() * 2**-4
    with torch.no_grad():
        batch = fc(x)
        single = torch.cat([fc(x[i : i + 1]) for i in range(len(x))])
        w = fc.quant_weight().value
        want = (x.double() @ w.double().T).float() + fc.bias
    assert torch.equal(batch, single) and torch.equal(batch, want)


def test_heads():
    """Every quantized ResNet sums its FC exactly; only ImageNet quantizes the pooled mean
    (CIFAR's 8x8 mean is an exact power-of-two division already)."""
    model = build_model("resnet20-w4a4", 1, 8, 8, 10)
    assert model.pool_quant is None and type(model.fc).__name__ == "ExactLinear"
    imagenet = build_model("resnet18-w4a4", 3, 32, 32, 10)
    assert imagenet.pool_quant is imagenet.blocks[-1].out_quant
    assert type(imagenet.fc).__name__ == "ExactLinear"


def test_cifar_resnets_lower_at_cifar_size(random_twin):
    """At 3x32x32 the FC's worst-case sum passes 2^24: the exact head lowers it, bit-exact."""
    spec = "resnet20-xnor"
    model = random_twin(spec, (3, 32, 32))
    graph = lower(model, spec, (3, 32, 32))
    x = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    x[0], x[1] = 0, 255
    with torch.no_grad():
        want = model(torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255.0).numpy()
    assert np.array_equal(execute(graph, x), want)


# -- refusals ------------------------------------------------------------------------------
def test_max_pool_it_cannot_lower_is_refused(twin, monkeypatch):
    model = twin("resnet18-xnor", ODD)
    monkeypatch.setattr(model.pool, "ceil_mode", True)
    with pytest.raises(GraphError, match=r"resnet18-xnor stem pool: max pool with .*ceil_mode"):
        lower(model, "resnet18-xnor", ODD)


def test_projection_on_another_scale_is_refused(twin, monkeypatch):
    from hwbed.fpga.lowering import frontend

    model = twin("resnet18-xnor", ODD)
    quant = model.blocks[2].shortcut[2]
    real = frontend.out_type

    def fake(module, where=None):
        dtype, levels, scale = real(module, where)
        return (dtype, levels, scale * 2) if module is quant else (dtype, levels, scale)

    monkeypatch.setattr(frontend, "out_type", fake)
    with pytest.raises(
        GraphError, match=r"block 2 shortcut: its quantizer's scale .* not the stream's"
    ):
        lower(model, "resnet18-xnor", ODD)


# -- slow: every spec, a few hundred images, the slice path --------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("spec", SLOW_SPECS)
def test_graph_equals_twin_many_images(check_bit_exact, spec):
    check_bit_exact(spec, SHAPE, 300, 100)


@pytest.mark.slow
def test_odd_pool_many_images(check_bit_exact):
    check_bit_exact("resnet18-w8a8", ODD, 300, 100)


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["resnet18-xnor", "resnet18-w8a8"])
def test_slice_path_equals_twin(twin, lowered, spec):
    graph = lowered(spec, SHAPE)
    x = images(SHAPE, 0)[[1, 4]]  # all 255, 8 px checkerboard
    want = TorchTwin(twin(spec, SHAPE), spec, SHAPE, 10)(x)
    got = execute_slices(graph, np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
    assert np.array_equal(got, want)
