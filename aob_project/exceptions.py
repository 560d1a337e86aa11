"""The one error tree. Every error a person can act on is an AobError; the API renders it as
``{"error": code, "message": message, "details": extra}`` with ``status``."""

from __future__ import annotations

from typing import Any


class AobError(Exception):
    code = "error"
    status = 400

    def __init__(self, message: str, *, code: str | None = None, extra: dict[str, Any] | None = None,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.extra = extra or {}


class ValidationFailed(AobError):
    code = "validation_error"
    status = 400


class NotFound(AobError):
    code = "not_found"
    status = 404


class Conflict(AobError):
    code = "conflict"
    status = 409


class Forbidden(AobError):
    code = "forbidden"
    status = 403


class ServiceUnavailable(AobError):
    code = "service_unavailable"
    status = 503
