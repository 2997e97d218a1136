"""Class activation maps (Zhou et al., CVPR 2016) of clean and DeepFool-attacked images.

The study's CAM view (METHOD.md, "CAM"): for a network whose head is a global average pool
and one linear layer, ``logits = fc(features(x).mean(dim=(2, 3)))``, the map of class c is

    CAM_c(x)[i, j] = Σ_k w_{c,k} · F_k(x)[i, j]

with F = ``model.features(x)`` (the last convolutional feature map) and w the FC weight, the
effective quantized weight of a Brevitas ``QuantLinear``. The raw map is exact:
``CAM_c.mean() + b_c`` is the logit of class c, for float and for binary or quantized twins
alike (their features are the int8 stream after the last block, their FC input is not
quantized). :func:`heatmap_255` upsamples a map to the input size and scales it to 0–255;
:func:`q3` is the number the study reports; :func:`cam_study` runs DeepFool (L2) and draws the
maps after 1 and 5 iterations.

Example::

    table, fig = cam_study("runs/resnet20-xnor-digits-s0/model.pt", x[:4], y[:4])
    fig.savefig("cam.png")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from torch import nn

from hwbed.attacks.deepfool import DeepFool
from hwbed.attacks.twin import Twin

CONSTANT_RTOL = 1e-6
"""A map whose range (max − min) is at most this fraction of its largest magnitude (or is
zero) counts as constant: its heat map is 0 everywhere."""
BATCH = 256
"""Images per forward pass in :func:`class_activation_maps`."""
OVERLAY_ALPHA = 0.5
CMAP = "jet"


def _unwrap(value: Any) -> torch.Tensor:
    """A plain tensor from a tensor or a Brevitas QuantTensor (``.value``)."""
    return getattr(value, "value", value)


def _head(model: Any) -> tuple[Any, nn.Linear, str]:
    """(module, its FC layer, a name) of a model with a GAP + linear head, else ValueError."""
    name = None
    if isinstance(model, Twin):
        name, model = model.name, model.model
    spec = getattr(model, "spec", None)
    if name is None:
        name = getattr(spec, "name", None) or type(model).__name__
    features, fc = getattr(model, "features", None), getattr(model, "fc", None)
    bnn_pynq = getattr(spec, "family", None) == "bnn-pynq"
    if bnn_pynq or not callable(features) or isinstance(features, nn.Module):
        raise ValueError(
            f"class activation maps are undefined for {name}: it has no global-average-pool "
            "head (features(x) -> mean over space -> fc); BNN-PYNQ networks (cnv, tfc, lfc, "
            "sfc) end in fully connected layers"
        )
    if not isinstance(fc, nn.Linear):
        raise ValueError(
            f"class activation maps need a linear fc layer after the pooled features; "
            f"{name}.fc is {type(fc).__name__}"
        )
    return model, fc, name


def fc_parameters(model: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's effective weight [classes, K] and bias [classes] (float32).

    A Brevitas ``QuantLinear`` gives its quantized weight (``quant_weight().value``: scale ·
    integer); its bias is the float ``bias`` (the study's FC has no bias quantizer). A missing
    bias is zero.
    """
    _, fc, _ = _head(model)
    with torch.no_grad():
        w = _unwrap(fc.quant_weight()) if hasattr(fc, "quant_weight") else fc.weight
        b = fc.bias if fc.bias is not None else torch.zeros(w.shape[0])
    return w.detach().float().cpu(), _unwrap(b).detach().float().cpu()


