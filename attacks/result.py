"""One result type for every attack, and the numbers users report from it.

An :class:`AttackResult` holds per-example outcomes for each ε of a run ([E, N] arrays), not
only means, so that reports can take per-example worst cases over attacks and paired
on-device vs float comparisons. An image is a success at ε when its adversarial is
misclassified (untargeted) or classified as its target (targeted); untargeted, a clean image
the model already gets wrong is a success at every ε (robust accuracy as AutoAttack counts).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .distances import distortion as _distortion


@dataclass
class AttackResult:
    """What an attack run produced; arrays are [E, N] (ε index, image index) unless noted.

    - ``epsilons`` [E]: radii in [0, 1] units in ``norm`` (inf: unbounded, minimum-norm).
    - ``success``, ``pred`` (the adversarial's label on ``scored_on``).
    - ``first_success``: the iteration (generation, round; 1-based) at which the image first
      succeeded, 0 if it was already adversarial, -1 if never; ``None`` when not tracked.
    - ``queries``: forward passes charged to each image (white-box: gradient evaluations);
      ``exhausted``: the image's query budget ran out before it succeeded.
    - ``distortion``: ``l0`` (changed values), ``l2``, ``linf`` of the adversarial.
    - ``adversarial`` [E, N, C, H, W]: float32 in [0, 1] (white-box, as crafted) or uint8 (on
      the grid, as an executable saw it); ``None`` when not kept.
    - ``images`` [N, C, H, W] uint8 clean images; ``labels``/``targets`` [N];
      ``clean_pred`` [N] on ``scored_on``.
    - ``traces``: per-iteration records, e.g. PGD's ``loss`` and ``correct`` [E, R, T, N].
    - ``snapshots``: {i: (adversarial [E, N, C, H, W], pred [E, N], queries [E, N])}, what a
      white-box run would have returned (and spent) after i iterations (``snapshots=[...]``).
    """

    attack: str
    params: dict[str, Any]
    norm: str | None
    epsilons: np.ndarray
    targeted: bool
    images: np.ndarray
    labels: np.ndarray
    targets: np.ndarray | None
    clean_pred: np.ndarray
    pred: np.ndarray
    success: np.ndarray
    queries: np.ndarray
    distortion: dict[str, np.ndarray]
    crafted_on: str
    scored_on: str
    seed: int
    wall_time: float
    executable_time: float = 0.0
    first_success: np.ndarray | None = None
    exhausted: np.ndarray | None = None
    adversarial: np.ndarray | None = None
    traces: dict[str, np.ndarray] = field(default_factory=dict)
    snapshots: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.labels)

    @property
    def clean_accuracy(self) -> float:
        return float(np.mean(self.clean_pred == self.labels))

    @property
    def robust_accuracy(self) -> np.ndarray:
        """[E] fraction of all images classified as their label, clean and attacked (an image
        the model already gets wrong counts as broken, as in AutoAttack)."""
        correct = (self.clean_pred == self.labels)[None]
        return np.mean(correct & (self.pred == self.labels[None]), axis=1)

    @property
    def target_accuracy(self) -> np.ndarray | None:
        """[E] fraction of images classified as their target (targeted attacks)."""
        if self.targets is None:
            return None
        return np.mean(self.pred == self.targets[None], axis=1)

    @property
    def success_rate(self) -> np.ndarray:
        """[E] success over the initially correct images (nan when none is correct)."""
        correct = self.clean_pred == self.labels
        if not correct.any():
            return np.full(len(self.epsilons), np.nan)
        return np.mean(self.success[:, correct], axis=1)

    def success_at(self, iterations: int) -> np.ndarray:
        """[E, N] success had the run stopped after ``iterations`` (from ``first_success``).

        Valid for attacks whose first iterations do not depend on the total count (PGD with a
        fixed step, LocalSearch, GenAttack): one run of 200 gives i = 50, 100, 150, 200.
        """
        first = self._first_success()
        return (first >= 0) & (first <= iterations)

    def _first_success(self) -> np.ndarray:
        """``first_success``; a ValueError when the attack did not track iterations."""
        if self.first_success is None:
            raise ValueError(f"{self.attack} on {self.scored_on} did not track iterations")
        return self.first_success

    def accuracy_at(self, iterations: int) -> np.ndarray:
        """[E] accuracy to the original label after ``iterations``.

        Untargeted: correct and not yet broken. Targeted: from the per-iteration ``label``
        trace [E, T, N] when the attack kept one (GenAttack does), since an image can leave
        its label long before it reaches the target.
        """
        if not self.targeted:
            correct = (self.clean_pred == self.labels)[None]
            return np.mean(correct & ~self.success_at(iterations), axis=1)
        if "label" not in self.traces:
            raise ValueError(f"{self.attack} kept no per-iteration label trace")
        labels = self.traces["label"]  # [E, T, N]: label of the best candidate after step t
        t = min(max(iterations, 1), labels.shape[1]) - 1
        return np.mean(labels[:, t] == self.labels[None], axis=1)

    def at(self, iterations: int, key: str) -> AttackResult:
        """The result had the run stopped after ``iterations`` (its parameter ``key``).

        From a white-box snapshot when the run kept one (adversarials and labels as they were
        then). Otherwise from the black-box traces ([E, T, N], row t-1 after iteration t):
        success from ``first_success``; labels from the ``label`` trace (an image not yet
        broken keeps its label, untargeted, when there is none); queries from the ``queries``
        trace. Attacks that stop an image once it succeeds (GenAttack, LocalSearch) keep the
        broken image's adversarial and distortion; an attack that goes on improving it
        (HopSkipJump: a ``distortion`` trace) has only that trace's distortion at iteration t
        and no adversarial. Not broken: distortion NaN, the clean image.
        """
        params = {**self.params, key: iterations}
        if iterations in self.snapshots:
            adv, pred, queries = self.snapshots[iterations]
            first = (
                None
                if self.first_success is None
                else np.where(self.first_success <= iterations, self.first_success, -1)
            )
            return replace(
                self,
                params=params,
                adversarial=adv,
                pred=pred,
                first_success=first,
                success=judged(pred, self.clean_pred, self.labels, self.targets),
                distortion=_distortion(self.images[None], adv),
                queries=queries,
                traces={},
                snapshots={},
            )
        broken = self.success_at(iterations)

        def row(trace: np.ndarray) -> np.ndarray:
            return trace[:, min(max(iterations, 1), trace.shape[1]) - 1]

        if "label" in self.traces:
            pred = row(self.traces["label"])
        elif self.targeted:
            raise ValueError(f"{self.attack} kept no per-iteration label trace")
        else:
            pred = np.where(broken, self.pred, self.labels[None])
        queries = self.queries
        if "queries" in self.traces:  # what a run stopped after that iteration had spent
            queries = row(self.traces["queries"]).astype(np.int64)
        kept = None
        if "distortion" in self.traces and self.norm is not None:  # traced in its norm
            distortion = {k: np.full(broken.shape, np.nan) for k in self.distortion}
            distortion[self.norm] = np.where(broken, row(self.traces["distortion"]), np.nan)
        else:
            distortion = {k: np.where(broken, v, np.nan) for k, v in self.distortion.items()}
            if self.adversarial is not None:
                kept = np.where(
                    broken[..., None, None, None],
                    self.adversarial,
                    self.images[None].astype(self.adversarial.dtype),
                )
        return replace(
            self,
            params=params,
            pred=pred,
            success=broken,
            queries=queries,
            distortion=distortion,
            adversarial=kept,
            first_success=np.where(broken, self._first_success(), -1),
            exhausted=None if self.exhausted is None else self.exhausted & ~broken,
            snapshots={},
        )

    def summary(self) -> list[dict[str, Any]]:
        """One row per ε: the RobustBench-style numbers and the query/distortion statistics."""
        rows = []
        for e, eps in enumerate(self.epsilons):
            ok = self.success[e]
            q = self.queries[e][ok]
            row = {
                "attack": self.attack,
                "norm": self.norm,
                "eps": float(eps),
                "eps_px": float(eps * 255.0),
                "targeted": self.targeted,
                "crafted_on": self.crafted_on,
                "scored_on": self.scored_on,
                "n": self.n,
                "clean_accuracy": self.clean_accuracy,
                "robust_accuracy": float(self.robust_accuracy[e]),
                "success_rate": float(self.success_rate[e]),
                "median_queries": float(np.median(q)) if len(q) else float("nan"),
                "mean_queries": float(np.mean(q)) if len(q) else float("nan"),
                "median_l2": float(np.median(self.distortion["l2"][e][ok]))
                if ok.any()
                else float("nan"),
            }
            if (target_accuracy := self.target_accuracy) is not None:
                row["target_accuracy"] = float(target_accuracy[e])
            rows.append(row)
        return rows

    def records(self) -> list[dict[str, Any]]:
        """One row per (ε, image): the per-example outcomes a result store keeps."""
        rows = []
        for e, eps in enumerate(self.epsilons):
            for i in range(self.n):
                rows.append(
                    {
                        "eps": float(eps),
                        "image": i,
                        "label": int(self.labels[i]),
                        "target": None if self.targets is None else int(self.targets[i]),
                        "clean_pred": int(self.clean_pred[i]),
                        "pred": int(self.pred[e, i]),
                        "success": bool(self.success[e, i]),
                        "first_success": None
                        if self.first_success is None
                        else int(self.first_success[e, i]),
                        "queries": int(self.queries[e, i]),
                        "exhausted": None if self.exhausted is None else bool(self.exhausted[e, i]),
                        **{f"{k}": float(v[e, i]) for k, v in self.distortion.items()},
                    }
                )
        return rows


def outcome(pred: np.ndarray, labels: np.ndarray, targets: np.ndarray | None) -> np.ndarray:
    """Success of predictions [..., N]: misclassified, or classified as the target."""
    if targets is None:
        return pred != labels
    return pred == targets


def judged(
    pred: np.ndarray, clean_pred: np.ndarray, labels: np.ndarray, targets: np.ndarray | None
) -> np.ndarray:
    """A result's success [E, N]: untargeted, an image the model already gets wrong is a
    success at every ε whatever its adversarial does; targeted, the target is reached."""
    if targets is None:
        return (pred != labels[None]) | (clean_pred != labels)[None]
    return pred == targets[None]


def rescored(
    result: AttackResult,
    *,
    pred: np.ndarray,
    clean_pred: np.ndarray,
    adversarial: np.ndarray,
    scored_on: str,
    queries: int,
    wall_time: float,
    executable_time: float,
) -> AttackResult:
    """``result`` with its adversarials re-judged on another executable (see ``score_on``)."""
    n = result.n
    return replace(
        result,
        pred=pred,
        clean_pred=clean_pred,
        success=judged(pred, clean_pred, result.labels, result.targets),
        queries=np.full((len(result.epsilons), n), queries, dtype=np.int64),
        distortion=_distortion(result.images[None], adversarial),
        adversarial=adversarial,
        scored_on=scored_on,
        first_success=None,
        exhausted=None,
        traces={},
        wall_time=wall_time,
        executable_time=executable_time,
    )


def worst_case(results: list[AttackResult], eps_index: list[int] | None = None) -> np.ndarray:
    """Per-example worst case over attacks: [N] True where the image survives all of them.

    Robust accuracy is then ``worst_case(...).mean()`` (mean over x of min over attacks, as
    Carlini et al. 2019 ask), never the minimum of the per-attack means. ``eps_index`` picks
    one ε per result (default: the last, the strongest).
    """
    if not results:
        raise ValueError("worst_case needs at least one result")
    labels = results[0].labels
    survive = np.ones(len(labels), dtype=bool)
    for k, r in enumerate(results):
        if r.n != len(labels) or not np.array_equal(r.labels, labels):
            raise ValueError(f"{r.attack} ran on other images or labels than {results[0].attack}")
        e = -1 if eps_index is None else eps_index[k]
        survive &= (r.clean_pred == labels) & (r.pred[e] == labels)
    return survive
