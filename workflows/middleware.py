"""Login attempts on the Django pages (``/login/``, ``/admin/login/``) are limited per client
address and per username, like the API's token endpoint (``workflows/api/throttles.py``). The
global write limit is a DRF throttle: it counts requests after authentication."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse

from workflows.api.errors import body
from workflows.ratelimit import RateLimited, check_login, client_address

LOGIN_PATHS = {"/login/", "/admin/login/"}


class LoginRateLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method == "POST" and request.path in LOGIN_PATHS:
            try:
                check_login(address=client_address(request.META), username=request.POST.get("username", ""))
            except RateLimited as exc:
                response = JsonResponse(body(exc.code, exc.message, exc.extra), status=429)
                response["Retry-After"] = str(exc.extra["retry_after_seconds"])
                return response
        return self.get_response(request)
