"""Resolving ``$nodes.<id>.<path>``, ``$inputs.<path>`` and ``${…}`` templates in node config."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

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
        elif isinstance(value, list) and (part.isdigit() or (part.startswith("-") and part[1:].isdigit())):
            index = int(part)
            value = value[index] if -len(value) <= index < len(value) else _MISSING
        else:
            value = _MISSING
        if value is _MISSING:
            return None
    return value


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


def resolve(value: Any, *, inputs: dict, outputs: dict[str, Any]) -> Any:
    """A string that is exactly a reference takes the referenced value with its type; a
    ``${…}`` inside a longer string interpolates its text."""
    if isinstance(value, str):
        whole = WHOLE.match(value)
        if whole:
            return lookup(whole.group(1), inputs=inputs, outputs=outputs)
        if "${" in value:
            return TEMPLATE.sub(lambda m: _to_text(lookup(m.group(1), inputs=inputs, outputs=outputs)), value)
        return value
    if isinstance(value, dict):
        return {k: resolve(v, inputs=inputs, outputs=outputs) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, inputs=inputs, outputs=outputs) for v in value]
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
