"""JSON logs through structlog: one object per line with the bound context (request_id, run_id,
node_id, node_run_id) and any ``extra=`` fields of a stdlib logging call."""

from __future__ import annotations

import logging
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


def formatter(json_output: bool = True) -> dict[str, Any]:
    shared = [structlog.contextvars.merge_contextvars, structlog.stdlib.add_log_level,
              structlog.stdlib.add_logger_name, structlog.processors.TimeStamper(fmt="iso", utc=True), _extras]
    if json_output:
        rendering = [structlog.processors.JSONRenderer(default=str)]
    else:
        rendering = [_one_line, structlog.dev.ConsoleRenderer(colors=False)]
    return {"()": structlog.stdlib.ProcessorFormatter, "foreign_pre_chain": shared,
            "processors": [structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                           structlog.processors.format_exc_info, *rendering]}


def configure_structlog() -> None:
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, structlog.stdlib.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True),
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
