"""A value past its byte bound is refused one way wherever it is written (a run's inputs, a
schedule's inputs, a hook's mapping, an approver's form data): measured as the artifacts are
(``canonical_json`` in UTF-8), and refused naming the field, the rule, the limit and the size.
What is stored whatever its size, an error, is cut to its bound where it is made (``bounded_error``,
``clipped``)."""

from __future__ import annotations

import json
from typing import Any

from aob_project.exceptions import AobError, ValidationFailed
from workflows.models import canonical_json, size_of


def refuse_past(value: Any, limit: int, *, field: str, error: type[AobError] = ValidationFailed,
                setting: str = "", code: str | None = None) -> int:
    """Raise ``error`` (400) when ``value`` is larger than ``limit`` bytes; ``setting`` names the
    operator's variable that sets the limit, when there is one. Returns the size."""
    size = size_of(canonical_json(value))
    if size > limit:
        raise error(f"{field} is {size} bytes; at most {limit}" + (f" ({setting})" if setting else ""), code=code,
                    extra={"field": field, "rule": "max_bytes", "limit": limit, "size": size})
    return size


# An error is stored in its node run, its event, the run's error (in every run a list answers) and
# a parent's error: at most this many bytes. An exception's text can carry a value the node read
# (CEL names a missing key, up to 16 MiB of inputs) and an agent's error the model's tool calls.
ERROR_MAX_BYTES = 8 * 1024
_MESSAGE_BYTES = 2000
_FIELD_BYTES = 1024


def _size(value: Any) -> int:
    """Bytes as the database stores the value (UTF-8 JSON)."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str).encode())


def clipped(text: str, max_bytes: int = _MESSAGE_BYTES) -> str:
    """``text`` when it is at most ``max_bytes`` in UTF-8, else its start within that and its length."""
    encoded = text.encode()
    if len(encoded) <= max_bytes:
        return text
    return f"{encoded[:max_bytes].decode(errors='ignore')}… ({len(text)} characters in all)"


def bounded_error(error: dict[str, Any]) -> dict[str, Any]:
    """``error`` when it fits ``ERROR_MAX_BYTES``; else its type, the start of its message (with
    the whole message's length) and, smallest first while the whole fits, its other fields, each
    past ``_FIELD_BYTES`` as ``{"truncated": true, "bytes"}``; ``truncated: true``, and how many
    fields were left out. Sizes are the stored JSON's (escapes included): a message is cut shorter
    until the type and it take at most half the bound."""
    if _size(error) <= ERROR_MAX_BYTES:
        return error
    kind, message = str(error.get("error_type", "")), str(error.get("message", ""))
    cut = _MESSAGE_BYTES
    out = {"error_type": clipped(kind, 200), "message": clipped(message, cut), "truncated": True}
    while _size(out) > ERROR_MAX_BYTES // 2:  # escapes (a control character is six bytes) made it larger
        cut //= 2
        out = {"error_type": clipped(kind, min(200, cut)), "message": clipped(message, cut), "truncated": True}
    others = [(clipped(str(key), 100), value) for key, value in error.items()
              if key not in ("error_type", "message", "truncated")]
    shown = [(key, value if size <= _FIELD_BYTES else {"truncated": True, "bytes": size})
             for key, value, size in ((k, v, _size(v)) for k, v in others)]
    left_out = 0
    for key, value in sorted(shown, key=lambda kv: _size(kv[1])):
        if key not in out and _size({**out, key: value, "fields_left_out": len(shown)}) <= ERROR_MAX_BYTES:
            out[key] = value
        else:  # past the bound, or a key that is another's once cut
            left_out += 1
    if left_out:
        out["fields_left_out"] = left_out
    return out
