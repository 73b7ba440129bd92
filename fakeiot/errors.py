"""fakeiot's exceptions: why it could not start (:class:`FakeIotError` and its subclasses, one line
each, fit for ``error: ...`` on the command line), and the errors of its HTTP API in AWS's shape
(status, ``x-amzn-ErrorType``, message)."""

from __future__ import annotations


class FakeIotError(Exception):
    """fakeiot could not start; ``str()`` says why in one line."""


class DataDirError(FakeIotError):
    """The data directory (``--data-dir``) cannot be used: not a directory, not writable..."""


class DataDirLocked(DataDirError):
    """Another fakeiot (standalone, or embedded in a gateway) uses the data directory."""

    def __init__(self, message: str, pid: int | None) -> None:
        super().__init__(message)
        self.pid = pid


class ApiError(Exception):
    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


def not_found(what: str) -> ApiError:
    return ApiError(404, "ResourceNotFoundException", f"{what} cannot be found.")


def invalid(message: str) -> ApiError:
    return ApiError(400, "InvalidRequestException", message)
