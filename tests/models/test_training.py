"""Training: resume after a kill, extend a finished run, model card, KD and pruning flows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from hwbed import train as train_cli
from hwbed.cli import show_progress
from hwbed.models import training
from hwbed.models.checkpoint import load_checkpoint, read_checkpoint
from hwbed.models.pruning import inner_convs
from hwbed.models.training import RunConflictError, TrainConfig, _digest, train


@pytest.fixture(autouse=True)
def progress_on_stdout():
    """train() reports on hwbed's progress logger: on stdout here, as the CLI prints it."""
    with show_progress():
        yield


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


def _without_seconds(history):
    """Per-epoch history without the wall-clock time (the one field a rerun cannot repeat)."""
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def _assert_same_run(a, b):
    """Two checkpoint paths hold the same weights, Brevitas state and per-epoch history."""
    pa, pb = read_checkpoint(a), read_checkpoint(b)
    assert pa["state_dict"].keys() == pb["state_dict"].keys()
    for name, tensor in pa["state_dict"].items():
        assert torch.equal(tensor, pb["state_dict"][name]), name
    ma, mb = pa["train_state"]["modules"], pb["train_state"]["modules"]
    assert {n: m["attrs"] for n, m in ma.items()} == {n: m["attrs"] for n, m in mb.items()}
    for name, module in ma.items():
        for key, tensor in module["tensors"].items():
            assert torch.equal(tensor, mb[name]["tensors"][key]), (name, key)
    ha, hb = pa["train_state"]["history"], pb["train_state"]["history"]
    assert _without_seconds(ha) == _without_seconds(hb)
    assert len(ha) == pa["epoch"]


