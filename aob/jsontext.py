"""JSON's own numbers, whoever parses: Python's parser also takes ``NaN``, ``Infinity`` and
``1e999`` (Infinity by another name), which no JSON document, ``jsonb`` value or HTTP body can
carry. The rule for a model's tool arguments (``agents.loop``) and the CLI's files and options
(``aob.cli.session``); the API's bodies are parsed as Python does and refused, naming the path, by
the rule of every stored value (``workflows.limits.unstorable``, rule ``invalid_number``)."""

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


def loads(text: str, **options: Any) -> Any:
    """``json.loads`` refusing what is not JSON's (``NotJSONNumber``, a ``ValueError``)."""
    return json.loads(text, parse_constant=no_constant, parse_float=finite, **options)