def _as_float_images(x: Any) -> torch.Tensor:
    """Float [N, C, H, W] in [0, 1] from a float tensor/array, or from uint8 pixels (/255)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
    a = np.asarray(x)
    t = torch.from_numpy(np.ascontiguousarray(a))
    return t.float().div(255.0) if a.dtype == np.uint8 else t.float()


def class_activation_maps(model: Any, x: Any, classes: Any = None) -> np.ndarray:
    """Raw CAMs [N, h, w] (float32, before any normalisation) of images ``x``.

    ``model``: a :class:`Twin` or a module exposing ``features(x)`` (last conv map [N, K, h, w])
    and a linear ``fc`` applied to its spatial mean (ResNets; a BNN-PYNQ net raises
    ValueError). ``x``: float [N, C, H, W] in [0, 1] (uint8 pixels are divided by 255).
    ``classes``: one class per image, or one for all; default the predicted class
    (argmax of ``fc(features(x).mean((2, 3)))``, i.e. of the logits).
    """
    module, fc, _ = _head(model)
    w, _ = fc_parameters(model)
    images = _as_float_images(x)
    device = fc.weight.device
    maps = []
    with torch.no_grad():
        for lo in range(0, len(images), BATCH):
            feats = _unwrap(module.features(images[lo : lo + BATCH].to(device))).float().cpu()
            if classes is None:
                cls = _unwrap(fc(feats.mean(dim=(2, 3)).to(device))).argmax(1).cpu()
            else:
                cls = torch.as_tensor(np.asarray(classes), dtype=torch.long)
                if cls.ndim == 0:
                    cls = cls.expand(len(images))
                if cls.shape != (len(images),):
                    raise ValueError(f"classes: one per image ({len(images)}), got {cls.shape}")
                cls = cls[lo : lo + BATCH]
            maps.append(torch.einsum("nk,nkhw->nhw", w[cls], feats))
    if not maps:
        return np.zeros((0, 0, 0), dtype=np.float32)
    return torch.cat(maps).numpy()


def heatmap_255(cam: np.ndarray, size: int | Sequence[int]) -> np.ndarray:
    """Heat maps [N, H, W] (float64 in [0, 255], not rounded) of raw CAMs [N, h, w] ([h, w]
    gives [H, W]).

    Each map is first upsampled to ``size`` (H, W; an int for square) bilinearly
    (``torch.nn.functional.interpolate``, ``align_corners=False``), then min–max scaled per
    image over the upsampled pixels: 255 · (v − min) / (max − min). A constant map (range at
    most :data:`CONSTANT_RTOL` of its largest magnitude) gives 0 everywhere.
    """
    a = np.asarray(cam, dtype=np.float64)
    single = a.ndim == 2
    if single:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"heatmap_255 wants CAMs [N, h, w], got shape {a.shape}")
    hw = (int(size), int(size)) if np.isscalar(size) else tuple(int(s) for s in size)
    up = F.interpolate(torch.from_numpy(a)[:, None], size=hw, mode="bilinear", align_corners=False)
    up = up[:, 0].numpy()
    lo, hi = up.min(axis=(1, 2), keepdims=True), up.max(axis=(1, 2), keepdims=True)
    span = hi - lo
    scale = np.maximum(np.abs(lo), np.abs(hi))
    flat = span <= CONSTANT_RTOL * scale
    out = np.where(flat, 0.0, 255.0 * (up - lo) / np.where(flat, 1.0, span))
    return out[0] if single else out


def q3(heatmap: np.ndarray) -> float | np.ndarray:
    """Third quartile of a heat map's pixels: a float for [H, W], an array [N] for [N, H, W].

    ``np.percentile(values, 75)`` with its default ``method="linear"`` (Hyndman & Fan type 7):
    with the n values sorted v_0 ≤ … ≤ v_{n−1}, p = 0.75 (n − 1) and
    Q3 = v_⌊p⌋ + (p − ⌊p⌋)(v_⌊p⌋+1 − v_⌊p⌋); e.g. 16 pixels: v_11 + 0.25 (v_12 − v_11).
    """
    a = np.asarray(heatmap, dtype=np.float64)
    if a.ndim == 2:
        return float(np.percentile(a, 75))
    if a.ndim != 3:
        raise ValueError(f"q3 wants a heat map [H, W] or [N, H, W], got shape {a.shape}")
    return np.percentile(a.reshape(len(a), -1), 75, axis=1)


def cam_study(
    checkpoint: str | Path | Twin,
    images_uint8: np.ndarray,
    labels: Any,
    iterations: Sequence[int] = (1, 5),
    seed: int = 0,
) -> tuple[pd.DataFrame, Figure]:
    """CAMs of clean images and of their DeepFool adversarials after each of ``iterations``.

    DeepFool runs once on the twin (L2, unbounded, the attack's defaults otherwise,
    ``steps = max(iterations)``, ``snapshots = iterations``); the adversarial after i
    iterations is what ``DeepFool(steps=i)`` returns (float, as crafted, not rounded to
    pixels). For each image and stage (``clean``, ``deepfool@i``) the CAM is that of the
    class the twin predicts at that stage.

    Returns the table (one row per image and stage: ``image`` (index in ``images_uint8``),
    ``label``, ``stage``, ``iterations`` (0 for clean), ``pred``, ``q3`` (of
    :func:`heatmap_255` at the input size, 0–255), ``l2`` (‖x_stage − x‖₂ in [0, 1] units))
    and a figure: a row per image, columns the image and the CAM over each stage's input.
    """
    twin = checkpoint if isinstance(checkpoint, Twin) else Twin.from_checkpoint(checkpoint)
    _head(twin)  # refuse a network without CAMs before attacking it
    its = sorted({int(i) for i in iterations})
    if not its or its[0] < 1:
        raise ValueError(f"cam_study: iterations must be counts >= 1, got {iterations!r}")
    pixels = np.asarray(images_uint8)
    if pixels.dtype != np.uint8 or pixels.ndim != 4:
        raise ValueError(
            f"cam_study wants uint8 images [N, C, H, W], got {pixels.dtype} {pixels.shape}"
        )
    y = np.asarray(labels).astype(np.int64)
    result = DeepFool(norm="l2", steps=its[-1])(twin, pixels, y, seed=seed, snapshots=its)
    x = torch.from_numpy(pixels).float().div(255.0)
    stages = [("clean", 0, x)]
    for i in its:
        adv = result.at(i, "steps").adversarial[0]  # [E=1, N, C, H, W] -> [N, C, H, W]
        stages.append((f"deepfool@{i}", i, torch.from_numpy(np.asarray(adv, dtype=np.float32))))
    size = pixels.shape[2:]
    rows, shown = [], []
    for stage, i, xs in stages:
        pred = twin.predict(xs).numpy()
        heat = heatmap_255(class_activation_maps(twin, xs, pred), size)
        quart = q3(heat)
        l2 = (xs - x).flatten(1).norm(dim=1).numpy()
        shown.append((stage, xs.numpy(), heat, pred, quart))
        for n in range(len(pixels)):
            rows.append(
                {
                    "image": n,
                    "label": int(y[n]),
                    "stage": stage,
                    "iterations": i,
                    "pred": int(pred[n]),
                    "q3": float(quart[n]),
                    "l2": float(l2[n]),
                }
            )
    return pd.DataFrame(rows), _figure(pixels, y, shown)


def _picture(x: np.ndarray) -> tuple[np.ndarray, str | None]:
    """An image [C, H, W] in [0, 1] as imshow wants it (gray for one channel)."""
    if x.shape[0] == 1:
        return x[0], "gray"
    return np.transpose(x[:3], (1, 2, 0)).clip(0, 1), None


def _figure(pixels: np.ndarray, labels: np.ndarray, shown: list) -> Figure:
    rows, cols = len(pixels), 1 + len(shown)
    fig = Figure(figsize=(2.2 * cols + 0.8, 2.2 * max(rows, 1)), layout="constrained")
    axes = fig.subplots(max(rows, 1), cols, squeeze=False)
    for n in range(rows):
        img, cmap = _picture(pixels[n].astype(np.float64) / 255.0)
        axes[n, 0].imshow(img, cmap=cmap, vmin=0, vmax=1)
        axes[n, 0].set_title(f"image {n}, label {int(labels[n])}", fontsize=8)
        for c, (stage, xs, heat, pred, quart) in enumerate(shown, start=1):
            ax = axes[n, c]
            img, cmap = _picture(xs[n])
            ax.imshow(img, cmap=cmap, vmin=0, vmax=1)
            ax.imshow(heat[n], cmap=CMAP, vmin=0, vmax=255, alpha=OVERLAY_ALPHA)
            ax.set_title(f"{stage}: pred {int(pred[n])}, Q3 {quart[n]:.0f}", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if shown:
        scale = ScalarMappable(norm=Normalize(0, 255), cmap=CMAP)
        fig.colorbar(scale, ax=axes, label="CAM intensity [0–255]", shrink=0.8)
    return fig
