"""Exceptions raised by `runtime`. Every message is one line that says what is wrong and what to do."""


class EdgekitError(Exception):
    """Base class of every error that `runtime` raises on purpose."""


class InvalidInputError(EdgekitError, ValueError):
    """An input has the wrong shape, dtype or rank, holds NaN/inf, is empty, or is an unusable file."""


class ModelFileError(EdgekitError):
    """A model file or bundle is missing, truncated, corrupt, foreign, or crashed its backend."""


class IntegrityError(ModelFileError):
    """A model file's sha256 does not match its bundle manifest."""


class BackendUnavailableError(EdgekitError):
    """No installed inference backend can run this model file."""
