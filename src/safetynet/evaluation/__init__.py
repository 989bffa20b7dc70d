"""The evaluation engine: tasks, defences, the attack rows, reliability flags, figures and reports.

``Task`` (a classifier with natural fit/test images and a threat model), ``Defence`` (classifier +
detector with a calibrated operating point), ``AttackBench`` (every Table-4 row against every
defence). The metrics themselves live in :mod:`safetynet.metrics` and are re-exported here.
Plots import matplotlib lazily (``safetynet.evaluation.plots``), so ``import
safetynet.evaluation`` stays light.
"""

from ..cross_attack import CrossAttackMatrix, cross_attack_matrix, score_cross_attack
from ..metrics import (
    DetectionMetrics,
    adversary_success_rate,
    detection_metrics,
    roc_auc,
    roc_curve,
    safetynet_rates,
    threshold_at_fpr,
    tpr_at_fpr,
)
from .defence import CalibratedDetector, Defence, Verdicts
from .engine import AttackBench, AttackSettings
from .task import Task, image_task
from .report import MarkdownReport, environment_info, image_link, markdown_table, read_results_json, to_jsonable, write_results_json

__all__ = [
    "AttackBench",
    "AttackSettings",
    "CalibratedDetector",
    "Defence",
    "Task",
    "Verdicts",
    "image_task",
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
