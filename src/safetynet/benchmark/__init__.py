"""``safetynet benchmark``: SafetyNet beside the Metzen subnetwork, the confidence baseline, Mahalanobis, LID
and KD+BU (or your own detector), under one protocol: thresholds on held-out clean images at a fixed FPR,
type-I detection with a trained-on-one/tested-on-others matrix, each detector's strongest adaptive attack,
the reliability flags and Tramèr's consistency check. See :mod:`safetynet.benchmark.run`."""

from .config import BenchmarkConfig
from .run import run_benchmark

__all__ = ["BenchmarkConfig", "run_benchmark"]
