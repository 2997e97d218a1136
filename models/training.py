"""Training of every variant: plain, distilled (KD), prune-then-fine-tune; resumable.

One epoch at a time: train with a progress bar, evaluate on the test split, then write the
checkpoint and model card atomically, so a killed run restarts from its last finished epoch.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .checkpoint import CheckpointMeta, load_checkpoint, read_checkpoint, save_checkpoint
from .data import CIFAR_AUGMENT, DIGITS_AUGMENT, Batches, load_dataset
from .distill import kd_loss
from .pruning import prune_model
from .spec import ModelSpec, parse_spec
from .zoo import build_model, input_size


@dataclass
class TrainConfig:
    """Settings of one training run; recorded in the model card."""

    model: str
    data: str = "digits"
    data_dir: str | None = None
    epochs: int = 30
    batch_size: int = 64
    lr: float | None = None
    """None picks 0.1 for SGD, 2e-3 for Adam, and BNN-PYNQ's 0.02 for CNV/TFC/SFC/LFC."""
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
    """Start from this checkpoint (for ``-prune-*``: the trained float network to prune)."""
    pretrain_epochs: int | None = None
    """``-prune-*`` without ``init``: epochs of float training before pruning (default: epochs)."""
    augment: bool = True
    limit: int | None = None
    device: str = "auto"
    progress: bool = True

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


def make_optimizer(model: nn.Module, spec: ModelSpec, cfg: TrainConfig):
    kind = cfg.optimizer
    if kind == "auto":
        kind = "adam" if spec.quantized else "sgd"
    params = [p for p in model.parameters() if p.requires_grad]
    if kind == "adam":
        default = 0.02 if spec.family == "bnn-pynq" else 2e-3
        return torch.optim.Adam(params, lr=cfg.lr or default, weight_decay=0.0)
    if kind == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr or 0.1, momentum=0.9, weight_decay=cfg.weight_decay, nesterov=True
        )
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; use sgd, adam or auto")


def train(cfg: TrainConfig) -> Path:
    """Train ``cfg.model`` on ``cfg.data``; return the checkpoint path (resumes if present)."""
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
    if spec.kind == "kd":
        if cfg.teacher is None:
            raise ValueError(
                f"{spec.name} is trained by distillation: pass --teacher CHECKPOINT "
                "(e.g. a trained resnet56 on the same data)"
            )
        teacher, tmeta = load_checkpoint(cfg.teacher, device=str(device))
        if tmeta.data != cfg.data or tuple(tmeta.input_shape) != shape:
            raise ValueError(f"teacher {cfg.teacher} was trained on {tmeta.data}, not {cfg.data}")

    resume = read_checkpoint(ckpt) if ckpt.is_file() else None
    if resume is not None and resume["spec"] != spec.name:
        raise ValueError(f"{ckpt} holds {resume['spec']}, not {spec.name}: choose another --out")
    if resume is not None:
        model, meta = load_checkpoint(ckpt, device=str(device))
        if meta.complete and meta.epoch >= cfg.epochs:
            print(f"{ckpt} is complete ({meta.card.get('test_accuracy')}); nothing to do")
            return ckpt
    else:
        model = _initial_model(spec, cfg, shape, info.num_classes, device)
    model.to(device)

    optimizer = make_optimizer(model, spec, cfg)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(cfg.epochs, 1))
    start, history = 0, []
    if resume is not None:
        state = resume["train_state"]
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _retarget_cosine(scheduler, cfg.epochs)
        torch.set_rng_state(state["rng"])
        start, history = resume["epoch"], state.get("history", [])
        print(f"resuming {spec.name} from {ckpt} at epoch {start}/{cfg.epochs}")

    augment = None
    if cfg.augment:
        augment = CIFAR_AUGMENT if info.channels == 3 and info.height >= 32 else DIGITS_AUGMENT
    batch_rng = resume["train_state"].get("batch_rng") if resume is not None else None
    train_batches = Batches(
        x_tr,
        y_tr,
        cfg.batch_size,
        shuffle=True,
        augment=augment,
        seed=cfg.seed if batch_rng is not None else cfg.seed + start,
        drop_last=len(y_tr) > cfg.batch_size,
    )
    if batch_rng is not None:  # continue the shuffle/augment stream of the killed run
        train_batches.generator.set_state(batch_rng)
    test_batches = Batches(x_te, y_te, 256)
    clip = getattr(model, "clip_weights", None) if spec.kind == "int" else None
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
        print(
            f"{spec.name} epoch {epoch + 1}/{cfg.epochs}: loss {history[-1]['loss']:.4f} "
            f"test acc {acc:.4f} ({elapsed:.0f}s)",
            flush=True,
        )
        card = {
            "test_accuracy": acc,
            "seed": cfg.seed,
            "train_seconds": round(elapsed, 1),
            "settings": asdict(cfg),
            "history": history,
            "test_images": len(y_te),
        }
        meta = CheckpointMeta(
            spec,
            cfg.data,
            shape,
            info.num_classes,
            epoch=epoch + 1,
            complete=epoch + 1 == cfg.epochs,
            card=card,
        )
        state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "batch_rng": train_batches.generator.get_state(),
            "history": history,
        }
        save_checkpoint(ckpt, model, meta, state)
    if cfg.epochs == 0 or start >= cfg.epochs:
        acc = evaluate(model, test_batches, device)
        meta = CheckpointMeta(
            spec,
            cfg.data,
            shape,
            info.num_classes,
            epoch=cfg.epochs,
            complete=True,
            card={
                "test_accuracy": acc,
                "seed": cfg.seed,
                "settings": asdict(cfg),
                "history": history,
                "test_images": len(y_te),
            },
        )
        save_checkpoint(ckpt, model, meta)
    return ckpt


def _retarget_cosine(scheduler, epochs: int) -> None:
    """Stretch a restored cosine schedule to ``epochs`` (a finished run extended by a rerun).

    A run saved by ``--epochs 1`` holds T_max = 1 and a learning rate already annealed to
    eta_min; continuing it to ``--epochs 2`` must use the T_max = 2 schedule instead.
    """
    t_max = max(epochs, 1)
    if scheduler.T_max == t_max:
        return
    scheduler.T_max = t_max
    t = scheduler.last_epoch
    lrs = [
        scheduler.eta_min + (base - scheduler.eta_min) * (1 + math.cos(math.pi * t / t_max)) / 2
        for base in scheduler.base_lrs
    ]
    for group, lr in zip(scheduler.optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr
    scheduler._last_lr = lrs


def _initial_model(spec: ModelSpec, cfg: TrainConfig, shape, classes: int, device) -> nn.Module:
    """Fresh network, or the ``init`` checkpoint; prune specs prune a trained float net."""
    if spec.kind != "prune":
        if cfg.init is None:
            return build_model(spec, *shape, classes)
        model, _ = load_checkpoint(cfg.init, expect_spec=spec, device=str(device))
        return model
    base_spec = replace(spec, kind="vanilla", prune=None, rate=0.0)
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
    return prune_model(base, spec)
