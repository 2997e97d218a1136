"""What every attack shares: the call signature, input checks, losses and the result.

API in foolbox 3's shape: ``attack(model, images, labels, epsilons=[...])`` returns an
:class:`~hwbed.attacks.result.AttackResult` with per-example outcomes for every ε.
White-box attacks take a :class:`~hwbed.attacks.twin.Twin` (or a torch module); black-box
attacks take any :class:`~hwbed.ir.executable.Executable` and reach it only through an
:class:`~hwbed.attacks.oracle.Oracle`. Each ε runs with its own seeded generator, so a
result does not depend on which other ε were asked for.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hwbed.ir.executable import Executable

from .distances import distortion
from .inputs import (
    AttackError,
    check_epsilons,
    check_images,
    check_labels,
    check_positive,
    random_targets,
)
from .oracle import Oracle
from .result import AttackResult, judged
from .twin import Twin

LOSSES = ("ce", "margin")


def attack_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    loss: str,
    targeted: bool,
    targets: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-example loss the attack ascends: CE (away from the label, or minus CE to the
    target) or the C&W logit margin (best other logit minus the label's, or the target's
    logit minus the best other)."""
    if not targeted:
        cls = labels
    elif targets is None:
        raise AttackError("a targeted loss needs targets")
    else:
        cls = targets
    if loss == "ce":
        ce = F.cross_entropy(logits, cls, reduction="none")
        return -ce if targeted else ce
    own = logits.gather(1, cls[:, None])[:, 0]
    other = logits.masked_fill(F.one_hot(cls, logits.shape[1]).bool(), -torch.inf).amax(1)
    return own - other if targeted else other - own


