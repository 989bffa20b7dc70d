"""Exit codes of the ``safetynet`` command, defined once (README "Commands", ``safetynet --help``).

2 is argparse's own usage error (unknown command or flag, a value of the wrong type or outside
the flag's choices); every value that parses but is wrong (a missing file, an unknown attack, a
negative count) is a :class:`~safetynet.errors.SafetyNetError` and exits 3 with one line on stderr.
"""

from __future__ import annotations

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAKE", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_REAL", "EXIT_REJECTED", "EXIT_USAGE",
           "describe"]

EXIT_OK = 0
EXIT_REAL = EXIT_OK  # sceneproof verify: the pair is a real capture
EXIT_FAKE = 1  # sceneproof verify: the pair is fake
EXIT_USAGE = 2  # argparse: unknown command or flag, a value of the wrong type
EXIT_BAD_INPUT = 3  # bad input, data or checkpoint (SafetyNetError), one line on stderr
EXIT_REJECTED = 4  # sceneproof verify: rejected as adversarial
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)

_MEANINGS = (
    (EXIT_OK, "success (sceneproof verify: real)"),
    (EXIT_FAKE, "sceneproof verify: fake"),
    (EXIT_USAGE, "usage error: unknown command or flag, a value of the wrong type (argparse)"),
    (EXIT_BAD_INPUT, "bad input, data or checkpoint: a one-line message on stderr"),
    (EXIT_REJECTED, "sceneproof verify: rejected as adversarial"),
    (EXIT_INTERRUPTED, "interrupted"),
)


def describe() -> str:
    """The exit-code table as plain text (the ``safetynet --help`` epilog)."""
    return "exit codes:\n" + "\n".join(f"  {code:<4} {meaning}" for code, meaning in _MEANINGS)
