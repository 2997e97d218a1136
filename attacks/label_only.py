"""A label-only view of any executable: what a FINN build ending in LabelSelect answers.

BNN-PYNQ's CNV/TFC builds end in LabelSelect, so the board returns its top-k class labels and
no scores. :class:`LabelOnly` puts any executable (the twin, onnxruntime, the DSP48 simulator,
a remote server) behind the same interface, so that the decision-based attacks can be run and
tested on the host exactly as the board would answer them. Its rows are the board's rank
codes (:func:`hwbed.fpga.deploy.board_backend.labels_to_scores`): k, k-1, ..., 1 for the top-k
labels (best first) and 0 elsewhere, so argmax gives the top-1 label and nothing else about
the scores leaks. ``returns = "labels"``, so score-based attacks refuse it
(:meth:`hwbed.attacks.oracle.Oracle.require_scores`).

Example::

    from hwbed.attacks import TorchTwin
    from hwbed.attacks.label_only import LabelOnly
    board_like = LabelOnly(TorchTwin(model, "twin", (1, 8, 8), 10))  # name "labels:twin"
    board_like(pixels)  # [N, 10] float32: 1 at the top-1 label, 0 elsewhere
"""

from __future__ import annotations

import numpy as np

from hwbed.fpga.deploy.board_backend import labels_to_scores
from hwbed.ir.executable import BaseExecutable, Executable

from .inputs import AttackError


class LabelOnly(BaseExecutable):
    """``executable`` answering with its top-``k`` labels as rank codes, like LabelSelect.

    Ties between equal scores go to the lower class index, as ``np.argmax`` breaks them, so
    the top-1 label always equals the inner executable's argmax. Wrapping an executable that
    is itself label-only keeps only the labels it ranked (its zero rows stay zero). Every image
    counts as one query here (``queries``) and in the inner executable.
    """

    returns = "labels"

    def __init__(self, executable: Executable, k: int = 1):
        if not callable(executable) or not hasattr(executable, "num_classes"):
            raise AttackError(f"LabelOnly wraps an executable, got {type(executable).__name__}")
        classes = int(executable.num_classes)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= classes:
            raise AttackError(f"LabelOnly: k must be an integer in 1..{classes}, got {k!r}")
        super().__init__(f"labels:{executable.name}", executable.input_shape, classes)
        self.inner = executable
        self.k = int(k)
        self.bit_exact = bool(getattr(executable, "bit_exact", False))

    def forward(self, pixels: np.ndarray) -> np.ndarray:
        scores = np.asarray(self.inner(pixels), dtype=np.float32)
        if scores.shape != (len(pixels), self.num_classes):
            raise AttackError(
                f"{self.inner.name} returned scores of shape {tuple(scores.shape)} for "
                f"{len(pixels)} images, expected [N, {self.num_classes}]"
            )
        # NaN never ranks first (argsort puts NaN last); a stable sort keeps index order on ties
        top = np.argsort(-scores, axis=1, kind="stable")[:, : self.k]
        codes = labels_to_scores(top, self.num_classes)
        if getattr(self.inner, "returns", "scores") == "labels":
            codes[scores <= 0] = 0  # labels the inner board did not rank stay unranked
        return codes

    def __repr__(self) -> str:
        return f"LabelOnly({self.inner!r}, k={self.k}, queries={self.queries})"