def seed_generator(seed: int, index: int) -> torch.Generator:
    """The generator of ε number ``index`` of a run seeded ``seed``."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(index))


class Attack:
    """Base class: ``name``, ``targeted``, ``params`` (every hyperparameter, for records)."""

    name = "attack"
    targeted = False
    bounded = True
    """False for minimum-norm attacks, whose ε are thresholds on the found distortion."""
    norm: str | None = None

    @property
    def params(self) -> dict[str, Any]:
        raise NotImplementedError

    def _targets(self, targets: Any, y: np.ndarray, classes: int, seed: int) -> np.ndarray | None:
        if not self.targeted:
            if targets is not None:
                raise AttackError(f"{self.name} is untargeted; do not pass targets")
            return None
        if targets is None:
            return random_targets(y, classes, seed)
        t = check_labels(targets, len(y), classes, self.name, "targets")
        same = np.flatnonzero(t == y)
        if same.size:
            raise AttackError(f"{self.name}: targets[{int(same[0])}] equals its label")
        return t


class WhiteBoxAttack(Attack):
    """Gradient attacks on a twin; adversarials are judged on the twin in float space.

    Subclasses implement ``_run(twin, x, y, t, eps, gen) -> dict`` for one batch and one ε,
    with ``adv`` (float tensor in [0, 1]), optional ``first_success`` [N] and ``traces``
    ({name: array [..., N]}), ``queries`` [N] (gradient evaluations per image), and ``pred``
    [N] when the attack already judged its adversarial on the twin (else the base does).

    ``snapshots=[i, ...]`` asks for the adversarials the run would have returned had it
    stopped after i iterations (``snapshots`` {i: tensor} from ``_run``; iterative attacks
    list the steps with :meth:`snapshot_steps`), so that cells differing only in their
    iteration count share one run and can still be scored on a device
    (:meth:`AttackResult.at`).
    """

    batch_size = 256
    _snapshots: tuple[int, ...] = ()

    @property
    def queries_per_iteration(self) -> int:
        """Gradient evaluations one iteration costs an image (a snapshot after i iterations
        has spent ``min(queries, i · this)``)."""
        return 1

    def snapshot_steps(self, steps: int) -> tuple[int, ...]:
        """The asked snapshot iterations, checked against the run's ``steps``."""
        late = [i for i in self._snapshots if i > steps]
        if late:
            raise AttackError(f"{self.name}: snapshot at iteration {late[0]} > steps {steps}")
        return self._snapshots

    def __call__(
        self,
        model: Twin | nn.Module,
        images: Any,
        labels: Any,
        epsilons: Any = None,
        *,
        targets: Any = None,
        seed: int = 0,
        keep: bool = True,
        snapshots: tuple[int, ...] = (),
    ) -> AttackResult:
        twin = self._twin(model, images)
        pixels = check_images(images, twin.input_shape, self.name)
        y = check_labels(labels, len(pixels), twin.num_classes, self.name)
        eps = check_epsilons(epsilons, self.name, bounded=self.bounded)
        t = self._targets(targets, y, twin.num_classes, seed)
        if any(isinstance(i, bool) or int(i) != i or i < 1 for i in snapshots):
            raise AttackError(f"{self.name}: snapshots must be iteration counts >= 1")
        self._snapshots = tuple(sorted({int(i) for i in snapshots}))
        start = time.perf_counter()
        x = torch.from_numpy(pixels).float().div_(255.0)
        clean_pred = twin.predict(x).numpy()
        adv_all, first_all, query_all, pred_all = [], [], [], []
        trace_all: dict[str, list[np.ndarray]] = {}
        snap_all: dict[int, list] = {i: [] for i in self._snapshots}
        for e, radius in enumerate(eps):
            gen = seed_generator(seed, e)
            parts = []
            for lo in range(0, len(x), self.batch_size):
                sl = slice(lo, lo + self.batch_size)
                yt = torch.from_numpy(y[sl])
                tt = None if t is None else torch.from_numpy(t[sl])
                parts.append(self._run(twin, x[sl], yt, tt, float(radius), gen))
            adv_all.append(torch.cat([p["adv"].detach() for p in parts]).clamp_(0, 1))
            query_all.append(np.concatenate([np.asarray(p["queries"]) for p in parts]))
            if "pred" in parts[0]:
                pred_all.append(np.concatenate([p["pred"] for p in parts]))
            if parts[0].get("first_success") is not None:
                first_all.append(np.concatenate([p["first_success"] for p in parts]))
            for key in parts[0].get("traces", {}):
                trace_all.setdefault(key, []).append(
                    np.concatenate([p["traces"][key] for p in parts], axis=-1)
                )
            for i in self._snapshots:
                snap_all[i].append(torch.cat([p["snapshots"][i] for p in parts]).clamp_(0, 1))
        self._snapshots = ()
        adv = torch.stack(adv_all)
        if pred_all:  # the attack judged its own final adversarials
            pred = np.stack(pred_all)
        else:
            pred = twin.predict(adv.flatten(0, 1)).numpy().reshape(len(eps), len(x))
        snaps = {i: torch.stack(v) for i, v in snap_all.items()}
        queries = np.stack(query_all).astype(np.int64)
        snap_pred = {
            i: twin.predict(v.flatten(0, 1)).numpy().reshape(len(eps), len(x))
            for i, v in snaps.items()
        }
        return AttackResult(
            attack=self.name,
            params=self.params,
            norm=self.norm,
            epsilons=eps,
            targeted=self.targeted,
            images=pixels,
            labels=y,
            targets=t,
            clean_pred=clean_pred,
            pred=pred,
            success=judged(pred, clean_pred, y, t),
            queries=queries,
            distortion=distortion(x.numpy()[None], adv.numpy()),
            crafted_on=twin.name,
            scored_on=twin.name,
            seed=int(seed),
            wall_time=time.perf_counter() - start,
            first_success=np.stack(first_all) if first_all else None,
            adversarial=adv.numpy() if keep else None,
            traces={k: np.stack(v) for k, v in trace_all.items()},
            snapshots={
                i: (v.numpy(), snap_pred[i], np.minimum(queries, i * self.queries_per_iteration))
                for i, v in snaps.items()
            },
        )

    def _twin(self, model: Any, images: Any) -> Twin:
        if isinstance(model, Twin):
            return model
        if isinstance(model, nn.Module):
            x = torch.as_tensor(np.asarray(images[:1], dtype=np.float32))
            with torch.no_grad():
                classes = model.eval()(x).shape[1]
            return Twin(model, tuple(x.shape[1:]), classes, name=type(model).__name__)
        kind = getattr(model, "name", type(model).__name__)
        raise AttackError(
            f"{self.name} is a white-box attack: it needs a differentiable twin "
            f"(hwbed.attacks.Twin or a torch module), got {kind}; score its "
            "adversarials on an executable with score_on()"
        )

    def _run(
        self,
        twin: Twin,
        x: torch.Tensor,
        y: torch.Tensor,
        t: torch.Tensor | None,
        eps: float,
        gen: torch.Generator,
    ) -> dict[str, Any]:
        raise NotImplementedError


