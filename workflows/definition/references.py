"""Resolving ``$nodes.<id>.<path>``, ``$inputs.<path>`` and ``${…}`` templates in node config."""

from __future__ import annotations

import difflib
import itertools
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
    """The value at ``parts`` below ``root``, or a ``_Gap`` naming the first part it does not have."""
    value = root
    for depth, part in enumerate(parts):
        if isinstance(value, dict):
            found = value.get(part, _MISSING)
        elif isinstance(value, list) and (index := list_index(part, len(value))) is not None:
            found = value[index]
        else:
            found = _MISSING
        if found is _MISSING:
            return _Gap(depth, part, value)
        value = found
    return value


class _Gap:
    """Where a path left the value it walked: the ``depth``-th part, ``part``, which ``value`` lacks."""

    def __init__(self, depth: int, part: str, value: Any) -> None:
        self.depth, self.part, self.value = depth, part, value

    def says(self, head: list[str]) -> str:
        within = ".".join(head) or "it"
        if isinstance(self.value, dict):
            keys = [k for k in itertools.islice(self.value, _CLOSE_KEYS) if len(k) <= _CLOSE_LENGTH]
            close = difflib.get_close_matches(self.part, keys, n=1) if len(self.part) <= _CLOSE_LENGTH else []
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            return f"{within} has no key {self.part[:80]!r}{hint}"
        if isinstance(self.value, list):
            return f"{within} is a list of {len(self.value)} with no item {self.part[:40]!r}"
        kind = "null" if self.value is None else type(self.value).__name__
        return f"{within} is {kind}, with no {self.part[:40]!r}"


# keys compared for a "did you mean", and their length: a large object, or long keys, are not searched
_CLOSE_KEYS, _CLOSE_LENGTH = 200, 64


class ReferenceMissing(AobError):
    """A reference naming what its value does not have: an input not given, a key or item the
    output of a node that ran lacks. It resolved to null (``""`` in a template) and went out so."""

    code = "ReferenceMissing"


def list_index(part: str, length: int) -> int | None:
    """``part`` as an index into a list of ``length`` items (``-1`` the last), or None when it is no
    index or past the end. A huge index is only past the end: its digits are never converted."""
    magnitude = bounded_decimal(part[1:] if part.startswith("-") else part, 18)  # more than any list has
    if magnitude is None:
        return None
    index = -magnitude if part.startswith("-") else magnitude
    return index if -length <= index < length else None


def lookup(path: str, *, inputs: dict, outputs: dict[str, Any]) -> Any:
    """The value ``path`` (``inputs.…`` or ``nodes.<id>.…``) names, or a ``_Gap`` where it names
    nothing. A node that has no output here (it did not run: skipped on a dead path, not reached
    yet; or it gave null) is null, and so is all below it."""
    head, *rest = path.split(".")
    if head == "inputs":
        found = _walk(inputs, rest)
        if isinstance(found, _Gap):
            found.depth += 1
        return found
    if not rest:
        return outputs
    node_id, *tail = rest
    output = outputs.get(node_id)
    if output is None:
        return None
    found = _walk(output, tail)
    if isinstance(found, _Gap):
        found.depth += 2
    return found


def _found(path: str, reference: str, inputs: dict, outputs: dict[str, Any], strict: bool) -> Any:
    found = lookup(path, inputs=inputs, outputs=outputs)
    if not isinstance(found, _Gap):
        return found
    if not strict:
        return None
    parts = path.split(".")
    raise ReferenceMissing(
        f"{reference[:200]} names nothing: {found.says(parts[:found.depth])}; it would have been null (\"\" in "
        "text). Correct the reference, or test for the value in a transform (has())",
        extra={"path": "/", "reference": reference[:200], "rule": "reference_missing",
               "transient": False, "sent": False})


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


def resolve(value: Any, *, inputs: dict, outputs: dict[str, Any], max_bytes: int | None = None,
            strict: bool = True) -> Any:
    """A string that is exactly a reference takes the referenced value with its type; a
    ``${…}`` inside a longer string interpolates its text. The result is at most ``max_bytes``
    (``AOB_MAX_RESOLVED_CONFIG_BYTES``, or less when asked) as JSON text, or ``ConfigTooLarge``.
    A reference naming nothing (an input not given, a key the output of a node that ran lacks) is
    ``ReferenceMissing`` naming it and where it is; ``strict=False`` (a hook's mapping of a body
    whose fields are optional) makes it null, ``""`` in text. A node that did not run is null."""
    return resolve_counted(value, inputs=inputs, outputs=outputs, max_bytes=max_bytes, strict=strict)[0]


def resolve_counted(value: Any, *, inputs: dict, outputs: dict[str, Any], max_bytes: int | None = None,
                    strict: bool = True) -> tuple[Any, int]:
    """``resolve``, and how many references it took (none: the value is what its save judged)."""
    ceiling = settings.AOB_MAX_RESOLVED_CONFIG_BYTES
    budget = _Budget(min(ceiling, max_bytes or ceiling))
    try:
        return _resolve(value, inputs, outputs, budget, strict), budget.resolved
    except ReferenceMissing as exc:
        exc.extra["path"] = exc.extra["path"] or "/"
        exc.message = f"{exc.extra['path']}: {exc.message}"
        exc.args = (exc.message,)
        raise


def _resolve(value: Any, inputs: dict, outputs: dict[str, Any], budget: _Budget, strict: bool) -> Any:
    if isinstance(value, str):
        whole = WHOLE.match(value)
        if whole:
            budget.resolved += 1
            found = _found(whole.group(1), value, inputs, outputs, strict)
            budget.spend(budget.size_of(whole.group(1), found), value)
            return found
        if "${" in value:
            def text(m: re.Match[str]) -> str:
                piece = _to_text(_found(m.group(1), m.group(0), inputs, outputs, strict))
                budget.spend(stored_text_bytes(piece), m.group(0))
                return piece

            budget.resolved += 1
            budget.spend(stored_text_bytes(value), "a template")
            return TEMPLATE.sub(text, value)
        budget.spend(len(value), "a string")
        return value
    if isinstance(value, dict | list):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        done: list[tuple[Any, Any]] = []
        for key, item in items:
            try:
                done.append((key, _resolve(item, inputs, outputs, budget, strict)))
            except ReferenceMissing as exc:  # where it is, put together on the way out: nothing spent otherwise
                exc.extra["path"] = "/" + str(key).replace("~", "~0").replace("/", "~1") + exc.extra["path"].rstrip("/")
                raise
        return dict(done) if isinstance(value, dict) else [item for _, item in done]
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
