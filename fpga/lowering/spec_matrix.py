"""The spec matrix: every family the spec grammar accepts, lowered and checked against its twin.

One representative spec per family (:func:`entries`): each architecture with each single part
(vanilla, kd, prune-<g>50, xnor, two abc<M>x<N>, w<W>a<A> for W, A in 1, 2, 4, 8) and a few
composed specs, as far as :func:`~hwbed.models.spec.parse_spec` accepts them. :func:`check`
builds a seeded random twin, calibrates it, lowers it and compares logits with
:func:`hwbed.ir.reference.execute` on extreme and random images. The promise under test:
every spec is ``exact`` (all logits bit-identical) or ``refused`` (a ``GraphError`` naming
why), never ``inexact``. Shared by ``benchmarks/spec_matrix.py`` and
``tests/fpga/test_spec_matrix.py``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from hwbed.fpga.lowering.lower import lower
from hwbed.ir.reference import execute
from hwbed.ir.types import GraphError
from hwbed.models.spec import ARCHS, PRUNE_GRANULARITIES, SpecError, parse_spec

BITS = (1, 2, 4, 8)
SINGLE = (
    "",
    "kd",
    *(f"prune-{g}50" for g in PRUNE_GRANULARITIES),
    "xnor",
    "abc2x1",
    "abc3x3",
    *(f"w{w}a{a}" for w in BITS for a in BITS),
)
"""One part each (``""`` is vanilla)."""
COMPOSED = (
    "kd-xnor",
    "kd-w1a1",
    "kd-w4a4",
    "kd-abc3x3",
    "prune-filter50-w8a8",
    "prune-channel50-xnor",
    "prune-kernel50-abc2x1",
    "prune-weight50-w4a4",
    "kd-prune-filter50-w2a2",
)
"""Compression and precision together, ``<arch>[-kd][-prune-<g><rate>][-<precision>]``."""
BATCH_CHECKED = 8
"""Images also run through the twin one at a time: the twin must not depend on the batch."""


@dataclass(frozen=True)
class Entry:
    spec: str
    shape: tuple[int, int, int]
    """(C, H, W) the twin is built and checked on."""


@dataclass(frozen=True)
class Outcome:
    spec: str
    shape: tuple[int, int, int]
    status: str
    """``exact``, ``inexact``, ``refused`` or ``error`` (an exception other than GraphError)."""
    detail: str
    """The refusal or error message, or ``<equal> of <total> logits equal``."""
    images: int
    nodes: int
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def shape_of(arch: str) -> tuple[int, int, int]:
    """CIFAR ResNets 1x8x8, ImageNet ResNets 3x64x64, CNV 3x32x32, TFC/SFC/LFC 1x28x28."""
    if arch == "cnv":
        return (3, 32, 32)
    family = parse_spec(arch).family
    return {"cifar-resnet": (1, 8, 8), "imagenet-resnet": (3, 64, 64)}.get(family, (1, 28, 28))


def entries() -> list[Entry]:
    """Every architecture x (:data:`SINGLE` + :data:`COMPOSED`) that the grammar accepts."""
    out: dict[str, Entry] = {}
    for arch in ARCHS:
        for variant in (*SINGLE, *COMPOSED):
            try:
                name = parse_spec(f"{arch}-{variant}" if variant else arch).name
            except SpecError:
                continue
            out.setdefault(name, Entry(name, shape_of(arch)))
    return list(out.values())


def calibrated_twin(spec: str, shape: tuple[int, int, int], seed: int = 0) -> nn.Module:
    """A seeded random twin after calibration (as tests/conftest.py's), in eval mode.

    Three training-mode passes set BN statistics; Brevitas' runtime-stats scales are then
    marked collected, and one more pass initialises them from the statistics. A float
    twin has no quantizer to calibrate and is returned as built.
    """
    from hwbed.models.quantize import end_stats_phase
    from hwbed.models.zoo import build_model

    torch.manual_seed(seed)
    model = build_model(spec, *shape, 10)
    if not parse_spec(spec).quantized:
        return model.eval()
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.rand(16, *shape))
    end_stats_phase(model, torch.rand(16, *shape))
    return model.eval()


def probe_images(shape: tuple[int, int, int], n: int, seed: int = 0) -> np.ndarray:
    """uint8 [n, H, W, C]: extremes first (all 0, all 255, mid levels, checkerboards, stripes,
    a ramp over every level), then random uniform, random {0, 255} and near-mid images."""
    c, h, w = shape
    yy, xx, cc = np.meshgrid(np.arange(h), np.arange(w), np.arange(c), indexing="ij")
    fixed = [np.full((h, w, c), v) for v in (0, 255, 1, 127, 128, 254)]
    for period in (1, 2):
        board = ((yy // period + xx // period + cc) % 2) * 255
        fixed += [board, 255 - board]
    fixed += [(yy % 2) * 255, (xx % 2) * 255, (yy * w * c + xx * c + cc) % 256]
    fixed = np.stack(fixed).astype(np.uint8)[:n]
    rng = np.random.default_rng(seed)
    rest = max(0, n - len(fixed))
    kinds = [
        rng.integers(0, 256, (rest, h, w, c)),
        rng.integers(0, 2, (rest, h, w, c)) * 255,
        rng.integers(120, 136, (rest, h, w, c)),
    ]
    pick = np.arange(rest) % 3
    random = np.choose(pick[:, None, None, None], kinds).astype(np.uint8)
    return np.concatenate([fixed, random])


def twin_logits(model: nn.Module, x: np.ndarray, batch: int = 64) -> np.ndarray:
    """The twin's float32 logits on uint8 NHWC images, ``batch`` images at a time."""
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            chunk = torch.from_numpy(x[i : i + batch]).permute(0, 3, 1, 2).float() / 255.0
            out.append(model(chunk).numpy())
    return np.concatenate(out)


def check(entry: Entry, images: int = 256, seed: int = 0) -> Outcome:
    """Lower ``entry``'s twin and compare: exact, inexact, refused or error."""
    start = time.perf_counter()

    def outcome(status: str, detail: str, n: int = 0, nodes: int = 0) -> Outcome:
        seconds = round(time.perf_counter() - start, 2)
        return Outcome(entry.spec, entry.shape, status, detail, n, nodes, seconds)

    try:
        model = calibrated_twin(entry.spec, entry.shape, seed)
        try:
            graph = lower(model, entry.spec, entry.shape)
        except GraphError as err:
            return outcome("refused", str(err))
        x = probe_images(entry.shape, images, seed)
        got = np.concatenate([execute(graph, x[i : i + 32]) for i in range(0, len(x), 32)])
        want = twin_logits(model, x)
        single = twin_logits(model, x[:BATCH_CHECKED], batch=1)
    except Exception as err:  # noqa: BLE001 - a crash is an outcome of the matrix, not of it
        return outcome("error", f"{type(err).__name__}: {err}")
    equal = int((got == want).sum())
    exact = equal == got.size and np.array_equal(got[:BATCH_CHECKED], single)
    detail = f"{equal} of {got.size} logits equal"
    if not np.array_equal(want[:BATCH_CHECKED], single):
        detail += "; the twin's logits depend on the batch"
    return outcome("exact" if exact else "inexact", detail, len(x), len(graph.nodes))
