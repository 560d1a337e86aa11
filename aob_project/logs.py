"""JSON logs through structlog: one object per line with the bound context (request_id, run_id,
node_id, node_run_id) and any ``extra=`` fields of a stdlib logging call."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import structlog

RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def _extras(logger: Any, name: str, event: dict[str, Any]) -> dict[str, Any]:
    record = event.get("_record")
    if record is not None:
        for key, value in record.__dict__.items():
            if key not in RESERVED and not key.startswith("_") and key not in event:
                event[key] = value
    return event


# C0 and C1 control characters and DEL, as the console shows them escaped: a line break or a
# terminal escape in a logged value (a request's path, a node's error) is one line, as written
# (the JSON renderer escapes them itself; the console renderer repr()s values but not the message).
CONTROLS = {c: ascii(chr(c))[1:-1] for c in (*range(0x20), *range(0x7F, 0xA0))}


def _one_line(logger: Any, name: str, event: dict[str, Any]) -> dict[str, Any]:
    message = event.get("event")
    if isinstance(message, str):
        event["event"] = message.translate(CONTROLS)
    return event


# The longest a logged value is written (the message and the exception's text included): a value can
# hold what anyone sent (a visitor's path, which Django's "Not Found" and uvicorn's access line
# carry; a remote's answer in an error; a tenant's data in an exception), and a line was as long.
MAX_VALUE_CHARS = 4096
MAX_EXCEPTION_CHARS = 16384  # a traceback's frames, its last lines the error's own
_KEPT_AS_IS = (bool, int, float, type(None))


def clip(text: str, limit: int) -> str:
    """``text`` when it is at most ``limit`` characters, else its start and its end (where a path
    or a traceback says most) with the count of the characters left out between them."""
    if len(text) <= limit:
        return text
    tail = limit // 4
    head = limit - tail
    return f"{text[:head]}…[{len(text) - head - tail} characters left out]…{text[-tail:]}"


def _clipped(logger: Any, name: str, event: dict[str, Any]) -> dict[str, Any]:
    for key, value in event.items():
        if isinstance(value, _KEPT_AS_IS):
            continue
        if not isinstance(value, str):  # rendered as the JSON renderer would, then measured
            try:
                text = json.dumps(value, default=str)
            except (TypeError, ValueError):
                text = str(value)
            if len(text) <= MAX_VALUE_CHARS:
                continue
            value = text
        event[key] = clip(value, MAX_EXCEPTION_CHARS if key == "exception" else MAX_VALUE_CHARS)
    return event


# An approval link's token (approvals/urls.py ``approvals/<id>/open/<token>``), in a path, in the
# login page's ``next`` a logged-out approver is sent to with it, or in a request Django's warning
# names ("Forbidden: /approvals/5/open/…" for another user's link): a log reader holds no link.
LINK_TOKEN = re.compile(r"(/approvals/\d+/open/|%2Fapprovals%2F\d+%2Fopen%2F)[^/?&#\s%'\"<>]+", re.IGNORECASE)


def without_link_tokens(text: str) -> str:
    return LINK_TOKEN.sub(r"\1[token]", text)


def _no_link_tokens(logger: Any, name: str, event: dict[str, Any]) -> dict[str, Any]:
    for key, value in event.items():
        if isinstance(value, _KEPT_AS_IS) or isinstance(value, dict | list | tuple):
            continue
        text = value if isinstance(value, str) else str(value)  # a request: "<ASGIRequest: GET '/…'>"
        if "open" in text and LINK_TOKEN.search(text):
            event[key] = without_link_tokens(text)
    return event


def formatter(json_output: bool = True) -> dict[str, Any]:
    shared = [structlog.contextvars.merge_contextvars, structlog.stdlib.add_log_level,
              structlog.stdlib.add_logger_name, structlog.processors.TimeStamper(fmt="iso", utc=True), _extras]
    if json_output:
        rendering = [structlog.processors.JSONRenderer(default=str)]
    else:
        rendering = [_one_line, structlog.dev.ConsoleRenderer(colors=False)]
    return {"()": structlog.stdlib.ProcessorFormatter, "foreign_pre_chain": shared,
            "processors": [structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                           structlog.processors.format_exc_info, _no_link_tokens, _clipped, *rendering]}


def configure_structlog() -> None:
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, structlog.stdlib.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True),
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def adopt_access_log(*, json_output: bool) -> None:
    """uvicorn's access lines (the request's whole path) in this format, clipped as every other
    line: uvicorn's own formatter wrote them as plain text, as long as the path. Its handlers stay
    (none when it was told ``--no-access-log``)."""
    options = formatter(json_output)
    factory = options.pop("()")
    for handler in logging.getLogger("uvicorn.access").handlers:
        handler.setFormatter(factory(**options))
