"""Resolving ``$nodes.<id>.<path>``, ``$inputs.<path>`` and ``${…}`` templates in node config."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from django.conf import settings

from aob_project.decimal_text import bounded_decimal
from aob_project.exceptions import AobError
from workflows.models import stored_size

TEMPLATE = re.compile(r"\$\{\s*\$?((?:nodes|inputs)(?:\.[A-Za-z0-9_\-]+)+)\s*\}")
WHOLE = re.compile(r"^\$((?:nodes|inputs)(?:\.[A-Za-z0-9_\-]+)+)$")
NODE_REF = re.compile(r"\$\{?\s*\$?nodes\.([A-Za-z0-9_\-]+)")
CEL_NODE_REF = re.compile(r"""\bnodes(?:\.([A-Za-z0-9_]+)|\[\s*["']([A-Za-z0-9_\-]+)["']\s*\])""")

_MISSING = object()


def _walk(root: Any, parts: Iterable[str]) -> Any:
    value = root
    for part in parts:
        if isinstance(value, dict):
            value = value.get(part, _MISSING)
        elif isinstance(value, list) and (index := list_index(part, len(value))) is not None:
            value = value[index]
        else:
            value = _MISSING
        if value is _MISSING:
            return None
    return value


def list_index(part: str, length: int) -> int | None:
    """``part`` as an index into a list of ``length`` items (``-1`` the last), or None when it is no
    index or past the end. A huge index is only past the end: its digits are never converted."""
    magnitude = bounded_decimal(part[1:] if part.startswith("-") else part, 18)  # more than any list has
    if magnitude is None:
        return None
    index = -magnitude if part.startswith("-") else magnitude
    return index if -length <= index < length else None


def lookup(path: str, *, inputs: dict, outputs: dict[str, Any]) -> Any:
    head, *rest = path.split(".")
    if head == "inputs":
        return _walk(inputs, rest)
    if not rest:
        return outputs
    node_id, *tail = rest
    return _walk(outputs.get(node_id), tail)


def _to_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class ConfigTooLarge(AobError):
    code = "ConfigTooLarge"


class _Budget:
    """Bytes a resolved config may still take. References repeated in a config would copy a large
    input once per use (into the node's input, its request, its stored record), so each use is
    counted, and resolution stops at the first one past the cap rather than after building it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.resolved = 0  # references taken: none, and the value is the one its save judged
        self._sizes: dict[str, int] = {}

    def spend(self, size: int, what: str) -> None:
        self.used += size
        if self.used > self.limit:
            raise ConfigTooLarge(
                f"the resolved config passed {self.limit} bytes (AOB_MAX_RESOLVED_CONFIG_BYTES) at {what}: "
                "reference less data, or fewer times", extra={"limit": self.limit, "transient": False})

    def size_of(self, path: str, value: Any) -> int:
        """The referenced value's bytes as stored (its JSON in UTF-8: a control character is six
        bytes, ``é`` two, and counted as one character a config of `\u0001`s took six times the
        cap), measured once per path."""
        if path not in self._sizes:
            self._sizes[path] = (stored_text_bytes(value) + 2 if isinstance(value, str) else
                                 stored_size(value))
        return self._sizes[path]


def stored_text_bytes(text: str) -> int:
    """The bytes ``text`` takes inside a stored JSON string (UTF-8, escapes included), without its
    quotes. Printable ASCII with no quote or backslash, most text, is its length, read in one scan."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return len(text)
    return len(json.dumps(text, ensure_ascii=False).encode()) - 2


def resolve(value: Any, *, inputs: dict, outputs: dict[str, Any], max_bytes: int | None = None) -> Any:
    """A string that is exactly a reference takes the referenced value with its type; a
    ``${…}`` inside a longer string interpolates its text. The result is at most ``max_bytes``
    (``AOB_MAX_RESOLVED_CONFIG_BYTES``, or less when asked) as JSON text, or ``ConfigTooLarge``."""
    return resolve_counted(value, inputs=inputs, outputs=outputs, max_bytes=max_bytes)[0]


def resolve_counted(value: Any, *, inputs: dict, outputs: dict[str, Any], max_bytes: int | None = None) -> tuple[Any, int]:
    """``resolve``, and how many references it took (none: the value is what its save judged)."""
    ceiling = settings.AOB_MAX_RESOLVED_CONFIG_BYTES
    budget = _Budget(min(ceiling, max_bytes or ceiling))
    return _resolve(value, inputs, outputs, budget), budget.resolved


def _resolve(value: Any, inputs: dict, outputs: dict[str, Any], budget: _Budget) -> Any:
    if isinstance(value, str):
        whole = WHOLE.match(value)
        if whole:
            budget.resolved += 1
            found = lookup(whole.group(1), inputs=inputs, outputs=outputs)
            budget.spend(budget.size_of(whole.group(1), found), value)
            return found
        if "${" in value:
            def text(m: re.Match[str]) -> str:
                piece = _to_text(lookup(m.group(1), inputs=inputs, outputs=outputs))
                budget.spend(stored_text_bytes(piece), m.group(0))
                return piece

            budget.resolved += 1
            budget.spend(stored_text_bytes(value), "a template")
            return TEMPLATE.sub(text, value)
        budget.spend(len(value), "a string")
        return value
    if isinstance(value, dict):
        return {k: _resolve(v, inputs, outputs, budget) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, inputs, outputs, budget) for v in value]
    return value


def referenced_nodes(value: Any) -> set[str]:
    """Node ids a config refers to, so an executor loads only the outputs it needs."""
    found: set[str] = set()
    if isinstance(value, str):
        found.update(NODE_REF.findall(value))
        for a, b in CEL_NODE_REF.findall(value):
            found.add(a or b)
    elif isinstance(value, dict):
        for v in value.values():
            found |= referenced_nodes(v)
    elif isinstance(value, list):
        for v in value:
            found |= referenced_nodes(v)
    return found
