"""Training of every variant: plain, distilled (KD), prune-then-fine-tune, PTQ + QAT; resumable.

One epoch at a time: train with a progress bar, evaluate on the test split, then write the
checkpoint (weights, optimizer, scheduler, every random stream, Brevitas' statistics phase)
and model card atomically, so a killed run continues from its last finished epoch exactly
as if it had not been killed. A rerun into the same folder with settings that change the
result is refused (``force`` replaces the run); one with more epochs extends it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .checkpoint import (
    CheckpointError,
    CheckpointMeta,
    card_path,
    load_checkpoint,
    read_checkpoint,
    restore_runtime_state,
    runtime_state,
    save_checkpoint,
    write_card,
)
from .data import CIFAR_AUGMENT, DIGITS_AUGMENT, Batches, load_dataset
from .distill import kd_loss
from .pruning import prune_model
from .quantize import calibration_subset, images_digest, ptq, quantized_copy
from .spec import ModelSpec, parse_spec
from .zoo import build_model, input_size

progress = logging.getLogger("hwbed.progress")
"""What a run reports as it goes (resume, epochs, replacement); the CLIs print it on stdout."""


class TrainError(ValueError):
    """Training settings that cannot work (a distilled spec without a teacher, ...)."""


class RunConflictError(CheckpointError):
    """The output folder holds a run that the requested settings would not reproduce."""


@dataclass
class TrainConfig:
    """Settings of one training run; recorded in the model card."""

    model: str
    data: str = "digits"
    data_dir: str | None = None
    epochs: int = 30
    batch_size: int = 64
    lr: float | None = None
    """None picks 0.1 for SGD, 2e-3 for Adam, BNN-PYNQ's 0.02 for CNV/TFC/SFC/LFC, and
    :data:`FINETUNE_LR` for Adam on an int spec that starts from ``init`` (not pruned)."""
    optimizer: str = "auto"
    """sgd, adam, or auto (Adam for quantized networks, SGD with momentum otherwise)."""
    weight_decay: float = 5e-4
    seed: int = 0
    out: str | None = None
    """Output folder; default runs/<spec>-<data>-s<seed>."""
    teacher: str | None = None
    """Teacher checkpoint for ``-kd`` specs."""
    kd_temperature: float = 30.0
    kd_alpha: float = 1.0
    init: str | None = None
    """Start from this checkpoint: one of this spec, the float version of an int (wXaY) spec
    (quantized and calibrated first: PTQ, then QAT), or for ``-prune-*`` the unpruned float
    network to prune."""
    calibration_images: int = 1024
    """Training images (a seeded subset) that calibrate a float network quantized to wXaY."""
    pretrain_epochs: int | None = None
    """``-prune-*`` without ``init``: epochs of float training before pruning (default: epochs)."""
    augment: bool = True
    limit: int | None = None
    device: str = "auto"
    progress: bool = True
    force: bool = False
    """Replace a run in the output folder that these settings would not reproduce."""

    def output_dir(self) -> Path:
        spec = parse_spec(self.model)
        return Path(self.out or f"runs/{spec.name}-{self.data}-s{self.seed}")


def pick_device(name: str) -> torch.device:
    """``auto`` is CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@torch.no_grad()
def evaluate(model: nn.Module, batches: Batches, device: torch.device) -> float:
    """Top-1 accuracy of ``model`` (eval mode) over ``batches``."""
    model.eval()
    correct = total = 0
    for x, y in batches:
        correct += (model(x.to(device)).argmax(1).cpu() == y).sum().item()
        total += len(y)
    return correct / max(total, 1)


def _optimizer_kind(spec: ModelSpec, cfg: TrainConfig) -> str:
    kind = cfg.optimizer
    if kind == "auto":
        kind = "adam" if spec.quantized else "sgd"
    if kind not in ("sgd", "adam"):
        raise TrainError(f"unknown optimizer {cfg.optimizer!r}; use sgd, adam or auto")
    return kind


FINETUNE_LR = 2e-5
"""Adam's default rate for QAT that starts from a trained network (an int spec's ``init``,
e.g. its PTQ'd float version): at the from-scratch 2e-3, one epoch of digits resnet20-w8a8
fine-tuning loses the PTQ accuracy (0.983 -> 0.850); at 2e-5 it keeps it (0.987)."""


