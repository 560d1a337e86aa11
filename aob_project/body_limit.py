"""Refuse request bodies over ``AOB_MAX_BODY_BYTES`` before they are read.

Django's ASGI handler reads a whole body (spooling it to disk) before any view or middleware can
look at it, so the limit has to act in front of Django: a declared ``Content-Length`` over the
limit is answered 413 at once, from the headers alone; a body without one (chunked) is counted as
it streams in and cut off at the limit, the application seeing a disconnect.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings

from aob_project.decimal_text import bounded_decimal

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return bounded_decimal(value, 18)  # None: malformed, which the server refuses
    return None


async def send_error(send: Send, status: int, code: str, message: str, details: dict[str, Any]) -> None:
    """An error in the API's JSON shape, sent before Django saw the request, closing the connection
    (whatever of the body is left unread is not waited for)."""
    body = json.dumps({"error": code, "message": message, "details": details}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


async def _refuse(send: Send, *, limit: int, size: int, declared: bool) -> None:
    what = f"declares {size} bytes" if declared else f"is more than {limit} bytes"
    await send_error(send, 413, "body_too_large", f"request body {what}; the limit is {limit} bytes",
                     {"rule": "body_too_large", "limit": limit, "size": size})


class BodySizeLimit:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = settings.AOB_MAX_BODY_BYTES
        declared = _declared_length(scope)
        if declared is not None:
            if declared > limit:
                await _refuse(send, limit=limit, size=declared, declared=True)
            else:  # the server holds the body to its declared length
                await self.app(scope, receive, send)
            return
        await self._counted(scope, receive, send, limit)

    async def _counted(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        received = 0
        over = started = False

        async def counting_receive() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if over:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counting_receive, guarded_send)
        if over and not started:
            await _refuse(send, limit=limit, size=received, declared=False)
