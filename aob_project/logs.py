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


def formatter(json_output: bool = True) -> dict[str, Any]:
    shared = [structlog.contextvars.merge_contextvars, structlog.stdlib.add_log_level,
              structlog.stdlib.add_logger_name, structlog.processors.TimeStamper(fmt="iso", utc=True), _extras]
    renderer = structlog.processors.JSONRenderer(default=str) if json_output else structlog.dev.ConsoleRenderer(
        colors=False)
    return {"()": structlog.stdlib.ProcessorFormatter, "foreign_pre_chain": shared,
            "processors": [structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                           structlog.processors.format_exc_info, renderer]}


def configure_structlog() -> None:
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, structlog.stdlib.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True),
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
