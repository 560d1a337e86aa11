"""A logging filter that masks the secrets an executor is using (``SecretBox.active``) in every
record logged meanwhile: its message, arguments, extra fields and exception text."""

from __future__ import annotations

import logging
import traceback

from .references import active_box

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class MaskSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        box = active_box()
        if box is None or not box.used:
            return True
        if isinstance(record.msg, dict):  # a structlog event dict
            record.msg = box.mask(record.msg)
        else:
            record.msg = box.mask(record.getMessage())
            record.args = None
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD:
                record.__dict__[key] = box.mask(value)
        if record.exc_info and record.exc_info[1] is not None:
            # the traceback, rendered and masked here (an exception's text may carry a URL or a header)
            trace = box.mask("".join(traceback.format_exception(*record.exc_info)))
            record.exc_info, record.exc_text = None, None
            if isinstance(record.msg, str):
                record.msg = f"{record.msg}\n{trace}"
        return True
