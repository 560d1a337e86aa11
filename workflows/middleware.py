"""The global rate limit on state-changing API requests (reads, health and internal calls are free)."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse

from workflows.api.errors import body
from workflows.ratelimit import RateLimited, check_global

WRITES = {"POST", "PUT", "PATCH", "DELETE"}
FREE = {"/api/v1/workflows/validate"}  # a POST that changes nothing (the editor validates as you type)


class GlobalRateLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method in WRITES and request.path.startswith("/api/") and request.path not in FREE:
            try:
                check_global()
            except RateLimited as exc:
                response = JsonResponse(body(exc.code, exc.message, exc.extra), status=429)
                response["Retry-After"] = str(exc.extra["retry_after_seconds"])
                return response
        return self.get_response(request)
