"""Class labels and detector letters shared by every SceneProof module.

Label :data:`REAL` (1) is a real capture, :data:`FAKE` (0) anything else. SafetyNet detectors
A (``fc7``), B (``fc6``) and C (``pool5``) sit on the classifier's late ReLU layers
(:data:`DETECTOR_LAYERS`).
"""

from __future__ import annotations

REAL, FAKE = 1, 0
CLASSES = ("fake", "real")
#: Detector letters of the paper's SceneProof tables and the layers they read.
DETECTOR_LAYERS = {"A": "fc7", "B": "fc6", "C": "pool5"}

__all__ = ["CLASSES", "DETECTOR_LAYERS", "FAKE", "REAL"]
