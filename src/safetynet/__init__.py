"""SafetyNet: detecting and rejecting adversarial examples (Lu, Issaranon, Forsyth, ICCV 2017)."""

__version__ = "0.1.0"
