"""Progress bars that stay quiet when output is not a terminal unless asked."""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm


def progress(*args, disable: bool | None = None, **kwargs) -> tqdm:
    """A tqdm bar; disabled when stderr is not a TTY or ``SAFETYNET_PROGRESS=0``."""
    if disable is None:
        env = os.environ.get("SAFETYNET_PROGRESS")
        disable = (env == "0") if env is not None else not sys.stderr.isatty()
    return tqdm(*args, disable=disable, leave=False, **kwargs)
