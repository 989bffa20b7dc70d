"""Tramèr's consistency check: a robust detector at eps implies a robust classifier at eps / 2.

F. Tramèr, "Detecting Adversarial Examples Is (Nearly) As Hard As Classifying Them", ICML 2022
[https://arxiv.org/abs/2107.11630]: from a detector that is robust (every perturbation within
eps is either classified correctly or rejected) one can build an (inefficient) classifier that
is robust at eps / 2 with the same robust accuracy. A detector whose adaptive evaluation at eps
implies a robust accuracy at eps / 2 above the best *published* robust classifier at eps / 2 is
therefore more likely mis-evaluated than a breakthrough; such results are flagged.

The implied robust accuracy of a detector at eps is ``clean accuracy x (1 - success of its
strongest adaptive attack)``: the test images the classifier gets right and that the attacker
cannot turn into an accepted misclassification. (It ignores clean images the detector rejects,
so it errs in the detector's favour, which makes a flag more, not less, conservative.)

The published numbers (:data:`PUBLISHED_ROBUST_ACCURACY`) are RobustBench's CIFAR-10 leaderboard
top entries under AutoAttack; RobustBench publishes L∞ at 8/255 and L2 at 0.5 only, so the
check is exact at detection budgets 16/255 (L∞) and 1.0 (L2). At L∞ 8/255 we compare with the
8/255 figure as an *indicative* check: the best robust accuracy at 4/255 is at least that figure,
so exceeding it there is suspicious but not conclusive.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PUBLISHED_ROBUST_ACCURACY", "consistency_checks"]

#: (norm, eps) -> (robust accuracy in [0, 1], source). The highest AutoAttack robust accuracy among
#: RobustBench's CIFAR-10 entries, read from the model cards in the RobustBench repository
#: (``model_info/cifar10/{Linf,L2}/*.json``, field ``autoattack_acc``; checked 2026-12-02). Not
#: re-fetched by the code (no downloads): check https://robustbench.github.io for newer entries.
PUBLISHED_ROBUST_ACCURACY: dict[tuple[str, float], tuple[float, str]] = {
    ("linf", 8 / 255): (0.7528, "RobustBench CIFAR-10 Linf 8/255, highest AutoAttack entry: Amini et al. 2024, "
                                "'MeanSparse: Post-Training Robustness Enhancement Through Mean-Centered Feature "
                                "Sparsification' (arXiv 2406.05927), MeanSparse WRN-94-16, 75.28 % "
                                "(model card Amini2024MeanSparse_S-WRN-94-16.json); next: Bartoldson et al. 2024, "
                                "WRN-94-16, 73.71 %"),
    ("l2", 0.5): (0.8728, "RobustBench CIFAR-10 L2 0.5, highest AutoAttack entry: Amini et al. 2024, MeanSparse "
                          "WRN-70-16, 87.28 % (model card Amini2024MeanSparse_S-WRN-70-16.json); next: Wang et al. "
                          "2023, 'Better Diffusion Models Further Improve Adversarial Training', WRN-70-16, 84.86 %"),
}


def _published(norm: str, eps: float) -> tuple[float, str, bool] | None:
    """(accuracy, source, exact) of the published number for classification at eps / 2, if any."""
    for (n, e), (acc, src) in PUBLISHED_ROBUST_ACCURACY.items():
        if n != norm:
            continue
        if abs(eps / 2 - e) <= 1e-6:
            return acc, src, True
        if abs(eps - e) <= 1e-6:  # eps / 2 is below the published budget: indicative only
            return acc, src, False
    return None


def consistency_checks(curves: list[dict[str, Any]], clean_accuracy: float) -> list[dict[str, Any]]:
    """One record per (detector, norm, eps) with a published comparison: implied vs published, and the flag."""
    out = []
    for c in curves:
        if c["defence"] == "ori":
            continue
        pub = _published(c["norm"], c["eps"])
        if pub is None:
            continue
        acc, src, exact = pub
        implied = clean_accuracy * (1.0 - c["success"])
        out.append({"defence": c["defence"], "norm": c["norm"], "detection_eps": c["eps"], "classification_eps": c["eps"] / 2,
                    "implied_robust_accuracy": implied, "published_robust_accuracy": acc, "source": src,
                    "exact": exact, "triggered": implied > acc})
    return out
