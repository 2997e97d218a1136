"""Pruning removes exactly what it claims, keeps the top-l2 structures and the trained weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hwbed.models.pruning import inner_convs, keep_count, prune_model
from hwbed.models.resnet import ResNet
from hwbed.models.spec import parse_spec
from hwbed.models.zoo import build_model


def _trained_like(arch: str = "resnet20", channels: int = 1, seed: int = 0) -> ResNet:
    """A float ResNet with random (non-initial) BN statistics, in eval mode."""
    torch.manual_seed(seed)
    model = ResNet(parse_spec(arch), channels, 10)
    for bn in model.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.mark.parametrize(
    ("n", "rate", "keep"),
    [(16, 0.5, 8), (16, 0.3, 12), (32, 0.3, 23), (64, 0.3, 45), (3, 0.99, 1), (10, 0.01, 10)],
)
def test_keep_count(n, rate, keep):
    assert keep_count(n, rate) == keep


@pytest.mark.parametrize(
    ("granularity", "rate", "widths"),
    [
        ("filter", 50, (8, 16, 32)),
        ("channel", 50, (8, 16, 32)),
        ("filter", 30, (12, 23, 45)),
        ("channel", 75, (4, 8, 16)),
    ],
)
def test_structured_pruning_shrinks_each_block(granularity, rate, widths):
    base = _trained_like()
    pruned = prune_model(base, parse_spec(f"resnet20-prune-{granularity}{rate}"))
    assert len(pruned.blocks) == 9
    for i, (b0, b1) in enumerate(zip(base.blocks, pruned.blocks, strict=True)):
        keep = widths[i // 3]
        full = b0.convs[0].out_channels
        assert keep == keep_count(full, rate / 100)
        assert b1.convs[0].weight.shape == (keep, *b0.convs[0].weight.shape[1:])
        assert b1.convs[1].weight.shape == (b0.convs[1].out_channels, keep, 3, 3)
        assert b1.bns[0].weight.shape == (keep,) and b1.bns[0].running_var.shape == (keep,)
        assert b1.bns[1].num_features == b0.bns[1].num_features  # block outputs unchanged
    # the stem and classifier are never pruned
    assert torch.equal(pruned.stem_conv.weight, base.stem_conv.weight)
    assert torch.equal(pruned.fc.weight, base.fc.weight)
    params0 = sum(p.numel() for b in base.blocks for c in b.convs for p in c.parameters())
    params1 = sum(p.numel() for b in pruned.blocks for c in b.convs for p in c.parameters())
    assert params1 < params0


@pytest.mark.parametrize("granularity", ["filter", "channel"])
def test_structured_pruning_keeps_the_top_l2_structures(granularity):
    base = _trained_like(seed=3)
    pruned = prune_model(base, parse_spec(f"resnet20-prune-{granularity}"))
    for b0, b1 in zip(base.blocks, pruned.blocks, strict=True):
        w0 = b0.convs[0].weight.detach().numpy()
        w1 = b0.convs[1].weight.detach().numpy()
        if granularity == "filter":
            norms = np.sqrt((w0.reshape(w0.shape[0], -1) ** 2).sum(axis=1))
        else:
            norms = np.sqrt((w1.transpose(1, 0, 2, 3).reshape(w1.shape[1], -1) ** 2).sum(axis=1))
        keep = np.sort(np.argsort(-norms)[: len(norms) // 2])
        assert np.array_equal(b1.convs[0].weight.detach().numpy(), w0[keep])
        assert np.array_equal(b1.convs[1].weight.detach().numpy(), w1[:, keep])
        for name in ("weight", "bias", "running_mean", "running_var"):
            src = getattr(b0.bns[0], name).detach().numpy()
            assert np.array_equal(getattr(b1.bns[0], name).detach().numpy(), src[keep])
            assert torch.equal(getattr(b1.bns[1], name), getattr(b0.bns[1], name))


def _dead_half(model: ResNet, granularity: str, generator: torch.Generator) -> None:
    """Silence half of each block's intermediate channels so removing them changes nothing."""
    with torch.no_grad():
        for block in model.blocks:
            n = block.convs[0].out_channels
            dead = torch.randperm(n, generator=generator)[: n // 2]
            if granularity == "filter":  # zero filters, and BN maps a zero input to zero
                block.convs[0].weight[dead] = 0
                block.bns[0].running_mean[dead] = 0
                block.bns[0].bias[dead] = 0
            else:  # zero the next conv's input channels
                block.convs[1].weight[:, dead] = 0


@pytest.mark.parametrize("granularity", ["filter", "channel"])
def test_pruned_output_equals_original_when_removed_structures_were_dead(granularity):
    base = _trained_like(seed=5)
    _dead_half(base, granularity, torch.Generator().manual_seed(0))
    pruned = prune_model(base, parse_spec(f"resnet20-prune-{granularity}")).eval()
    x = torch.rand(6, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), base(x), rtol=1e-5, atol=1e-6)
    # control: with live channels the pruned network differs
    live = _trained_like(seed=5)
    with torch.no_grad():
        assert not torch.allclose(
            prune_model(live, parse_spec(f"resnet20-prune-{granularity}")).eval()(x),
            live(x),
            atol=1e-4,
        )