class BlackBoxAttack(Attack):
    """Query attacks on any executable through an :class:`Oracle` (counted, budgeted).

    Subclasses implement ``_run(oracle, pixels, y, t, eps, rng, clean_pred) -> dict`` over all
    images for one ε, with ``adv`` (uint8 [N, C, H, W]), ``pred`` [N], ``first_success`` [N] and
    optional ``traces``. The clean images are queried first (one counted query each).
    ``scores_needed`` attacks refuse label-only executables.
    """

    scores_needed = True

    def __init__(self, budget: int | None = None, batch_size: int = 1024):
        self.budget = check_positive(budget, "budget", self.name, allow_none=True)
        self.batch_size = check_positive(batch_size, "batch_size", self.name)

    def __call__(
        self,
        model: Executable | Oracle,
        images: Any,
        labels: Any,
        epsilons: Any = None,
        *,
        targets: Any = None,
        seed: int = 0,
        keep: bool = True,
    ) -> AttackResult:
        exe = model.executable if isinstance(model, Oracle) else model
        if not isinstance(exe, Executable):
            raise AttackError(
                f"{self.name} is a black-box attack: it needs an executable "
                f"(hwbed.attacks.make_executable(...)), got {type(model).__name__}"
            )
        pixels = check_images(images, exe.input_shape, self.name)
        y = check_labels(labels, len(pixels), exe.num_classes, self.name)
        eps = check_epsilons(epsilons, self.name, bounded=self.bounded)
        t = self._targets(targets, y, exe.num_classes, seed)
        if self.scores_needed and getattr(exe, "returns", "scores") != "scores":
            Oracle(exe, 1).require_scores(self.name)
        start = time.perf_counter()
        results, inside = [], 0.0
        once = not self.bounded and not getattr(self, "early_stop", False)
        for e, radius in enumerate([np.inf] if once else eps):
            oracle = Oracle(exe, len(pixels), self.budget, batch_size=self.batch_size)
            rng = np.random.default_rng([int(seed), e])
            clean_pred, _ = oracle.labels(np.arange(len(pixels)), pixels)
            out = self._run(oracle, pixels, y, t, float(radius), rng, clean_pred)
            inside += oracle.time_inside
            results.append((clean_pred, out, oracle))
        if once:  # a minimum-norm run: every ε is a threshold on the same run
            clean_pred, out, oracle = results[0]
            results = [(clean_pred, _threshold(out, r, pixels, clean_pred), oracle) for r in eps]
        adv = np.stack([r[1]["adv"] for r in results])
        pred = np.stack([r[1]["pred"] for r in results])
        success = judged(pred, results[0][0], y, t)
        traces = {
            k: np.stack([r[1]["traces"][k] for r in results])
            for k in results[0][1].get("traces", {})
        }
        return AttackResult(
            attack=self.name,
            params=self.params,
            norm=self.norm,
            epsilons=eps,
            targeted=self.targeted,
            images=pixels,
            labels=y,
            targets=t,
            clean_pred=results[0][0],
            pred=pred,
            success=success,
            queries=np.stack([r[2].queries for r in results]),
            distortion=distortion(pixels[None], adv),
            crafted_on=exe.name,
            scored_on=exe.name,
            seed=int(seed),
            wall_time=time.perf_counter() - start,
            executable_time=inside,
            first_success=np.stack([r[1]["first_success"] for r in results]),
            exhausted=np.stack([r[2].exhausted for r in results]) & ~success,
            adversarial=adv if keep else None,
            traces=traces,
        )

    def _run(
        self,
        oracle: Oracle,
        pixels: np.ndarray,
        y: np.ndarray,
        t: np.ndarray | None,
        eps: float,
        rng: np.random.Generator,
        clean_pred: np.ndarray,
    ) -> dict[str, Any]:
        raise NotImplementedError


def _threshold(
    out: dict[str, Any], eps: float, pixels: np.ndarray, clean_pred: np.ndarray
) -> dict[str, Any]:
    """A minimum-norm run's outcome at threshold ``eps``, from its best-so-far ``distortion``
    trace [T, N] (monotone): the adversarial where it ends within ε, else the clean image."""
    dist = out["traces"]["distortion"]
    within = np.isfinite(dist) & (dist <= eps * (1 + 1e-12))
    ok = within[-1]
    first = np.where(
        out["first_success"] == 0, 0, np.where(within.any(axis=0), within.argmax(axis=0) + 1, -1)
    )
    traces = dict(out["traces"])
    if "label" in traces:
        traces["label"] = np.where(within, traces["label"], clean_pred[None])
    return {
        "adv": np.where(ok[:, None, None, None], out["adv"], pixels),
        "pred": np.where(ok, out["pred"], clean_pred),
        "first_success": first,
        "traces": traces,
    }
