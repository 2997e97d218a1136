"""Judging adversarials on another model: on-device scoring and transfer.

White-box adversarials are crafted on the twin in float space and judged there first (what
the literature reports). :func:`score_on` judges them again where they would really arrive:
each float adversarial is put on the 8-bit grid inside its ε-ball (:func:`to_grid`) and run
on any executable (the simulator, a board, onnxruntime, the twin at its uint8 boundary). The
same call on a result crafted on *another* model is a transfer attack (e.g. crafted on the
float baseline, scored on the compressed network on the simulator): ``crafted_on`` and
``scored_on`` say which.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from hwbed.ir.executable import Executable

from .distances import to_grid
from .inputs import AttackError
from .result import AttackResult, rescored
from .twin import Twin


def on_grid(result: AttackResult) -> np.ndarray:
    """The result's adversarials as uint8 [E, N, C, H, W], each inside its ε-ball."""
    if result.adversarial is None:
        raise AttackError(f"{result.attack}: the result kept no adversarials (keep=False)")
    adv = result.adversarial
    if adv.dtype == np.uint8:
        return adv
    return np.stack(
        [
            to_grid(result.images, adv[e], result.norm, float(eps))
            for e, eps in enumerate(result.epsilons)
        ]
    )


def score_on(
    result: AttackResult, model: Executable | Twin, batch_size: int = 1024
) -> AttackResult:
    """``result`` re-judged on ``model``: an executable sees the grid images; a :class:`Twin`
    sees the float adversarials as crafted (float-space transfer between twins)."""
    start = time.perf_counter()
    shape = tuple(result.images.shape[1:])
    if tuple(model.input_shape) != shape:
        raise AttackError(
            f"{result.attack}: adversarials of shape {shape} do not fit "
            f"{model.name}'s input {tuple(model.input_shape)}"
        )
    if result.adversarial is None:
        raise AttackError(f"{result.attack}: the result kept no adversarials (keep=False)")
    e, n = len(result.epsilons), result.n
    if isinstance(model, Twin):
        adv = result.adversarial
        x = adv.astype(np.float32) / 255.0 if adv.dtype == np.uint8 else adv
        flat = torch.from_numpy(np.ascontiguousarray(x.reshape(e * n, *shape)))
        pred = model.predict(flat, batch_size).numpy().reshape(e, n)
        clean = model.predict(torch.from_numpy(result.images).float() / 255.0).numpy()
        inside = time.perf_counter() - start
    elif isinstance(model, Executable):
        adv = on_grid(result)
        inside = 0.0
        outs = []
        batches = [result.images, *[adv[i] for i in range(e)]]
        for images in batches:
            for lo in range(0, len(images), batch_size):
                t0 = time.perf_counter()
                scores = model(images[lo : lo + batch_size])
                inside += time.perf_counter() - t0
                outs.append(np.argmax(scores, axis=1))
        labels = np.concatenate(outs)
        clean, pred = labels[:n], labels[n:].reshape(e, n)
    else:
        raise AttackError(f"score_on needs an executable or a Twin, got {type(model).__name__}")
    return rescored(
        result,
        pred=pred,
        clean_pred=clean,
        adversarial=adv,
        scored_on=model.name,
        queries=1,
        wall_time=time.perf_counter() - start,
        executable_time=inside,
    )
