"""Exact or refused, never inexact: every family of the spec grammar (fpga/lowering/spec_matrix).

The default run covers the float specs (refused at once) and TFC at every precision; the rest
of the matrix is ``-m slow`` (``benchmarks/spec_matrix.py`` runs it on more images).
"""

from __future__ import annotations

import pytest
import torch

from hwbed.fpga.lowering.spec_matrix import check, entries
from hwbed.models.spec import parse_spec

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:Keyword arguments are being passed")

IMAGES = 48


def _fast(spec: str) -> bool:
    s = parse_spec(spec)
    return not s.quantized or s.arch == "tfc"


MATRIX = [
    pytest.param(e, id=e.spec, marks=[] if _fast(e.spec) else [pytest.mark.slow]) for e in entries()
]


@pytest.mark.parametrize("entry", MATRIX)
def test_exact_or_refused(entry):
    outcome = check(entry, IMAGES)
    assert outcome.status in ("exact", "refused"), f"{entry.spec}: {outcome.detail}"
    if outcome.status == "refused":
        assert outcome.detail.startswith(entry.spec) and "\n" not in outcome.detail
    spec = parse_spec(entry.spec)
    if not spec.quantized:
        assert outcome.status == "refused"
    elif spec.family == "bnn-pynq":  # FINN's networks lower at every precision
        assert outcome.status == "exact", outcome.detail


def test_matrix_covers_every_part_of_the_grammar():
    names = {e.spec for e in entries()}
    for spec in (
        "resnet20",
        "resnet56-kd",
        "resnet32-prune-weight50",
        "resnet20-abc3x3",
        "resnet18-w2a8",
        "cnv-w8a1",
        "lfc-kd-w4a4",
        "resnet20-kd-xnor",
        "resnet50-prune-filter50-w8a8",
    ):
        assert spec in names, spec
    assert not {n for n in names if n.startswith("resnet") and "w1" in n}  # grammar rejects
