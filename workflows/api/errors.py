"""The one DRF exception handler: ``{"error": code, "message": text, "details": {...}}``."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response

from aob_project.exceptions import AobError, ServiceUnavailable

logger = logging.getLogger(__name__)


def _first_error(detail: Any, path: str = "") -> tuple[str, str, str | None]:
    """The first error's path, message and code (its rule), from one walk: the code is the
    message's own, so a nested field's error names its rule as a top-level one does."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            return _first_error(value, f"{path}.{key}" if path else str(key))
    if isinstance(detail, list) and detail:
        if all(not isinstance(d, dict | list) for d in detail):
            return path, str(detail[0]), getattr(detail[0], "code", None)
        for i, item in enumerate(detail):
            if item:
                return _first_error(item, f"{path}[{i}]")
    return path, str(detail), getattr(detail, "code", None)


def _plain(detail: Any) -> Any:
    if isinstance(detail, dict):
        return {k: _plain(v) for k, v in detail.items()}
    if isinstance(detail, list):
        return [_plain(v) for v in detail]
    return str(detail)


def body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": code, "message": message, "details": details or {}}


def aob_error_headers(exc: AobError) -> dict[str, str]:
    retry_after = exc.extra.get("retry_after_seconds")
    return {} if retry_after is None else {"Retry-After": str(int(retry_after))}


def json_error(exc: AobError) -> JsonResponse:
    """An ``AobError`` answered outside DRF (the pages' middleware), as the handler below answers it."""
    return JsonResponse(body(exc.code, exc.message, exc.extra), status=exc.status, headers=aob_error_headers(exc))


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    headers: dict[str, str] = {}
    if isinstance(exc, AobError):
        return Response(body(exc.code, exc.message, exc.extra), status=exc.status, headers=aob_error_headers(exc))
    if isinstance(exc, RequestDataTooBig):  # raised by request.body, which DRF reads before our parser
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return Response(body("body_too_large", f"request body is larger than the limit of {limit} bytes",
                             {"rule": "body_too_large"}), status=400)
    if isinstance(exc, Http404):
        return Response(body("not_found", "not found"), status=404)
    if isinstance(exc, DjangoPermissionDenied):
        return Response(body("forbidden", "permission denied"), status=403)
    if isinstance(exc, exceptions.ValidationError):
        field, message, rule = _first_error(exc.detail)
        return Response(body("validation_error", f"{field}: {message}" if field else message,
                             {"field": field or None, "rule": rule, "fields": _plain(exc.detail)}),
                        status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, exceptions.ParseError):
        code = getattr(exc, "rule", None) or "malformed_json"
        path = getattr(exc, "path", None)
        return Response(body(code, str(exc.detail), {"rule": code, **({"path": path} if path else {})}), status=400)
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        from workflows.api.throttles import count_refused_anonymous
        from workflows.ratelimit import RateLimited

        try:
            if context.get("request") is not None:
                count_refused_anonymous(context["request"])
        except RateLimited as limited:
            return exception_handler(limited, context)
        response = Response(body("not_authenticated", str(exc.detail), {
            "schemes": ["Token", "Bearer"],
            "hint": "send `Authorization: Token <key>` (or `Bearer <key>`); POST /api/v1/auth/token gives a key"}),
            status=401)
        response["WWW-Authenticate"] = 'Token realm="api", Bearer realm="api"'
        return response
    if isinstance(exc, exceptions.Throttled):
        if exc.wait:
            headers["Retry-After"] = str(int(exc.wait))
        return Response(body("rate_limit_exceeded", str(exc.detail)), status=429, headers=headers)
    if isinstance(exc, exceptions.APIException):
        code = exc.get_codes() if isinstance(exc.get_codes(), str) else "error"
        return Response(body(code, str(exc.detail)), status=exc.status_code)
    if isinstance(exc, OperationalError | InterfaceError):
        logger.warning("api.database_error", exc_info=exc)
        return exception_handler(database_error(exc), context)
    return None


# SQLSTATE of a connection the server ended or never gave (class 08, and an administrator's or a
# crash's shutdown); a client-side failure to connect has none.
_CONNECTION_LOST = ("08", "57P01", "57P02", "57P03")


def database_error(exc: Exception) -> ServiceUnavailable:
    """A database error the request could not get past, as a 503 (the API's, and the pages'
    through ``workflows.middleware.DatabaseErrorMiddleware``). Whether the request's
    writes were kept is unknown if the connection went during a commit: a POST sent again with its
    ``Idempotency-Key`` is applied once. The broken connection is replaced after this request."""
    sqlstate = getattr(exc.__cause__, "sqlstate", None)
    if isinstance(exc, InterfaceError) or not sqlstate or sqlstate.startswith(_CONNECTION_LOST):
        return ServiceUnavailable("the database did not answer; send the request again shortly",
                                  extra={"rule": "database_unavailable", "retry_after_seconds": 1})
    # a statement cancelled, a deadlock, a serialization failure, a lock not granted: the database is
    # up; no Retry-After, so a heavy request is not sent again at once
    return ServiceUnavailable(f"the database could not complete the request (SQLSTATE {sqlstate})",
                              extra={"rule": "database_busy", "sqlstate": sqlstate})


def json_400(request: Any, exception: Exception | None = None) -> JsonResponse:
    """A request Django refuses before any view (a ``SuspiciousOperation``: more than
    ``DATA_UPLOAD_MAX_NUMBER_FIELDS`` parameters, a malformed host or cookie): JSON naming the
    rule, as every other error (it was Django's HTML page)."""
    rule = type(exception).__name__ if exception is not None else "BadRequest"
    rule = "".join(f"_{c.lower()}" if c.isupper() else c for c in rule).lstrip("_")  # TooManyFieldsSent: too_many_...
    message = {"too_many_fields_sent": f"at most {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} parameters a request",
               "too_many_files_sent": f"at most {settings.DATA_UPLOAD_MAX_NUMBER_FILES} files a request",
               # an admin changelist's filter it does not offer: Django's message names the lookup
               "disallowed_model_admin_lookup": f"{exception}: a list filters by its filters and search"}.get(
        rule, "the request is malformed")
    return JsonResponse(body("bad_request", message, {"rule": rule}), status=400)


def json_404(request: Any, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse(body("not_found", f"no such endpoint: {request.path}"), status=404)


def json_500(request: Any) -> JsonResponse:
    return JsonResponse(body("internal_error", "internal error; it has been logged"), status=500)
