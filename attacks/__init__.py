"""The Executable protocol, its backends, and the attack suite.

White-box attacks (:class:`FGSM`, :class:`PGD`, :class:`CarliniWagnerL2`, :class:`DeepFool`)
differentiate a :class:`Twin`; black-box attacks (:class:`LocalSearch`, :class:`GenAttack`,
and the decision-based :class:`HopSkipJump`) query any executable through an
:class:`Oracle`. Every attack is called ``attack(model, images, labels, epsilons=[...])`` and
returns an :class:`AttackResult`; :func:`score_on` judges adversarials on another executable
(on-device scoring, transfer).
"""

from .distances import to_grid
from .executable import BaseExecutable, Executable, TorchTwin
from .fgsm import FGSM
from .inputs import AttackError, px
from .oracle import Oracle
from .pgd import PGD
from .result import AttackResult, worst_case
from .scoring import on_grid, score_on
from .twin import Twin

__all__ = [
    "AttackError",
    "AttackResult",
    "BaseExecutable",
    "Executable",
    "FGSM",
    "Oracle",
    "PGD",
    "TorchTwin",
    "Twin",
    "on_grid",
    "px",
    "score_on",
    "to_grid",
    "worst_case",
]