@pytest.mark.parametrize("model", ["resnet20", "resnet20-xnor"])
def test_killed_run_resumes_where_it_stopped(tmp_path, monkeypatch, capsys, model):
    """resnet20-xnor is still in Brevitas' statistics phase (300 steps) when it resumes."""
    _kill_at_evaluation(monkeypatch, 2)
    with pytest.raises(Killed):
        train(_cfg(tmp_path, model, name="killed"))
    ckpt = tmp_path / "killed" / "model.pt"
    payload = read_checkpoint(ckpt)
    assert payload["epoch"] == 1 and payload["complete"] is False
    assert len(payload["train_state"]["history"]) == 1
    counters = {m["attrs"]["counter"] for m in payload["train_state"]["modules"].values()}
    # 2 steps of 32 of the 64 images; a scale shared by two quantizers counts both calls
    assert counters == (set() if model == "resnet20" else {2, 4})
    monkeypatch.undo()
    capsys.readouterr()

    assert train(_cfg(tmp_path, model, name="killed")) == ckpt
    assert "at epoch 1/2" in capsys.readouterr().out
    payload = read_checkpoint(ckpt)
    assert payload["epoch"] == 2 and payload["complete"] is True
    history = payload["train_state"]["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    base = 0.1 if model == "resnet20" else 2e-3
    assert [h["lr"] for h in history] == pytest.approx([base, base / 2])

    # the resumed run equals one that was never interrupted
    train(_cfg(tmp_path, model, name="straight"))
    _assert_same_run(ckpt, tmp_path / "straight" / "model.pt")


KILL_RUN = ["--model", "resnet20-xnor", "--data", "digits", "--limit", "256", "--batch-size", "32"]


def _train_process(out, epochs=4):
    """``python -m hwbed.train`` on one thread (so that two processes compute identically)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "hwbed.train", *KILL_RUN, "--epochs", str(epochs)]
    cmd += ["--device", "cpu", "--no-progress", "--out", str(out)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigkilled_process_resumes_bit_identically(tmp_path):
    """A real SIGKILL in the middle of epoch 2 of 4, then the same command again."""
    straight = _train_process(tmp_path / "straight")
    killed = _train_process(tmp_path / "killed")
    ckpt = tmp_path / "killed" / "model.pt"
    deadline = time.monotonic() + 120
    while not ckpt.is_file():
        assert killed.poll() is None, killed.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    # half an epoch later: the first epoch (train and test) took history[0]["seconds"]
    time.sleep(read_checkpoint(ckpt)["train_state"]["history"][0]["seconds"] / 2)
    os.kill(killed.pid, signal.SIGKILL)
    killed.communicate()
    assert killed.returncode == -signal.SIGKILL
    done = read_checkpoint(ckpt)["epoch"]
    assert 1 <= done < 4

    resumed = _train_process(tmp_path / "killed")
    out, err = resumed.communicate()
    assert resumed.returncode == 0, err
    assert f"resuming resnet20-xnor from {ckpt} at epoch {done}/4" in out
    out, err = straight.communicate()
    assert straight.returncode == 0, err
    _assert_same_run(ckpt, tmp_path / "straight" / "model.pt")
    cards = [json.loads((tmp_path / n / "model.json").read_text()) for n in ("killed", "straight")]
    for key in ("test_accuracy", "best_test_accuracy", "best_epoch", "epoch_targets"):
        assert cards[0][key] == cards[1][key], key
    assert not list((tmp_path / "killed").glob("*.tmp"))


def test_rerun_with_more_epochs_continues_a_finished_run(tmp_path, capsys):
    ckpt = train(_cfg(tmp_path, epochs=2))
    first = read_checkpoint(ckpt)
    assert first["epoch"] == 2 and first["complete"] is True
    capsys.readouterr()
    train(_cfg(tmp_path, epochs=3))
    out = capsys.readouterr().out
    assert f"resuming resnet20 from {ckpt} at epoch 2/3" in out
    assert "the first 2 epochs followed the 2-epoch schedule" in out
    payload = read_checkpoint(ckpt)
    assert payload["epoch"] == 3 and payload["complete"] is True
    history = payload["train_state"]["history"]
    assert len(history) == 3 and history[:2] == first["train_state"]["history"]
    # the third epoch follows the 3-epoch cosine schedule, not the annealed 2-epoch one
    assert history[2]["lr"] == _cosine_lrs(0.1, 3)[2]
    assert payload["train_state"]["scheduler"]["T_max"] == 3
    card = json.loads((tmp_path / "run" / "model.json").read_text())
    assert card["epoch"] == 3 and len(card["history"]) == 3
    assert card["epoch_targets"] == [2, 3] and card["settings"]["epochs"] == 3


def _cosine_lrs(base, epochs):
    """The learning rate of each epoch of a run started with ``epochs``, as torch computes it."""
    param = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([param], lr=base)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    lrs = []
    for _ in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_extending_a_one_epoch_run_equals_training_that_long(tmp_path):
    """After one epoch every cosine schedule is still at its base rate: nothing differs."""
    for model in ("resnet20", "resnet20-xnor"):
        train(_cfg(tmp_path, model, name=f"{model}-short", epochs=1))
        extended = train(_cfg(tmp_path, model, name=f"{model}-short", epochs=2))
        straight = train(_cfg(tmp_path, model, name=f"{model}-straight", epochs=2))
        _assert_same_run(extended, straight)
        card = json.loads(extended.with_suffix(".json").read_text())
        assert card["epoch_targets"] == [1, 2]


def test_complete_run_is_not_retrained(tmp_path, capsys):
    ckpt = train(_cfg(tmp_path, epochs=1))
    before = ckpt.read_bytes()
    capsys.readouterr()
    # lr=None resolves to SGD's 0.1, and device, progress and out do not change the result
    assert train(_cfg(tmp_path, epochs=1, lr=0.1, progress=True, device="auto")) == ckpt
    assert "nothing to do" in capsys.readouterr().out
    assert ckpt.read_bytes() == before


def test_rerun_with_other_settings_is_refused(tmp_path):
    ckpt = train(_cfg(tmp_path, epochs=1))
    before = ckpt.read_bytes()
    out = tmp_path / "run"
    cases = [
        (dict(lr=0.01), "lr=0.1, asked lr=0.01"),
        (dict(optimizer="adam"), "optimizer=sgd and lr=0.1, asked optimizer=adam and lr=0.002"),
        (
            dict(batch_size=16, seed=1, augment=False),
            "batch_size=32 and seed=0 and augment=True, asked batch_size=16 and seed=1 and "
            "augment=False",
        ),
        (dict(weight_decay=0.0), "weight_decay=0.0005, asked weight_decay=0.0"),
        (dict(limit=None), "limit=64, asked limit=None"),
        (dict(data="synthetic"), "data=digits, asked data=synthetic"),
    ]
    for changes, message in cases:
        with pytest.raises(RunConflictError) as info:
            train(_cfg(tmp_path, epochs=1, **changes))
        assert str(info.value) == f"{out}: trained with {message} (use --force to replace it)"
    assert ckpt.read_bytes() == before


def test_fewer_epochs_than_recorded_is_refused(tmp_path):
    train(_cfg(tmp_path, epochs=2))
    with pytest.raises(RunConflictError) as info:
        train(_cfg(tmp_path, epochs=1, lr=0.01))
    assert str(info.value) == (
        f"{tmp_path / 'run'}: trained with epochs=2 and lr=0.1, asked epochs=1 and lr=0.01 "
        "(use --force to replace it)"
    )


def test_force_replaces_a_conflicting_run(tmp_path, capsys):
    train(_cfg(tmp_path, epochs=2))
    capsys.readouterr()
    ckpt = train(_cfg(tmp_path, epochs=1, lr=0.01, force=True))
    assert capsys.readouterr().out.startswith(
        f"{tmp_path / 'run'}: trained with epochs=2 and lr=0.1, asked epochs=1 and lr=0.01; "
        "replacing it (--force)\n"
    )
    card = json.loads(ckpt.with_suffix(".json").read_text())
    assert card["result_settings"]["lr"] == 0.01 and card["epoch_targets"] == [1]
    _assert_same_run(ckpt, train(_cfg(tmp_path, name="fresh", epochs=1, lr=0.01)))
    # --force on a matching run changes nothing: the same command resumes or is complete
    before = ckpt.read_bytes()
    train(_cfg(tmp_path, epochs=1, lr=0.01, force=True))
    assert ckpt.read_bytes() == before


def test_changed_data_content_is_refused(tmp_path, monkeypatch):
    """Same data name and settings, other images (an edited --data-dir): refused."""
    train(_cfg(tmp_path, epochs=1))
    digests = []
    real = training.load_dataset

    def edited(name, split, **kwargs):
        x, y, info = real(name, split, **kwargs)
        if split == "train":
            x = x.copy()
            x[0, 0, 0, 0] ^= 1
        return x, y, info

    monkeypatch.setattr(training, "_digest", lambda *a: digests.append(_digest(*a)) or digests[-1])
    train(_cfg(tmp_path, epochs=1))  # unchanged: nothing to do
    monkeypatch.setattr(training, "load_dataset", edited)
    with pytest.raises(RunConflictError) as info:
        train(_cfg(tmp_path, epochs=1))
    assert str(info.value) == (
        f"{tmp_path / 'run'}: trained with data_sha256={digests[0][:12]}, asked "
        f"data_sha256={digests[1][:12]} (use --force to replace it)"
    )


def test_run_recorded_only_in_its_model_card(tmp_path, capsys):
    """Checkpoints of earlier versions: the settings come from the card's ``settings``."""
    ckpt = train(_cfg(tmp_path, epochs=1))
    payload = torch.load(ckpt, weights_only=True)
    for key in ("settings", "epoch_targets", "card", "modules"):
        del payload["train_state"][key]
    torch.save(payload, ckpt)
    with pytest.raises(RunConflictError, match="trained with lr=0.1, asked lr=0.01"):
        train(_cfg(tmp_path, epochs=1, lr=0.01))
    capsys.readouterr()
    train(_cfg(tmp_path, epochs=1))
    assert "nothing to do" in capsys.readouterr().out


def test_card_left_stale_by_a_kill_is_rewritten(tmp_path):
    """A kill between writing the checkpoint and its card: the rerun writes the card."""
    ckpt = train(_cfg(tmp_path, epochs=1))
    card = ckpt.with_suffix(".json").read_text()
    ckpt.with_suffix(".json").write_text(json.dumps({"epoch": 0}))
    train(_cfg(tmp_path, epochs=1))
    fresh = json.loads(ckpt.with_suffix(".json").read_text())
    assert {k: v for k, v in fresh.items() if k != "versions"} == {
        k: v for k, v in json.loads(card).items() if k != "versions"
    }


def test_cli_refuses_other_settings_in_one_line(tmp_path, capsys):
    args = ["--model", "tfc-w1a1", "--limit", "64", "--epochs", "1", "--out", str(tmp_path)]
    assert train_cli.main([*args, "--no-progress"]) == 0
    capsys.readouterr()
    assert train_cli.main([*args, "--no-progress", "--lr", "0.01"]) == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path}: trained with lr=0.02, asked lr=0.01 (use --force to replace it)\n"
    )
    assert train_cli.main([*args, "--no-progress", "--lr", "0.01", "--force"]) == 0


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
    assert card["accuracy_reported"] == "final epoch" and card["epoch_targets"] == [1]
    assert card["best_test_accuracy"] == card["test_accuracy"] and card["best_epoch"] == 1
    assert card["result_settings"] == {
        "data": "digits",
        "limit": 64,
        "data_sha256": card["result_settings"]["data_sha256"],
        "batch_size": 32,
        "seed": 3,
        "augment": True,
        "optimizer": "adam",
        "lr": 0.002,
    }
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


