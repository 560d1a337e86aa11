"""JSON's own numbers, whoever parses: Python's parser also takes ``NaN``, ``Infinity`` and
``1e999`` (Infinity by another name), which no JSON document, ``jsonb`` value or HTTP body can
carry. The rule for a model's tool arguments (``agents.loop``) and the CLI's files and options
(``aob.cli.session``); the API's bodies are parsed as Python does and refused, naming the path, by
the rule of every stored value (``workflows.limits.unstorable``, rule ``invalid_number``).

And one key once an object, whoever parses (``loads_unique``: the API's bodies, the hooks' and the
admin's forms through ``workflows.api.parsers.loads_strict``, and the two above): Python keeps the
last of a key given twice, so what a client wrote first (``{"inputs": {...}, "inputs": {}}``) was
lost without a word. RFC 8259 leaves such an object's meaning to the parser; I-JSON forbids it."""

from __future__ import annotations

import json
import math
from typing import Any


class NotJSONNumber(ValueError):
    """A number JSON cannot hold (its rule: ``invalid_number``)."""


def finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NotJSONNumber(f"number {text[:30]} is outside the range of a double")
    return value


def no_constant(name: str) -> Any:
    raise NotJSONNumber(f"{name} is not valid JSON")


class DuplicateKey(ValueError):
    """A key given twice in one object (its rule: ``duplicate_key``); ``path`` is the JSON Pointer
    of the key, in the outermost object that repeats one."""
    rule = "duplicate_key"

    def __init__(self, key: str, path: str) -> None:
        super().__init__(f"key {key[:60]!r} is given more than once in an object (at {path})")
        self.key, self.path = key, path


def loads_unique(text: str | bytes, **options: Any) -> Any:
    """``json.loads`` refusing a key given twice in one object (``DuplicateKey``). Each object is
    checked as it is parsed (one ``dict`` and a length compare); the path is looked for only when
    one was found."""
    repeated: list[tuple[dict[str, Any], str]] = []  # held, so no id is reused while parsing

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        made = dict(pairs)
        if len(made) != len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    repeated.append((made, key))
                    break
                seen.add(key)
        return made

    value = json.loads(text, object_pairs_hook=unique, **options)
    if repeated:
        _refuse_repeated(value, {id(made): key for made, key in repeated})
    return value


def _refuse_repeated(value: Any, repeated: dict[int, str]) -> None:
    """Raise ``DuplicateKey`` for the first object that repeats a key met from the top, in document
    order (one inside a value a repeated key lost is not in ``value``; its holder is). Iterative, and
    a path is built only for the one found."""
    stack: list[tuple[Any, Any]] = [(value, None)]  # (value, where): where is (parent's where, key) or None
    while stack:
        item, where = stack.pop()
        if isinstance(item, dict):
            if id(item) in repeated:
                key = repeated[id(item)]
                raise DuplicateKey(key, _pointer((where, key)))
            children: Any = reversed(item.items())
        elif isinstance(item, list):
            children = ((i, item[i]) for i in range(len(item) - 1, -1, -1))
        else:
            continue
        stack.extend((child, (where, key)) for key, child in children if isinstance(child, dict | list))


def _pointer(where: Any) -> str:
    """The JSON Pointer of ``where``; a NUL or a lone surrogate in a key is written as its escape,
    so the answer that names it can be sent and kept (an agent's tool result is journaled)."""
    keys = []
    while where is not None:
        where, key = where
        key = str(key).encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\u0000")
        keys.append(key.replace("~", "~0").replace("/", "~1"))
    return "".join(f"/{key}" for key in reversed(keys))[:200]


def loads(text: str, **options: Any) -> Any:
    """``json.loads`` refusing what is not JSON's (``NotJSONNumber``, a ``ValueError``) and a key
    given twice (``DuplicateKey``, a ``ValueError``)."""
    return loads_unique(text, parse_constant=no_constant, parse_float=finite, **options)
