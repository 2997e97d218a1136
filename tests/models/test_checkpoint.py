"""Checkpoints: identical eval outputs after a round trip; every corrupt file names itself."""

from __future__ import annotations

import json

import pytest
import torch

from hwbed.models.checkpoint import (
    FORMAT,
    CheckpointError,
    CheckpointMeta,
    card_path,
    load_checkpoint,
    read_checkpoint,
    restore_runtime_state,
    runtime_state,
    save_checkpoint,
)
from hwbed.models.spec import parse_spec
from hwbed.models.zoo import build_model

ROUND_TRIP = [
    "resnet20",
    "resnet20-xnor",
    "resnet20-abc3x3",
    "resnet20-w4a4",
    "resnet20-prune-filter",
    "resnet20-prune-kernel",
    "resnet20-prune-weight30",
    "cnv-w1a1",
    "tfc-w2a2",
    pytest.param("resnet18-xnor", marks=pytest.mark.slow),
]


def _shape(spec):
    return (3, 32, 32) if parse_spec(spec).arch in ("cnv", "resnet18") else (1, 8, 8)


def _train_steps(model, shape, steps, seed=0):
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(torch.rand(8, *shape)), torch.arange(8))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _save(tmp_path, spec, model, name="model.pt", **card):
    path = tmp_path / name
    meta = CheckpointMeta(parse_spec(spec), "digits", _shape(spec), 10, epoch=3, card=card)
    save_checkpoint(path, model, meta)
    return path


def _scales(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if "scaling_impl" in n}


@pytest.mark.parametrize("spec", ROUND_TRIP)
def test_round_trip_gives_identical_eval_outputs(tmp_path, spec, calibrated):
    shape = _shape(spec)
    torch.manual_seed(1)
    model = build_model(spec, *shape, 10)
    calibrated(model, torch.rand(8, *shape))  # learned quantizer scales take over
    _train_steps(model, shape, 2)
    path = _save(tmp_path, spec, model)
    loaded, meta = load_checkpoint(path, expect_spec=spec)
    assert not loaded.training
    assert meta.spec == parse_spec(spec) and meta.data == "digits" and meta.epoch == 3
    assert meta.input_shape == shape and meta.classes == 10
    x = torch.rand(7, *shape)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    scales = _scales(model)
    assert _scales(loaded).keys() == scales.keys()
    for name, value in _scales(loaded).items():
        assert torch.equal(value, scales[name]), name
    assert type(loaded) is type(model)


@pytest.mark.parametrize("steps", [0, 3])
@pytest.mark.parametrize("spec", ["resnet20-xnor", "resnet20-w4a4", "resnet20-abc1x1"])
def test_round_trip_during_brevitas_stats_collection(tmp_path, spec, steps):
    """Saved before any step (uncalibrated) or while scales still collect statistics."""
    shape = _shape(spec)
    torch.manual_seed(2)
    model = build_model(spec, *shape, 10)
    _train_steps(model, shape, steps)
    counters = {m.counter for m in model.modules() if hasattr(m, "collect_stats_steps")}
    if steps == 0:
        assert counters == {0}
    else:  # a shared stream scale counts every call, so some counters run ahead
        assert all(steps <= c < 300 for c in counters)
    path = _save(tmp_path, spec, model)
    loaded, _ = load_checkpoint(path)
    x = torch.rand(5, *shape)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


@pytest.mark.parametrize("spec", ["resnet20-xnor", "resnet20-w4a4"])
def test_runtime_state_continues_the_statistics_phase(spec):
    """state_dict ends Brevitas' statistics phase on load; runtime_state undoes that."""
    shape = _shape(spec)
    torch.manual_seed(2)
    model = _train_steps(build_model(spec, *shape, 10), shape, 3)
    loaded = build_model(spec, *shape, 10)
    loaded.load_state_dict(model.state_dict())
    restore_runtime_state(loaded, runtime_state(model))
    counters = {n: m.counter for n, m in model.named_modules() if hasattr(m, "counter")}
    assert {n: m.counter for n, m in loaded.named_modules() if hasattr(m, "counter")} == counters
    assert all(3 <= c < 300 for c in counters.values())
    _train_steps(model, shape, 2, seed=5)
    _train_steps(loaded, shape, 2, seed=5)
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_round_trip_restores_pruned_structure(tmp_path):
    model = build_model("resnet20-prune-channel30", 1, 8, 8, 10)
    _train_steps(model, (1, 8, 8), 1)
    path = _save(tmp_path, "resnet20-prune-channel30", model)
    loaded, meta = load_checkpoint(path)
    assert meta.arch["mids"] == [[12]] * 3 + [[23]] * 3 + [[45]] * 3
    assert [b.convs[0].out_channels for b in loaded.blocks] == [12] * 3 + [23] * 3 + [45] * 3


def test_model_card_is_written_beside_the_checkpoint(tmp_path):
    model = build_model("tfc-w1a1", 1, 8, 8, 10)
    path = _save(tmp_path, "tfc-w1a1", model, test_accuracy=0.5, seed=7)
    assert card_path(path) == tmp_path / "model.json"
    card = json.loads(card_path(path).read_text())
    assert card["spec"] == "tfc-w1a1" and card["data"] == "digits"
    assert card["input_shape"] == [1, 8, 8] and card["classes"] == 10
    assert card["checkpoint"] == "model.pt" and card["epoch"] == 3
    assert card["test_accuracy"] == 0.5 and card["seed"] == 7
    assert {"hwbed", "torch", "brevitas", "python"} <= card["versions"].keys()
    assert not list(tmp_path.glob("*.tmp"))
    _, meta = load_checkpoint(path)
    assert meta.card["seed"] == 7


