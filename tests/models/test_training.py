"""Training: resume after a kill, extend a finished run, model card, KD and pruning flows."""

from __future__ import annotations

import json

import pytest
import torch

from hwbed.models import training
from hwbed.models.checkpoint import load_checkpoint, read_checkpoint
from hwbed.models.pruning import inner_convs
from hwbed.models.training import TrainConfig, train


def _cfg(tmp_path, model="resnet20", name="run", **kw):
    base = dict(
        model=model,
        data="digits",
        epochs=2,
        batch_size=32,
        limit=64,
        seed=0,
        out=str(tmp_path / name),
        progress=False,
        device="cpu",
    )
    base.update(kw)
    return TrainConfig(**base)


class Killed(Exception):
    """Stands for the process being killed in the middle of an epoch."""


def _kill_at_evaluation(monkeypatch, call: int):
    """Make the ``call``-th end-of-epoch evaluation die, as a kill during that epoch would."""
    real, calls = training.evaluate, []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "evaluate", dying)


def test_killed_run_resumes_where_it_stopped(tmp_path, monkeypatch, capsys):
    _kill_at_evaluation(monkeypatch, 2)
    with pytest.raises(Killed):
        train(_cfg(tmp_path, name="killed"))
    ckpt = tmp_path / "killed" / "model.pt"
    payload = read_checkpoint(ckpt)
    assert payload["epoch"] == 1 and payload["complete"] is False
    assert len(payload["train_state"]["history"]) == 1
    monkeypatch.undo()
    capsys.readouterr()

    assert train(_cfg(tmp_path, name="killed")) == ckpt
    assert "at epoch 1/2" in capsys.readouterr().out
    payload = read_checkpoint(ckpt)
    assert payload["epoch"] == 2 and payload["complete"] is True
    history = payload["train_state"]["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert [h["lr"] for h in history] == pytest.approx([0.1, 0.05])

    # the resumed run equals one that was never interrupted
    train(_cfg(tmp_path, name="straight"))
    resumed, _ = load_checkpoint(ckpt)
    straight, _ = load_checkpoint(tmp_path / "straight" / "model.pt")
    for (name, a), b in zip(
        resumed.state_dict().items(), straight.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_rerun_with_more_epochs_continues_a_finished_run(tmp_path, capsys):
    ckpt = train(_cfg(tmp_path, epochs=1))
    first = read_checkpoint(ckpt)
    assert first["epoch"] == 1 and first["complete"] is True
    capsys.readouterr()
    train(_cfg(tmp_path, epochs=2))
    assert "resuming resnet20 from" in capsys.readouterr().out
    payload = read_checkpoint(ckpt)
    assert payload["epoch"] == 2 and payload["complete"] is True
    history = payload["train_state"]["history"]
    assert len(history) == 2 and history[0] == first["train_state"]["history"][0]
    # the second epoch follows the 2-epoch cosine schedule, not the annealed 1-epoch one
    assert history[1]["lr"] == pytest.approx(0.05)
    assert payload["train_state"]["scheduler"]["T_max"] == 2
    card = json.loads((tmp_path / "run" / "model.json").read_text())
    assert card["epoch"] == 2 and len(card["history"]) == 2


def test_complete_run_is_not_retrained(tmp_path, capsys):
    ckpt = train(_cfg(tmp_path, epochs=1))
    before = ckpt.read_bytes()
    capsys.readouterr()
    assert train(_cfg(tmp_path, epochs=1)) == ckpt
    assert "nothing to do" in capsys.readouterr().out
    assert ckpt.read_bytes() == before


def test_model_card_contents(tmp_path):
    cfg = _cfg(tmp_path, model="resnet20-xnor", epochs=1, seed=3)
    ckpt = train(cfg)
    card = json.loads(ckpt.with_suffix(".json").read_text())
    assert card["spec"] == "resnet20-xnor" and card["data"] == "digits"
    assert card["input_shape"] == [1, 8, 8] and card["classes"] == 10
    assert 0.0 <= card["test_accuracy"] <= 1.0 and card["test_images"] == 300
    assert card["seed"] == 3 and card["complete"] is True
    assert {"hwbed", "torch", "brevitas", "python"} <= card["versions"].keys()
    assert card["settings"]["model"] == "resnet20-xnor" and card["settings"]["limit"] == 64
    assert card["settings"]["epochs"] == 1 and card["settings"]["seed"] == 3
    assert len(card["history"]) == 1
    model, meta = load_checkpoint(ckpt)
    assert meta.card["test_accuracy"] == card["test_accuracy"]
    # the reported accuracy is the accuracy of the saved network
    assert (
        training.evaluate(model, training.Batches(*_test_split(), 256), torch.device("cpu"))
        == card["test_accuracy"]
    )


def _test_split():
    from hwbed.models.data import load_dataset

    x, y, _ = load_dataset("digits", "test")
    return x, y


def test_zero_epochs_writes_a_complete_card(tmp_path):
    ckpt = train(_cfg(tmp_path, model="resnet20-w4a4", epochs=0))
    card = json.loads(ckpt.with_suffix(".json").read_text())
    assert card["complete"] is True and card["seed"] == 0 and "test_accuracy" in card
    load_checkpoint(ckpt)  # an untrained quantized network loads


def test_kd_without_teacher_errors_clearly(tmp_path):
    with pytest.raises(ValueError, match="--teacher"):
        train(_cfg(tmp_path, model="resnet20-kd"))


def test_kd_with_teacher(tmp_path):
    teacher = train(_cfg(tmp_path, model="tfc", name="teacher", epochs=1))
    ckpt = train(
        _cfg(
            tmp_path,
            model="tfc-kd",
            name="student",
            epochs=1,
            teacher=str(teacher),
            kd_temperature=4.0,
        )
    )
    card = json.loads(ckpt.with_suffix(".json").read_text())
    assert card["spec"] == "tfc-kd" and card["settings"]["teacher"] == str(teacher)
    assert card["settings"]["kd_temperature"] == 4.0


def test_kd_teacher_on_other_data_is_refused(tmp_path):
    teacher = train(_cfg(tmp_path, model="tfc", name="teacher", epochs=1))
    with pytest.raises(ValueError, match="trained on digits"):
        train(
            _cfg(
                tmp_path, model="tfc-kd", data="synthetic", name="s", epochs=1, teacher=str(teacher)
            )
        )


def test_prune_spec_pretrains_prunes_and_fine_tunes(tmp_path):
    ckpt = train(_cfg(tmp_path, model="resnet20-prune-weight", epochs=1, pretrain_epochs=1))
    pre = tmp_path / "run" / "pretrain" / "model.pt"
    assert read_checkpoint(pre)["spec"] == "resnet20" and read_checkpoint(pre)["complete"]
    model, _ = load_checkpoint(ckpt)
    base, _ = load_checkpoint(pre)
    for conv, conv0 in zip(inner_convs(model), inner_convs(base), strict=True):
        assert int(conv.weight_mask.sum()) == conv.weight.numel() // 2
        assert (conv.weight[conv.weight_mask == 0] == 0).all()
        # the kept weights started from the pretrained ones: they stay close after one epoch
        kept = conv.weight_mask.bool()
        assert (conv.weight[kept] - conv0.weight[kept]).abs().mean() < conv0.weight[
            kept
        ].abs().mean()


def test_out_dir_holding_another_spec_is_refused(tmp_path):
    train(_cfg(tmp_path, model="tfc", epochs=1))
    with pytest.raises(ValueError, match="choose another --out"):
        train(_cfg(tmp_path, model="sfc", epochs=1))


def test_default_output_dir():
    assert (
        str(TrainConfig(model="resnet20-prune-filter", data="digits", seed=2).output_dir())
        == "runs/resnet20-prune-filter50-digits-s2"
    )
