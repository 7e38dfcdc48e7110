"""One exception hierarchy. Every error says what failed, for which input, and what to do (the hint).

The CLI prints ``str(error)`` as a single line and exits 2; nothing else in the package prints tracebacks
for these.
"""

from __future__ import annotations


class StreamerError(Exception):
    """Base of every error the product raises on purpose."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message)

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


def first_line(exc: BaseException) -> str:
    """A foreign exception as one line for one of ours: ``Type: message`` (whitespace collapsed, the message
    cut at 200 characters)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}"


class ConfigError(StreamerError):
    """Bad command-line option or config file value."""


class SourceError(StreamerError):
    """A source cannot be opened or read (bad path, missing camera, refused URL, corrupt file)."""


class ModelError(StreamerError):
    """A model file is missing, corrupt, or does not fit the pipeline (input shape, dtype, metadata)."""


class EngineMismatchError(ModelError):
    """An engine plan was built for another GPU, backend version, precision or model."""


class BackendUnavailableError(StreamerError):
    """The requested backend's package or hardware is not present on this machine."""


class DatasetError(StreamerError):
    """Training data missing or malformed."""


class PublishError(StreamerError):
    """ZeroMQ endpoint cannot be bound (in use, malformed)."""
