"""Attacks by name, for sweeps and command lines: ``make_attack("pgd", norm="l2", steps=5)``."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from .base import Attack
from .inputs import AttackError

ATTACKS = {
    "fgsm": ("fgsm", "FGSM"),
    "pgd": ("pgd", "PGD"),
    "cw": ("cw", "CarliniWagnerL2"),
    "deepfool": ("deepfool", "DeepFool"),
    "localsearch": ("local_search", "LocalSearch"),
    "genattack": ("genattack", "GenAttack"),
    "hopskipjump": ("hopskipjump", "HopSkipJump"),
}
"""name -> (module in hwbed.attacks, class)."""


def attack_class(name: str) -> type[Attack]:
    """The class of attack ``name``; an unknown name lists the known ones."""
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in ATTACKS:
        raise AttackError(f"unknown attack {name!r}; choose one of {', '.join(ATTACKS)}")
    module, cls = ATTACKS[key]
    return getattr(importlib.import_module(f"hwbed.attacks.{module}"), cls)


def make_attack(name: str, **params: Any) -> Attack:
    """An attack configured by keyword parameters; an unknown parameter lists the valid ones."""
    cls = attack_class(name)
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise AttackError(
            f"{name}: unknown parameter {unknown[0]!r}; choose from {', '.join(allowed)}"
        )
    return cls(**params)
