"""Exceptions raised for bad user input; the CLI turns them into one-line messages."""


class SafetyNetError(Exception):
    """Base class for errors the user can fix; the message says how."""


class InputError(SafetyNetError, ValueError):
    """A tensor, array or argument has the wrong shape, dtype or values."""


class DataError(SafetyNetError, OSError):
    """A data set or file on disk is missing, corrupt or in an unknown layout."""


class CheckpointError(SafetyNetError, OSError):
    """A checkpoint is missing, corrupt, or does not match the model it claims to be."""


class LimitError(InputError):
    """An input is larger than a configured limit (bytes, pixels); the message names the limit and the fix."""
