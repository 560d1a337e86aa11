"""The request id and log context, carried from the API request through Celery task headers to
the executors and the coordinator, and into events.

The web process binds it per request (``RequestIdMiddleware``); ``before_task_publish`` copies it
into every task's headers; ``task_prerun`` binds it again in the worker, where claim() adds the
run and node ids. Everything is structlog contextvars, so every log line carries it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import structlog
from celery.signals import before_task_publish, task_postrun, task_prerun
from django.http import HttpRequest, HttpResponse

HEADER = "aob_request_id"
VALID = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}\Z")


def bind(**values: Any) -> None:
    structlog.contextvars.bind_contextvars(**{k: v for k, v in values.items() if v not in (None, "")})


def current_request_id() -> str:
    return str(structlog.contextvars.get_contextvars().get("request_id") or "")


def current_owner_id() -> str:
    """The owner of the node this process runs now (``execution.claim`` binds it), "" elsewhere."""
    return str(structlog.contextvars.get_contextvars().get("owner_id") or "")


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        given = request.headers.get("X-Request-ID", "")
        request_id = given if VALID.match(given) else uuid.uuid4().hex
        request.request_id = request_id  # type: ignore[attr-defined]
        structlog.contextvars.clear_contextvars()
        bind(request_id=request_id)
        try:
            response = self.get_response(request)
        finally:
            structlog.contextvars.clear_contextvars()
        response["X-Request-ID"] = request_id
        return response


@before_task_publish.connect
def _carry_request_id(headers: dict[str, Any] | None = None, **_: Any) -> None:
    request_id = current_request_id()
    if headers is not None and request_id and HEADER not in headers:
        headers[HEADER] = request_id


@task_prerun.connect
def _bind_task(task: Any = None, task_id: str | None = None, **_: Any) -> None:
    structlog.contextvars.clear_contextvars()
    request_id = getattr(task.request, HEADER, None) if task is not None else None
    if request_id is None and task is not None:
        request_id = (task.request.headers or {}).get(HEADER) if isinstance(task.request.headers, dict) else None
    bind(request_id=request_id, task_id=task_id, task=getattr(task, "name", None))


@task_postrun.connect
def _unbind_task(**_: Any) -> None:
    structlog.contextvars.clear_contextvars()
