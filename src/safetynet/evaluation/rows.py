"""The attack-row registry: the rows of the paper's Table 4 and the defence columns they run against.

One :class:`AttackRow` per attack family; the CIFAR-10 robustness job and SceneProof's Table 4
both pick their rows from :data:`ATTACK_ROWS`, so a row means the same attack everywhere.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["ATTACK_ROWS", "DEFENCES", "DEFENCE_TITLES", "NORMS", "TRANSFER_ROWS", "AttackRow", "base_row", "expand_rows"]

#: Defence columns of Table 4, in order.
DEFENCES = ("ori", "subnet", "det_a", "det_a_narrow", "det_ens")
DEFENCE_TITLES = {"ori": "Ori", "subnet": "Subnet Det", "det_a": "Det A", "det_a_narrow": "Det A (narrow σ)",
                  "det_ens": "Det ensemble"}
NORMS = ("linf", "l2")


@dataclass(frozen=True)
class AttackRow:
    """One row of Table 4: an attack family."""

    key: str
    label: str
    kind: str  # "I" (fool the classifier) or "II" (fool the classifier and evade the detector)
    access: str  # "white" or "black"
    norms: tuple[str, ...]
    per_defence: bool  # crafted against each defence (adaptive) or once and replayed on all
    minimisation: bool = False  # runs once without a budget and is clipped to each eps
    surrogate: str | None = None  # transfer rows: the tag of the surrogate they are crafted on


def base_row(key: str) -> AttackRow:
    """The :data:`ATTACK_ROWS` family of a (possibly per-surrogate, ``family@tag``) row key."""
    return ATTACK_ROWS[key.split("@", 1)[0]]


#: Rows crafted on a surrogate (expanded once per surrogate).
TRANSFER_ROWS = ("transfer-fgsm", "transfer-bim", "finetune-tf", "subnet-tf")


ATTACK_ROWS: dict[str, AttackRow] = {r.key: r for r in (
    AttackRow("bim", "Gradient descent (I): BIM", "I", "white", NORMS, False),
    AttackRow("type2", "Gradient descent (II): smoothed (paper)", "II", "white", NORMS, True),
    AttackRow("bpda", "BPDA / straight-through (II)", "II", "white", NORMS, True),
    AttackRow("opgd", "Orthogonal PGD (II)", "II", "white", NORMS, True),
    AttackRow("code-matching", "Code matching (II)", "II", "white", ("linf",), True),
    AttackRow("hsja", "HopSkipJump, hard label (II)", "II", "black", NORMS, True, minimisation=True),
    AttackRow("transfer-fgsm", "Surrogate FastSign TF (I)", "I", "black", ("linf",), False),
    AttackRow("transfer-bim", "Surrogate GradDesc TF (I)", "I", "black", NORMS, False),
    AttackRow("finetune-tf", "Surrogate Finetune TF (II)", "II", "black", NORMS, False),
    AttackRow("subnet-tf", "Surrogate Subnet Det TF (II)", "II", "black", NORMS, False),
)}


def expand_rows(attacks: list[str], tags: list[str]) -> list[AttackRow]:
    """The rows to run: each transfer family once per surrogate (suffixed ``@tag`` when there are several)."""
    rows = []
    for a in attacks:
        row = ATTACK_ROWS[a]
        if a not in TRANSFER_ROWS:
            rows.append(row)
        elif len(tags) == 1:
            rows.append(dataclasses.replace(row, surrogate=tags[0]))
        else:
            rows.extend(dataclasses.replace(row, key=f"{a}@{t}", label=f"{row.label} from {t}", surrogate=t) for t in tags)
    return rows
