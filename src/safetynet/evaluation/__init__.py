"""Evaluation: detection metrics, the paper's rejection rates, figures and reports.

Plots import matplotlib lazily (``safetynet.evaluation.plots``), so ``import
safetynet.evaluation`` stays light.
"""

from ..metrics import (
    CrossAttackMatrix,
    DetectionMetrics,
    adversary_success_rate,
    cross_attack_matrix,
    detection_metrics,
    roc_auc,
    roc_curve,
    safetynet_rates,
    score_cross_attack,
    threshold_at_fpr,
    tpr_at_fpr,
)
from .report import MarkdownReport, environment_info, image_link, markdown_table, read_results_json, to_jsonable, write_results_json

__all__ = [
    "CrossAttackMatrix",
    "DetectionMetrics",
    "MarkdownReport",
    "adversary_success_rate",
    "cross_attack_matrix",
    "detection_metrics",
    "environment_info",
    "image_link",
    "markdown_table",
    "read_results_json",
    "roc_auc",
    "roc_curve",
    "safetynet_rates",
    "score_cross_attack",
    "threshold_at_fpr",
    "to_jsonable",
    "tpr_at_fpr",
    "write_results_json",
]
