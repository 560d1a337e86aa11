"""Login attempts on the Django pages (``/login/``, ``/admin/login/``) are limited per client
address and per username, like the API's token endpoint (``workflows/api/throttles.py``). The
global write limit is a DRF throttle: it counts requests after authentication.

A database error a page (the web UI, the admin, an approval link) cannot get past is the API's
503 naming its rule, not a 500. A NUL character in a page's URL is refused before it reaches the
database, as the API refuses it."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse

from aob_project.exceptions import NotFound
from workflows.api.errors import database_error, json_error
from workflows.api.filters import refuse
from workflows.api.params import query_problem
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


class NulRefusedMiddleware:
    """A NUL character in the URL of a page or the admin: in the path it names nothing (404), in a
    query parameter's name or value it is a 400 naming the parameter (rule ``nul``), as the API's
    answers are. PostgreSQL refuses NUL in text, and the pages' lookups (a workflow by its tag)
    and every admin page (a changelist filtered by any column, a row by a text key) handed it on:
    a 500. The API's views answer it themselves, a filter naming its field, so its paths pass."""

    API = "/api/"

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path.startswith(self.API):
            if "\x00" in request.path:
                return json_error(NotFound(f"no such page: {request.path.replace(chr(0), '%00')}"))
            for name, values in request.GET.lists():
                if "\x00" in name or any("\x00" in value for value in values):
                    return json_error(refuse(name.replace("\x00", "%00"), "must not contain NUL", "nul"))
        return self.get_response(request)


class QueryParametersMiddleware:
    """An API request's query parameters, judged as a whole before any view reads one
    (``params.query_problem``): one given twice, or one its endpoint does not declare, is a 400
    naming it (rule ``repeated``, ``unknown_parameter``), as an unknown field of a body is."""

    API = "/api/"

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.GET and request.path.startswith(self.API):
            problem = query_problem(request.method or "GET", request.path, request.GET)
            if problem is not None:
                return json_error(problem)
        return self.get_response(request)
