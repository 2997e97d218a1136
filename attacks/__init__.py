"""The Executable protocol, its backends, and the attack suite.

White-box attacks (:class:`FGSM`, :class:`PGD`, :class:`CarliniWagnerL2`, :class:`DeepFool`)
differentiate a :class:`Twin`; black-box attacks (:class:`LocalSearch`, :class:`GenAttack`,
and the decision-based :class:`HopSkipJump`) query any executable through an
:class:`Oracle`. Every attack is called ``attack(model, images, labels, epsilons=[...])`` and
returns an :class:`AttackResult`; :func:`score_on` judges adversarials on another executable
(on-device scoring, transfer); :func:`make_executable` builds any backend.

The executable protocol and its base classes are :mod:`hwbed.ir.executable`'s, re-exported
here. Names resolve lazily (PEP 562), so this package imports nothing heavy until an attack
is asked for.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "AttackError": ".inputs",
    "px": ".inputs",
    "AttackResult": ".result",
    "worst_case": ".result",
    "BaseExecutable": "hwbed.ir.executable",
    "Executable": "hwbed.ir.executable",
    "TorchTwin": "hwbed.ir.executable",
    "make_executable": ".backends",
    "KINDS": ".backends",
    "LabelOnly": ".label_only",
    "Oracle": ".oracle",
    "Twin": ".twin",
    "to_grid": ".distances",
    "on_grid": ".scoring",
    "score_on": ".scoring",
    "make_attack": ".registry",
    "FGSM": ".fgsm",
    "PGD": ".pgd",
    "CarliniWagnerL2": ".cw",
    "DeepFool": ".deepfool",
    "LocalSearch": ".local_search",
    "GenAttack": ".genattack",
    "HopSkipJump": ".hopskipjump",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hwbed.attacks' has no attribute {name!r}")
    module = importlib.import_module(_EXPORTS[name], __name__)
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
