"""The query oracle: every black-box attack reaches an executable through one of these.

No attack library counts queries, enforces a budget or caches repeated images (foolbox#638,
foolbox#710, ART#1238); hwbed's oracle does, per image of the attacked batch:

- ``queries[i]``: forward passes the executable ran for image i (what a board would see);
  ``requests[i]``: candidates asked for, cache hits included (the paper-style count when an
  attack's own bookkeeping re-asks for its elite).
- ``budget``: at most that many queries per image. A request beyond it is not sent: its row
  comes back unanswered and the image is marked ``exhausted``; never silently over-queried.
- a cache of uint8 images already answered for the same image (keyed by the owner and the
  image bytes, so every attacked image pays for its own queries), holding up to
  ``cache_size`` answers (the least recently used go first, so an elite asked for every
  generation stays).
- batching: one call takes the pending candidates of many images and runs them through the
  executable in chunks of ``batch_size``.
- ``time_inside``: seconds spent inside the executable, so an attack's own overhead is
  ``1 - time_inside / wall``.
"""

from __future__ import annotations

import hashlib
import time

import numpy as np

from hwbed.ir.executable import Executable

from .inputs import AttackError


class Oracle:
    """Counted, budgeted, cached and batched access to ``executable`` for ``n`` images."""

    def __init__(
        self,
        executable: Executable,
        n: int,
        budget: int | None = None,
        cache: bool = True,
        batch_size: int = 1024,
        cache_size: int = 1 << 18,
    ):
        if budget is not None and (
            isinstance(budget, bool) or int(budget) != budget or budget <= 0
        ):
            raise AttackError(f"query budget must be a positive integer or None, got {budget!r}")
        if batch_size <= 0:
            raise AttackError(f"batch_size must be positive, got {batch_size!r}")
        self.executable = executable
        self.n = int(n)
        self.budget = None if budget is None else int(budget)
        self.batch_size = int(batch_size)
        self.queries = np.zeros(self.n, dtype=np.int64)
        self.requests = np.zeros(self.n, dtype=np.int64)
        self.exhausted = np.zeros(self.n, dtype=bool)
        self.calls = 0
        self.time_inside = 0.0
        self.cache_size = int(cache_size)
        self._cache: dict[tuple[int, bytes], np.ndarray] | None = {} if cache else None

    @property
    def name(self) -> str:
        return self.executable.name

    @property
    def returns(self) -> str:
        return getattr(self.executable, "returns", "scores")

    @property
    def num_classes(self) -> int:
        return self.executable.num_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.executable.input_shape)

    def require_scores(self, attack: str) -> None:
        """Refuse a label-only executable for a score-based attack, with what to use instead."""
        if self.returns != "scores":
            raise AttackError(
                f"{attack} needs class scores, but {self.name} returns {self.returns} only; "
                "attack it with the decision-based 'hopskipjump'"
            )

    def remaining(self, owner: np.ndarray | None = None) -> np.ndarray:
        """Queries each image (or each of ``owner``) may still spend (a large number: no budget)."""
        left = (
            np.full(self.n, np.iinfo(np.int64).max // 2)
            if self.budget is None
            else self.budget - self.queries
        )
        return left if owner is None else left[np.asarray(owner)]

    def scores(self, owner: np.ndarray, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores [M, K] float32 of candidates ``pixels`` (uint8 [M, C, H, W]) of images
        ``owner`` [M]; and ``answered`` [M]. Unanswered rows (budget spent) are NaN."""
        return self._ask(owner, pixels)

    def labels(self, owner: np.ndarray, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Top-1 labels [M] (-1 where unanswered) and ``answered`` [M]; works label-only."""
        scores, answered = self._ask(owner, pixels)
        labels = np.full(len(scores), -1, dtype=np.int64)
        if answered.any():
            labels[answered] = np.argmax(scores[answered], axis=1)
        return labels, answered

    def _ask(self, owner: np.ndarray, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        owner = np.asarray(owner, dtype=np.int64)
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or len(pixels) != len(owner):
            raise AttackError(
                f"oracle: expected uint8 candidates [M, C, H, W] for {len(owner)} "
                f"owners, got {pixels.dtype} {tuple(pixels.shape)}"
            )
        if owner.size and (owner.min() < 0 or owner.max() >= self.n):
            raise AttackError(f"oracle: owner ids must lie in 0..{self.n - 1}")
        m = len(owner)
        out = np.full((m, self.num_classes), np.nan, dtype=np.float32)
        answered = np.zeros(m, dtype=bool)
        np.add.at(self.requests, owner, 1)
        cache = self._cache
        keys = (
            []
            if cache is None
            else [
                (int(i), hashlib.blake2b(p.tobytes(), digest_size=16).digest())
                for i, p in zip(owner, pixels, strict=True)
            ]
        )
        todo: list[int] = []
        first_of: dict[tuple[int, bytes], int] = {}
        dupes: list[tuple[int, int]] = []
        left = self.remaining().copy()
        for j in range(m):
            if cache is not None:
                hit = cache.pop(keys[j], None)
                if hit is not None:  # least recently used goes first: re-insert at the end
                    cache[keys[j]] = hit
                    out[j] = hit
                    answered[j] = True
                    continue
                if keys[j] in first_of:  # the same image twice in one request: ask once
                    dupes.append((j, first_of[keys[j]]))
                    continue
            i = owner[j]
            if left[i] <= 0:
                self.exhausted[i] = True
                continue
            left[i] -= 1
            todo.append(j)
            if cache is not None:
                first_of[keys[j]] = j
        if todo:
            idx = np.asarray(todo)
            out[idx] = self._run(pixels[idx])
            answered[idx] = True
            np.add.at(self.queries, owner[idx], 1)
            if cache is not None:
                for j in todo:
                    cache[keys[j]] = out[j].copy()
                while len(cache) > self.cache_size:
                    del cache[next(iter(cache))]
        for j, src in dupes:
            out[j], answered[j] = out[src], answered[src]
        return out, answered

    def _run(self, pixels: np.ndarray) -> np.ndarray:
        parts = []
        for start in range(0, len(pixels), self.batch_size):
            t0 = time.perf_counter()
            scores = self.executable(pixels[start : start + self.batch_size])
            self.time_inside += time.perf_counter() - t0
            self.calls += 1
            parts.append(np.asarray(scores, dtype=np.float32))
        return np.concatenate(parts)