def test_checkpoint_loads_with_weights_only(tmp_path):
    model = build_model("resnet20-prune-kernel", 1, 8, 8, 10)
    path = _save(tmp_path, "resnet20-prune-kernel", model)
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == FORMAT and payload["spec"] == "resnet20-prune-kernel50"
    assert read_checkpoint(path)["classes"] == 10


# --- corrupt or mismatched files -----------------------------------------------------------


@pytest.fixture
def good(tmp_path):
    torch.manual_seed(3)
    return _save(tmp_path, "resnet20", build_model("resnet20", 1, 8, 8, 10), name="good.pt")


def _expect_error(path, *fragments, **kwargs):
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, **kwargs)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_missing_file(tmp_path):
    _expect_error(tmp_path / "nope.pt", "does not exist")


def _unreadable(path, reason):
    message = _expect_error(path)
    assert message == f"{path}: not a hwbed checkpoint (unreadable: {reason})"
    assert "weights_only" not in message  # never torch's advice to unpickle an unknown file


def test_truncated_file(tmp_path, good):
    data = good.read_bytes()
    for cut in (len(data) // 2, 100):
        bad = tmp_path / f"cut{cut}.pt"
        bad.write_bytes(data[:cut])
        _unreadable(bad, "truncated or corrupt torch archive")
    bad = tmp_path / "cut1.pt"
    bad.write_bytes(data[:1])
    _unreadable(bad, "not a torch zip archive")


def test_random_bytes(tmp_path):
    bad = tmp_path / "random.pt"
    bad.write_bytes(
        torch.randint(
            0, 256, (4096,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
        )
        .numpy()
        .tobytes()
    )
    _unreadable(bad, "not a torch zip archive")


def test_empty_file(tmp_path):
    bad = tmp_path / "empty.pt"
    bad.write_bytes(b"")
    _unreadable(bad, "empty file")


@pytest.mark.parametrize("payload", [{"a": torch.zeros(2)}, [1, 2, 3], torch.zeros(3)])
def test_non_hwbed_torch_file(tmp_path, payload):
    bad = tmp_path / "other.pt"
    torch.save(payload, bad)
    assert _expect_error(bad) == f"{bad}: not a hwbed checkpoint (no '{FORMAT}' header)"


def test_plain_state_dict_is_not_a_checkpoint(tmp_path):
    bad = tmp_path / "sd.pt"
    torch.save(build_model("resnet20", 1, 8, 8, 10).state_dict(), bad)
    _expect_error(bad, "not a hwbed checkpoint (no ")


def test_pickled_module_is_refused(tmp_path):
    bad = tmp_path / "module.pt"
    torch.save(build_model("resnet20", 1, 8, 8, 10), bad)
    _unreadable(
        bad, "holds pickled objects (hwbed.models.resnet.ResNet), not only tensors and plain values"
    )


def test_spec_mismatch(good):
    _expect_error(
        good, "holds a resnet20 network", "not resnet20-xnor", expect_spec="resnet20-xnor"
    )
    load_checkpoint(good, expect_spec="resnet20-vanilla")  # same spec, other spelling


def _rewrite(src, dst, **changes):
    payload = torch.load(src, weights_only=True)
    payload.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del payload[key]
    torch.save(payload, dst)
    return dst


def test_state_dict_of_another_architecture(tmp_path, good):
    other = build_model("resnet32", 1, 8, 8, 10).state_dict()
    _expect_error(
        _rewrite(good, tmp_path / "arch.pt", state_dict=other), "does not fit a resnet20 network"
    )
    xnor = build_model("resnet20-xnor", 1, 8, 8, 10)
    _train_steps(xnor, (1, 8, 8), 1)
    _expect_error(
        _rewrite(good, tmp_path / "xnor.pt", state_dict=xnor.state_dict()),
        "does not fit a resnet20 network",
    )
    wide = build_model("resnet20", 1, 8, 8, 12).state_dict()  # classifier of another shape
    _expect_error(
        _rewrite(good, tmp_path / "classes.pt", state_dict=wide), "does not fit a resnet20 network"
    )


def test_missing_keys_are_an_error(tmp_path, good):
    sd = torch.load(good, weights_only=True)["state_dict"]
    del sd["blocks.3.bns.0.running_var"]
    _expect_error(_rewrite(good, tmp_path / "missing.pt", state_dict=sd), "running_var")


def test_unknown_spec_in_file(tmp_path, good):
    _expect_error(_rewrite(good, tmp_path / "spec.pt", spec="resnet21"), "unknown architecture")


def test_wrong_version_and_missing_fields(tmp_path, good):
    _expect_error(_rewrite(good, tmp_path / "v.pt", version=99), "version 99")
    _expect_error(_rewrite(good, tmp_path / "f.pt", state_dict=None), "state_dict")


@pytest.mark.parametrize("spec", ["resnet20-prune-kernel", "resnet20-prune-weight"])
def test_loaded_masked_weights_are_current_before_any_forward(tmp_path, spec):
    model = _train_steps(build_model(spec, 1, 8, 8, 10), (1, 8, 8), 1)
    model(torch.rand(1, 1, 8, 8))
    loaded, _ = load_checkpoint(_save(tmp_path, spec, model))
    for name, module in loaded.named_modules():
        if hasattr(module, "weight_mask"):
            assert torch.equal(module.weight, module.weight_orig * module.weight_mask), name
            assert torch.equal(module.weight, dict(model.named_modules())[name].weight), name