def _default_lr(spec: ModelSpec, kind: str, cfg: TrainConfig | None = None) -> float:
    if kind == "adam":
        if cfg is not None and cfg.init is not None and spec.quant == "int" and not spec.prune:
            return FINETUNE_LR
        return 0.02 if spec.family == "bnn-pynq" else 2e-3
    return 0.1


def make_optimizer(model: nn.Module, spec: ModelSpec, cfg: TrainConfig):
    kind = _optimizer_kind(spec, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    lr = cfg.lr or _default_lr(spec, kind, cfg)
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=0.0)
    return torch.optim.SGD(
        params, lr=lr, momentum=0.9, weight_decay=cfg.weight_decay, nesterov=True
    )


def train(cfg: TrainConfig) -> Path:
    """Train ``cfg.model`` on ``cfg.data``; return the checkpoint path.

    A run already in the output folder is resumed, extended to more epochs, or found
    complete; one trained with other settings (or for more epochs) raises
    :class:`RunConflictError` unless ``cfg.force``.
    """
    spec = parse_spec(cfg.model)
    device = pick_device(cfg.device)
    out = cfg.output_dir()
    ckpt = out / "model.pt"
    seed_everything(cfg.seed)
    size = input_size(spec)
    x_tr, y_tr, info = load_dataset(
        cfg.data, "train", data_dir=cfg.data_dir, size=size, limit=cfg.limit, seed=cfg.seed
    )
    x_te, y_te, _ = load_dataset(cfg.data, "test", data_dir=cfg.data_dir, size=size)
    shape = (info.channels, info.height, info.width)

    teacher = None
    if spec.kd and (cfg.teacher is not None or cfg.epochs > 0):  # 0 epochs: nothing to distill
        if cfg.teacher is None:
            raise TrainError(
                f"{spec.name} is trained by distillation: pass --teacher CHECKPOINT "
                "(e.g. a trained resnet56 on the same data)"
            )
        teacher, tmeta = load_checkpoint(cfg.teacher, device=str(device))
        if tmeta.data != cfg.data or tuple(tmeta.input_shape) != shape:
            raise TrainError(f"teacher {cfg.teacher} was trained on {tmeta.data}, not {cfg.data}")

    data_sha = _digest(x_tr, y_tr, x_te, y_te)
    resume, targets = _existing_run(cfg, spec, ckpt, data_sha)
    test_batches = Batches(x_te, y_te, 256)
    origin = None
    if resume is not None:
        state = resume["train_state"]
        model, meta = load_checkpoint(ckpt, device=str(device))
        restore_runtime_state(model, state.get("modules", {}))
        origin = state.get("quantized_from")
        if resume["complete"] and resume["epoch"] == cfg.epochs:
            card = state.get("card")
            if card is not None and _card_epoch(ckpt) != resume["epoch"]:  # killed in between
                write_card(ckpt, _meta(spec, cfg, shape, info, resume["epoch"], card))
            acc = (card or meta.card).get("test_accuracy")
            progress.info(f"{ckpt} is complete ({acc}); nothing to do")
            return ckpt
    else:
        model, origin = _initial_model(
            spec, cfg, shape, info.num_classes, device, x_tr, test_batches
        )
    extended_from = targets[-1] if targets and targets[-1] != cfg.epochs else None
    if not targets or extended_from is not None:
        targets = [*targets, cfg.epochs]  # a longer run extends the recorded one
    model.to(device)
    settings = _result_settings(cfg, spec, targets[0], data_sha)

    optimizer = make_optimizer(model, spec, cfg)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(cfg.epochs, 1))
    start, history = 0, []
    if resume is not None:
        state = resume["train_state"]
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _retarget_cosine(scheduler, cfg.epochs)
        start, history = resume["epoch"], state.get("history", [])
        progress.info(f"resuming {spec.name} from {ckpt} at epoch {start}/{cfg.epochs}")
        if extended_from is not None and start > 1:
            progress.info(
                f"note: the first {start} epochs followed the {extended_from}-epoch schedule; "
                f"the result differs from a {cfg.epochs}-epoch run trained from the start"
            )

    augment = None
    if cfg.augment:
        augment = CIFAR_AUGMENT if info.channels == 3 and info.height >= 32 else DIGITS_AUGMENT
    train_batches = Batches(
        x_tr,
        y_tr,
        cfg.batch_size,
        shuffle=True,
        augment=augment,
        seed=cfg.seed,
        drop_last=len(y_tr) > cfg.batch_size,
    )
    if resume is not None:  # continue every random stream where the last epoch left it
        _set_rng_state(resume["train_state"], train_batches, cfg.seed + start)

    def save(epoch: int, acc: float, elapsed: float) -> None:
        best = max(history, key=lambda h: h["test_accuracy"], default=None)
        card = {
            "test_accuracy": acc,
            "accuracy_reported": "final epoch",
            "best_test_accuracy": acc if best is None else best["test_accuracy"],
            "best_epoch": epoch if best is None else best["epoch"],
            "seed": cfg.seed,
            "train_seconds": round(elapsed, 1),
            "settings": asdict(cfg),
            "result_settings": settings,
            "epoch_targets": targets,
            "history": history,
            "test_images": len(y_te),
        }
        if origin is not None:
            card["quantized_from"] = {**origin, "finetune_epochs": epoch}
        state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": _rng_state(train_batches),
            "modules": runtime_state(model),
            "history": history,
            "settings": settings,
            "epoch_targets": targets,
            "card": card,
        }
        if origin is not None:
            state["quantized_from"] = origin
        save_checkpoint(ckpt, model, _meta(spec, cfg, shape, info, epoch, card), state)

    clip = getattr(model, "clip_weights", None) if spec.quant == "int" else None
    t0 = time.perf_counter() - sum(h["seconds"] for h in history)
    for epoch in range(start, cfg.epochs):
        model.train()
        bar = tqdm(
            train_batches,
            desc=f"{spec.name} epoch {epoch + 1}/{cfg.epochs}",
            disable=not cfg.progress,
            leave=False,
        )
        running, lr = 0.0, optimizer.param_groups[0]["lr"]
        for step, (x, y) in enumerate(bar):
            x, y = x.to(device), y.to(device)
            logits = model(x)
            if teacher is not None:
                with torch.no_grad():
                    t_logits = teacher(x)
                loss = kd_loss(logits, t_logits, y, cfg.kd_temperature, cfg.kd_alpha)
            else:
                loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if clip is not None:
                clip(-1.0, 1.0)
            running += loss.item()
            bar.set_postfix(loss=f"{running / (step + 1):.3f}")
        scheduler.step()
        acc = evaluate(model, test_batches, device)
        elapsed = time.perf_counter() - t0
        history.append(
            {
                "epoch": epoch + 1,
                "lr": lr,
                "loss": running / max(len(train_batches), 1),
                "test_accuracy": acc,
                "seconds": elapsed - sum(h["seconds"] for h in history),
            }
        )
        progress.info(
            f"{spec.name} epoch {epoch + 1}/{cfg.epochs}: loss {history[-1]['loss']:.4f} "
            f"test acc {acc:.4f} ({elapsed:.0f}s)"
        )
        save(epoch + 1, acc, elapsed)
    if cfg.epochs == 0:
        save(0, evaluate(model, test_batches, device), 0.0)
    return ckpt