def test_best_and_final_accuracy_are_both_in_the_card(tmp_path, monkeypatch):
    accuracies = iter([0.5, 0.75, 0.25])
    monkeypatch.setattr(training, "evaluate", lambda *a: next(accuracies))
    card = json.loads(train(_cfg(tmp_path, epochs=3)).with_suffix(".json").read_text())
    assert [h["test_accuracy"] for h in card["history"]] == [0.5, 0.75, 0.25]
    assert card["test_accuracy"] == 0.25 and card["accuracy_reported"] == "final epoch"
    assert card["best_test_accuracy"] == 0.75 and card["best_epoch"] == 2


def test_zero_epochs_writes_a_complete_card(tmp_path):
    ckpt = train(_cfg(tmp_path, model="resnet20-w4a4", epochs=0))
    card = json.loads(ckpt.with_suffix(".json").read_text())
    assert card["complete"] is True and card["seed"] == 0 and "test_accuracy" in card
    assert card["best_epoch"] == 0 and card["best_test_accuracy"] == card["test_accuracy"]
    load_checkpoint(ckpt)  # an untrained quantized network loads
    # and it can be extended: the untrained state is a complete training state
    train(_cfg(tmp_path, model="resnet20-w4a4", epochs=1))
    assert read_checkpoint(ckpt)["epoch"] == 1


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
    student = dict(model="tfc-kd", name="student", epochs=1, teacher=str(teacher))
    with pytest.raises(RunConflictError, match="trained with kd_temperature=4.0, asked kd_te"):
        train(_cfg(tmp_path, **student))
    # the teacher is compared by content: a copy elsewhere is the same run, a retrained one not
    copy = tmp_path / "copy" / "model.pt"
    copy.parent.mkdir()
    copy.write_bytes(teacher.read_bytes())
    copy.with_suffix(".json").write_bytes(teacher.with_suffix(".json").read_bytes())
    student.update(teacher=str(copy), kd_temperature=4.0)
    assert train(_cfg(tmp_path, **student)) == ckpt
    old = card["result_settings"]["teacher_sha256"][:12]
    train(_cfg(tmp_path, model="tfc", name="copy", epochs=2))
    with pytest.raises(RunConflictError, match=f"trained with teacher_sha256={old}, asked"):
        train(_cfg(tmp_path, **student))


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
    # pretrain_epochs=None means "as many as the run was started with": the same run
    assert train(_cfg(tmp_path, model="resnet20-prune-weight", epochs=1)) == ckpt
    with pytest.raises(RunConflictError, match="pretrain_epochs=1, asked pretrain_epochs=2"):
        train(_cfg(tmp_path, model="resnet20-prune-weight", epochs=1, pretrain_epochs=2))


def test_out_dir_holding_another_spec_is_refused(tmp_path):
    train(_cfg(tmp_path, model="tfc", epochs=1))
    with pytest.raises(ValueError, match="choose another --out"):
        train(_cfg(tmp_path, model="sfc", epochs=1))


def test_default_output_dir():
    assert (
        str(TrainConfig(model="resnet20-prune-filter", data="digits", seed=2).output_dir())
        == "runs/resnet20-prune-filter50-digits-s2"
    )
