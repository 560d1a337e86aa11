"""Login attempts on the Django pages (``/login/``, ``/admin/login/``) are limited per client
address and per username, like the API's token endpoint (``workflows/api/throttles.py``). The
global write limit is a DRF throttle: it counts requests after authentication.

A database error a page (the web UI, the admin, an approval link) cannot get past is the API's
503 naming its rule, not a 500."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse

from workflows.api.errors import database_error, json_error
from workflows.ratelimit import RateLimited, check_login, client_address

logger = logging.getLogger(__name__)

LOGIN_PATHS = {"/login/", "/admin/login/"}


class LoginRateLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method == "POST" and request.path in LOGIN_PATHS:
            try:
                check_login(address=client_address(request.META), username=request.POST.get("username", ""))
            except RateLimited as exc:
                return json_error(exc)
        return self.get_response(request)


class DatabaseErrorMiddleware:
    """The pages' side of ``workflows.api.errors.database_error`` (DRF's handler is the API's)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, OperationalError | InterfaceError):
            return None
        logger.warning("web.database_error", extra={"path": request.path}, exc_info=exception)
        return json_error(database_error(exception))