def _meta(spec, cfg: TrainConfig, shape, info, epoch: int, card: dict) -> CheckpointMeta:
    return CheckpointMeta(
        spec,
        cfg.data,
        shape,
        info.num_classes,
        epoch=epoch,
        complete=epoch == cfg.epochs,
        card=card,
    )


def _card_epoch(ckpt: Path) -> int | None:
    """The epoch the model card beside ``ckpt`` describes (None: no readable card)."""
    try:
        return json.loads(card_path(ckpt).read_text()).get("epoch")
    except (OSError, ValueError):
        return None


def _digest(*arrays: np.ndarray) -> str:
    """SHA-256 of arrays' shapes, dtypes and bytes: what a run was trained and tested on."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _file_digest(path: str | None) -> str | None:
    if path is None or not Path(path).is_file():
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _result_settings(cfg: TrainConfig, spec: ModelSpec, first_epochs: int, data_sha) -> dict:
    """The settings that decide a run's result, resolved (``lr=None`` -> the value used).

    ``epochs`` is handled apart (a run may be extended); ``*_sha256`` are content digests,
    so a moved data folder or teacher file is the same run. ``first_epochs`` is the epoch
    count the run was started with (the default length of a pruned run's pretraining).
    """
    kind = _optimizer_kind(spec, cfg)
    settings: dict[str, Any] = {
        "data": cfg.data,
        "limit": cfg.limit,
        "data_sha256": data_sha,
        "batch_size": cfg.batch_size,
        "seed": cfg.seed,
        "augment": cfg.augment,
        "optimizer": kind,
        "lr": cfg.lr or _default_lr(spec, kind, cfg),
    }
    if kind == "sgd":  # Adam runs without weight decay
        settings["weight_decay"] = cfg.weight_decay
    if spec.kd:
        settings["teacher_sha256"] = _file_digest(cfg.teacher)
        settings["kd_temperature"] = cfg.kd_temperature
        settings["kd_alpha"] = cfg.kd_alpha
    if cfg.init is not None:
        settings["init_sha256"] = _file_digest(cfg.init)
    elif spec.prune is not None:
        settings["pretrain_epochs"] = cfg.pretrain_epochs or first_epochs
    if spec.quant == "int" and (cfg.init is not None or spec.prune is not None):
        settings["calibration_images"] = cfg.calibration_images  # a float net may be quantized
    return settings


def _recorded(resume: dict, ckpt: Path, spec: ModelSpec) -> tuple[dict, list[int]] | None:
    """(result settings, epoch targets) a checkpoint was trained with; None if unknown.

    Checkpoints written before settings were recorded there fall back to the model card.
    """
    state = resume.get("train_state") or {}
    if "settings" in state:
        return state["settings"], list(state["epoch_targets"])
    try:
        old = json.loads(card_path(ckpt).read_text()).get("settings")
        names = {f.name for f in fields(TrainConfig)}
        cfg = TrainConfig(**{k: v for k, v in old.items() if k in names})
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    return _result_settings(cfg, spec, cfg.epochs, None), [cfg.epochs]


def _show(key: str, value) -> str:
    if key.endswith("_sha256") and isinstance(value, str):
        value = value[:12]
    return f"{key}={value}"


def _existing_run(
    cfg: TrainConfig, spec: ModelSpec, ckpt: Path, data_sha: str
) -> tuple[dict | None, list[int]]:
    """(checkpoint to continue or None, its epoch targets); refuse a conflicting run.

    With ``cfg.force`` a conflicting run is deleted (checkpoint and card) instead.
    """
    if not ckpt.is_file():
        return None, []
    resume = read_checkpoint(ckpt)
    targets: list[int] = []
    if resume["spec"] != spec.name:
        problem = f"holds {resume['spec']}, not {spec.name}: choose another --out"
    elif (recorded := _recorded(resume, ckpt, spec)) is None:
        problem = "holds no record of its training settings"
    else:
        old, targets = recorded
        new = _result_settings(cfg, spec, targets[0], data_sha)
        diff = [
            k
            for k in new
            if k in old
            and old[k] != new[k]
            and not (k.endswith("_sha256") and None in (old[k], new[k]))
        ]
        if "data_sha256" in diff and {"data", "limit", "seed"} & set(diff):
            diff.remove("data_sha256")  # explained by the other difference (seeded subsets)
        if cfg.epochs < targets[-1]:
            diff.insert(0, "epochs")
            old, new = {**old, "epochs": targets[-1]}, {**new, "epochs": cfg.epochs}
        problem = None
        if diff:
            problem = (
                "trained with "
                + " and ".join(_show(k, old[k]) for k in diff)
                + ", asked "
                + " and ".join(_show(k, new[k]) for k in diff)
            )
        elif "optimizer" not in resume["train_state"] and not (
            resume["complete"] and resume["epoch"] == cfg.epochs
        ):
            problem = "holds no training state to continue from"
    if problem is None:
        return resume, targets
    out = cfg.output_dir()
    if not cfg.force:
        raise RunConflictError(f"{out}: {problem} (use --force to replace it)")
    progress.info(f"{out}: {problem}; replacing it (--force)")
    ckpt.unlink()
    card_path(ckpt).unlink(missing_ok=True)
    return None, []


def _rng_state(batches: Batches) -> dict[str, Any]:
    """Every random stream training draws from, as values ``torch.load(weights_only)`` reads."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "batches": batches.generator.get_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], batches: Batches, legacy_seed: int) -> None:
    """Restore :func:`_rng_state`; also reads checkpoints of earlier hwbed versions."""
    rng = state.get("rng")
    if not isinstance(rng, dict):  # earlier format: torch's state and the batch stream only
        if rng is not None:
            torch.set_rng_state(rng)
        if state.get("batch_rng") is not None:
            batches.generator.set_state(state["batch_rng"])
        else:
            batches.generator.manual_seed(legacy_seed)
        return
    torch.set_rng_state(rng["torch"])
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = rng["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    batches.generator.set_state(rng["batches"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def _retarget_cosine(scheduler, epochs: int) -> None:
    """Stretch a restored cosine schedule to ``epochs`` (a finished run extended by a rerun).

    A run saved by ``--epochs 1`` holds T_max = 1 and a learning rate already annealed to
    eta_min; continuing it to ``--epochs 2`` must use the T_max = 2 schedule instead. The
    learning rate is replayed through torch's (recursive) schedule, so the remaining epochs
    get bit for bit the rates of a run started with ``epochs``.
    """
    t_max = max(epochs, 1)
    if scheduler.T_max == t_max:
        return
    groups = [{"params": [torch.zeros(1, requires_grad=True)], "lr": b} for b in scheduler.base_lrs]
    replay_optimizer = torch.optim.SGD(groups)
    replay = torch.optim.lr_scheduler.CosineAnnealingLR(
        replay_optimizer, T_max=t_max, eta_min=scheduler.eta_min
    )
    for _ in range(scheduler.last_epoch):
        replay_optimizer.step()  # no gradients: only keeps the scheduler's order check quiet
        replay.step()
    scheduler.T_max = t_max
    for group, replayed in zip(scheduler.optimizer.param_groups, groups, strict=True):
        group["lr"] = replayed["lr"]
    scheduler._last_lr = replay.get_last_lr()


def _initial_model(
    spec: ModelSpec, cfg: TrainConfig, shape, classes: int, device, x_train, test_batches
) -> tuple[nn.Module, dict | None]:
    """(network to train, where a PTQ network came from or None).

    A fresh network, or the ``init`` checkpoint. An int spec whose ``init`` holds its float
    version is that network quantized and calibrated on ``x_train`` (PTQ); prune specs prune
    a trained float network (``init`` or trained first) and quantize the pruned copy.
    """
    float_spec = spec.at_precision("")
    if cfg.init is not None and spec.quant == "int":
        init_spec = read_checkpoint(cfg.init)["spec"]
        if init_spec == float_spec.name:
            base, meta = load_checkpoint(cfg.init, device=str(device))
            _check_shape(cfg.init, meta, cfg.data, shape, classes)
            return _quantize(base, spec, cfg, x_train, test_batches, device, cfg.init, False)
    if spec.prune is None:
        if cfg.init is None:
            return build_model(spec, *shape, classes), None
        model, _ = load_checkpoint(cfg.init, expect_spec=spec, device=str(device))
        return model, None
    base_spec = replace(spec, prune=None, rate=0.0).at_precision("")
    init = cfg.init
    if init is None:  # train the float network first, in a sub-folder, itself resumable
        base_cfg = replace(
            cfg,
            model=base_spec.name,
            init=None,
            epochs=cfg.pretrain_epochs or cfg.epochs,
            out=str(cfg.output_dir() / "pretrain"),
        )
        init = train(base_cfg)
    base, _ = load_checkpoint(init, expect_spec=base_spec, device=str(device))
    pruned = prune_model(base, float_spec)
    if not spec.quantized:
        return pruned, None
    if spec.quant != "int":  # XNOR/ABC scales start in their statistics phase
        return quantized_copy(pruned, spec), None
    return _quantize(pruned, spec, cfg, x_train, test_batches, device, init, True)


def _check_shape(path, meta, data: str, shape, classes: int) -> None:
    if tuple(meta.input_shape) != tuple(shape) or meta.classes != classes:
        raise TrainError(
            f"{path} takes {tuple(meta.input_shape)} images and {meta.classes} classes, "
            f"the {data} data {tuple(shape)} and {classes}"
        )


def _quantize(float_model, spec, cfg, x_train, test_batches, device, source, pruned: bool):
    """PTQ of ``float_model`` to ``spec`` and the card's record of it."""
    images = calibration_subset(x_train, cfg.calibration_images, cfg.seed)
    model = ptq(float_model, spec, images)
    origin = {
        "checkpoint": str(source),
        "sha256": _file_digest(str(source)),
        "spec": spec.at_precision("").name,
        "pruned_here": pruned,
        "test_accuracy": evaluate(float_model, test_batches, device),
        "calibration": {
            "split": "train",
            "images": len(images),
            "images_sha256": images_digest(images),
            "method": "brevitas calibration_mode (float activations, percentile, power of two)",
        },
    }
    progress.info(
        f"quantized {origin['spec']} ({Path(source)}) to {spec.precision}: calibrated on "
        f"{len(images)} training images; float test acc {origin['test_accuracy']:.4f}"
    )
    return model, origin
