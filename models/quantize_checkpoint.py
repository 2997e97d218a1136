"""A float checkpoint's deployed version as a training run: PTQ, then optional QAT fine-tuning.

``python -m hwbed.build --checkpoint FLOAT.pt --quantize w8a8`` runs :func:`quantize_checkpoint`;
the quantization itself (structure, calibration) is :mod:`hwbed.models.quantize`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .checkpoint import card_path, read_checkpoint
from .quantize import DEFAULT_CALIBRATION_IMAGES, QuantizeError, deployed_spec
from .spec import SpecError
from .training import TrainConfig, _file_digest, train


def quantize_checkpoint(
    source: str | Path,
    precision: str = "w8a8",
    out: str | Path | None = None,
    *,
    finetune_epochs: int = 0,
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
    teacher: str | None = None,
    lr: float | None = None,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    force: bool = False,
) -> Path:
    """PTQ of the float checkpoint ``source`` to ``precision``, then ``finetune_epochs`` of QAT.

    Calibrates on the training split of the checkpoint's data set; writes ``out/model.pt``
    (default ``runs/<spec>-from-<sha12>``) with spec ``<float spec>-<precision>`` and a model
    card whose ``quantized_from`` records the source (path, SHA-256, spec, float test
    accuracy), the calibration images and the fine-tune epochs. It is a training run
    (``models.training.train``, ``init=source``): a killed fine-tune resumes, a rerun finds it
    complete, more epochs extend it. Fine-tuning a distilled network distills again, from
    ``teacher`` or the teacher recorded in the source's card.
    """
    source = Path(source)
    payload = read_checkpoint(source)
    try:
        target = deployed_spec(payload["spec"], precision)
    except SpecError as err:
        raise QuantizeError(f"{source}: {err}") from None
    except QuantizeError as err:
        raise QuantizeError(f"{source}: {err}") from None
    if finetune_epochs < 0:
        raise QuantizeError(f"--finetune-epochs must be 0 or more, got {finetune_epochs}")
    if calibration_images < 1:
        raise QuantizeError(f"--calibration-images must be at least 1, got {calibration_images}")
    settings = _card(card_path(source)).get("settings") or {}
    if target.kd and finetune_epochs > 0:
        teacher = teacher or settings.get("teacher")
        if teacher is None or not Path(teacher).is_file():
            raise QuantizeError(
                f"fine-tuning {target.name} distills from its teacher, and {source}'s card "
                + (f"names {teacher}, which does not exist" if teacher else "names none")
                + " (fine-tune 0 epochs, or train it with python -m hwbed.train --init "
                f"{source} --model {target.name} --teacher TEACHER.pt)"
            )
    if out is None:
        out = Path("runs") / f"{target.name}-from-{(_file_digest(str(source)) or '')[:12]}"
    cfg = TrainConfig(
        model=target.name,
        data=payload["data"],
        data_dir=settings.get("data_dir"),
        epochs=finetune_epochs,
        lr=lr,
        seed=seed,
        out=str(out),
        teacher=teacher if target.kd else None,
        kd_temperature=settings.get("kd_temperature", 30.0),
        kd_alpha=settings.get("kd_alpha", 1.0),
        init=str(source),
        calibration_images=calibration_images,
        device=device,
        progress=progress,
        force=force,
    )
    return train(cfg)


def _card(path: Path) -> dict[str, Any]:
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return card if isinstance(card, dict) else {}
