"""Errors of fakeiot's HTTP API, in AWS's shape (status, ``x-amzn-ErrorType``, message)."""

from __future__ import annotations


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
