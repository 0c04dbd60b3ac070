"""What can go wrong while copying model files, as one rooted tree.

Each error's message is meant for the ops page as it is: it names the repository, file or part and
says what to do. `retryable` tells the back-off loop whether another attempt can help.
"""

from __future__ import annotations


class FilesError(Exception):
    """Root of every model-files error."""

    retryable = False


class SourceRefused(FilesError):
    """The hub answered and said no: gated, private without a token, not found, disabled."""


class SourceUnavailable(FilesError):
    """The hub could not be reached, or failed, or was cut off mid-body (worth another attempt)."""

    retryable = True

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # the hub's own `Retry-After`, in seconds


class StoreFailed(FilesError):
    """The S3-compatible store refused or failed a request."""


class VerificationFailed(FilesError):
    """A copied file does not match the hub's checksum or size."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


class Cancelled(FilesError):
    """Somebody cancelled the download; finished files and parts stay for a later attempt."""


__all__ = [
    "Cancelled",
    "FilesError",
    "SourceRefused",
    "SourceUnavailable",
    "StoreFailed",
    "VerificationFailed",
]