def test_bottleneck_filter_pruning_shrinks_both_mid_widths():
    base = _trained_like("resnet50", channels=3)
    pruned = prune_model(base, parse_spec("resnet50-prune-filter50"))
    for b0, b1 in zip(base.blocks, pruned.blocks, strict=True):
        w = b0.convs[0].out_channels
        assert [c.out_channels for c in b1.convs] == [w // 2, w // 2, b0.convs[2].out_channels]
        assert b1.convs[1].in_channels == w // 2 and b1.convs[2].in_channels == w // 2
        assert b1.shortcut is None or torch.equal(b1.shortcut[0].weight, b0.shortcut[0].weight)
    with torch.no_grad():
        assert pruned.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize(
    ("granularity", "rate"), [("kernel", 50), ("kernel", 30), ("weight", 50), ("weight", 90)]
)
def test_masks_zero_exactly_the_rate_of_the_lowest_l2(granularity, rate):
    base = _trained_like(seed=7)
    pruned = prune_model(base, parse_spec(f"resnet20-prune-{granularity}{rate}"))
    convs0, convs1 = inner_convs(base), inner_convs(pruned)
    assert len(convs1) == 18
    for c0, c1 in zip(convs0, convs1, strict=True):
        w0, mask = c0.weight.detach(), c1.weight_mask
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
        if granularity == "kernel":
            per_kernel = mask.flatten(2)
            assert (per_kernel.min(2).values == per_kernel.max(2).values).all()  # whole kernels
            kept = per_kernel[:, :, 0].bool()
            scores = w0.flatten(2).norm(dim=2)
        else:
            kept = mask.bool()
            scores = w0.abs()
        assert int(kept.sum()) == keep_count(kept.numel(), rate / 100)
        assert scores[kept].min() >= scores[~kept].max()
        # the pruned network holds the original weights, zeroed where masked
        assert torch.equal(c1.weight_orig, w0)
        assert torch.equal(c1.weight, w0 * mask)
    # the stem, classifier and BN are carried over, unpruned
    assert torch.equal(pruned.stem_conv.weight, base.stem_conv.weight)
    assert torch.equal(pruned.blocks[4].bns[1].running_var, base.blocks[4].bns[1].running_var)


def test_masked_pruning_keeps_the_trained_function_when_masked_weights_are_zero():
    base = _trained_like(seed=9)
    with torch.no_grad():
        for conv in inner_convs(base):
            flat = conv.weight.view(-1)
            flat[flat.abs().topk(flat.numel() // 2, largest=False).indices] = 0.0
    pruned = prune_model(base, parse_spec("resnet20-prune-weight50")).eval()
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(pruned(x), base(x))


def test_mask_has_exact_count_even_with_ties():
    base = _trained_like(seed=11)
    with torch.no_grad():
        for conv in inner_convs(base):
            conv.weight.fill_(0.25)  # every score equal
    for g in ("kernel", "weight"):
        pruned = prune_model(base, parse_spec(f"resnet20-prune-{g}50"))
        for conv in inner_convs(pruned):
            assert int(conv.weight_mask.sum()) == conv.weight.numel() // 2


@pytest.mark.parametrize("granularity", ["kernel", "weight"])
def test_masked_weights_stay_zero_after_optimizer_steps(granularity):
    torch.manual_seed(13)
    model = build_model(f"resnet20-prune-{granularity}", 1, 8, 8, 10).train()
    before = {id(c): c.weight_orig.detach().clone() for c in inner_convs(model)}
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=5e-4)
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(model(torch.rand(8, 1, 8, 8)), torch.arange(8))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model(torch.rand(2, 1, 8, 8))  # the forward pre-hook recomputes weight = orig * mask
    for conv in inner_convs(model):
        dead = conv.weight_mask == 0
        units = conv.weight.numel() if granularity == "weight" else conv.weight[:, :, 0, 0].numel()
        per_unit = 1 if granularity == "weight" else 9
        assert dead.sum() == (units - keep_count(units, 0.5)) * per_unit
        assert (conv.weight[dead] == 0).all()
        assert not torch.equal(conv.weight_orig[~dead], before[id(conv)][~dead])  # it trained


def test_prune_model_rejects_quantized_networks():
    with pytest.raises(ValueError, match="float ResNets"):
        prune_model(build_model("resnet20-xnor", 1, 8, 8, 10), parse_spec("resnet20-prune-filter"))
    with pytest.raises(ValueError, match="float ResNets"):
        prune_model(build_model("tfc", 1, 8, 8, 10), parse_spec("resnet20-prune-filter"))
