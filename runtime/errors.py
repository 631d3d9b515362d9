"""Exceptions raised by `runtime`. Every message is one line that says what is wrong and what to do."""


class EdgekitError(Exception):
    """Base class of every error that `runtime` raises on purpose. The message is always one line:
    any newlines in it (from a backend's own message, say) are folded into spaces."""

    def __init__(self, message: object = "", *args: object) -> None:
        super().__init__(" ".join(str(message).split()), *args)


class InvalidInputError(EdgekitError, ValueError):
    """An input has the wrong shape, dtype or rank, holds NaN/inf, is empty, or is an unusable file."""


class RequestRefused(InvalidInputError):
    """An input refused with a more specific HTTP status than 400 (413: too large, 415: a media type
    this model does not take); raised by the model kinds' upload decoders, answered by the server."""

    def __init__(self, status: int, message: object) -> None:
        super().__init__(message)
        self.status = int(status)


class ModelFileError(EdgekitError):
    """A model file or bundle is missing, truncated, corrupt, foreign, or crashed its backend."""


class IntegrityError(ModelFileError):
    """A model file's sha256 does not match its bundle manifest."""


class InferenceError(EdgekitError):
    """The backend failed while running an input that passed every check: a defect of the model file or
    of the backend, not of the input (so never reported as an InvalidInputError)."""


class BackendUnavailableError(EdgekitError):
    """No installed inference backend can run this model file."""


class SettingsError(EdgekitError, ValueError):
    """A runtime setting or device profile is invalid or unknown."""


def first_line(exc: BaseException | str, limit: int = 300) -> str:
    """The first non-empty line of an exception's message (or of a text), for wrapping a library's
    error in one of ours; an exception with an empty message gives its class name."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()[:limit]
    return type(exc).__name__ if isinstance(exc, BaseException) else ""


def last_line(text: str | bytes | None, limit: int = 400) -> str:
    """The last non-empty line of a child process's output (where its error message ends up)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:limit] if lines else ""
