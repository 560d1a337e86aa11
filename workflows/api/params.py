"""Query parameters, read strictly: a value the endpoint does not know is a 400 naming the
parameter and what it accepts, never silently read as the default. Integers out of range are
refused below their minimum (as the schema says) and clamped above their maximum (a page past the
end is an empty page)."""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Sequence
from typing import Any

from drf_spectacular.utils import OpenApiParameter

from aob_project.exceptions import ValidationFailed

logger = logging.getLogger(__name__)

BOOLEANS = {"true": True, "false": False}  # exactly what the schema says


def _raw(request: Any, name: str) -> str | None:
    """The parameter's text; absent is None. Present but empty is a value like any other (and
    refused where the schema says boolean, integer or one of a list)."""
    return request.query_params.get(name)


def int_parameter(name: str, low: int, description: str = "") -> OpenApiParameter:
    """The OpenAPI side of ``query_int``: an integer with its minimum (above the maximum it clamps)."""
    return OpenApiParameter(name, {"type": "integer", "minimum": low}, description=description)


def query_choice(request: Any, name: str, allowed: Sequence[str], default: str | None = None) -> str | None:
    value = _raw(request, name)
    if value is None:
        return default
    if value not in allowed:
        raise ValidationFailed(f"{name}: unknown value {value[:100]!r}; one of {', '.join(allowed)}",
                               extra={"field": name, "rule": "enum", "allowed": list(allowed)})
    return value


def query_bool(request: Any, name: str) -> bool:
    value = _raw(request, name)
    if value is None:
        return False
    if value.lower() not in BOOLEANS:
        raise ValidationFailed(f"{name}: {value[:100]!r} is not a boolean; one of {', '.join(BOOLEANS)}",
                               extra={"field": name, "rule": "boolean", "allowed": list(BOOLEANS)})
    return BOOLEANS[value.lower()]


def query_int(request: Any, name: str, default: int, low: int, high: int) -> int:
    value = _raw(request, name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ValidationFailed(f"{name}: must be an integer, not {value[:100]!r}",
                               extra={"field": name, "rule": "integer", "minimum": low, "maximum": high}) from None
    if number < low:  # what the schema forbids is refused
        raise ValidationFailed(f"{name}: must be at least {low}", extra={"field": name, "rule": "minimum",
                                                                       "minimum": low})
    return min(high, number)  # past the end is an empty page


def query_text(request: Any, name: str, max_length: int = 200) -> str | None:
    """A text value (a username, a tag): absent or empty is None (any), as the lists' filters read
    it; NUL (which PostgreSQL refuses in text) and past ``max_length`` are refused."""
    value = _raw(request, name)
    if not value:
        return None
    if "\x00" in value:
        raise ValidationFailed(f"{name}: must not contain NUL", extra={"field": name, "rule": "nul"})
    if len(value) > max_length:
        raise ValidationFailed(f"{name}: at most {max_length} characters", extra={"field": name, "rule": "max_length",
                                                                                 "limit": max_length})
    return value


_DECLARED_LOCK = threading.Lock()


@functools.cache
def _declared() -> list[tuple[re.Pattern[str], str, frozenset[str]]]:
    """Each API operation's path, method and the query parameters the OpenAPI document declares for
    it (drf-spectacular's own schema, built once a process: about half a second): the one list of
    what each endpoint reads."""
    from drf_spectacular.generators import SchemaGenerator

    with _DECLARED_LOCK:
        try:
            schema = SchemaGenerator().get_schema(request=None, public=True)
        except Exception:  # a schema that does not build judges nothing: repeats only
            logger.exception("api.query_parameters_unknown")
            return []
    found = []
    for path, operations in schema.get("paths", {}).items():
        parts = re.split(r"\{[^}/]+\}", path)  # {id}: one segment
        pattern = re.compile("^" + "[^/]+".join(re.escape(part) for part in parts) + "/?$")
        for method, operation in operations.items():
            names = frozenset(p["name"] for p in operation.get("parameters", []) if p.get("in") == "query")
            found.append((pattern, method.upper(), names, len(parts)))
    # a path written out before one with a placeholder where both match (``runs/delete``, ``runs/{id}``)
    return [(pattern, method, names) for pattern, method, names, _ in sorted(found, key=lambda f: f[3])]


def query_problem(method: str, path: str, query: Any) -> ValidationFailed | None:
    """What is wrong with a request's query parameters as a whole, before any view reads one: a
    parameter given twice (the lists read the last, so ``status=failed&status=completed`` listed the
    completed runs alone), or one the endpoint does not declare (``?stauts=failed`` listed every
    run). A path the document does not describe is judged for repeats only."""
    for name, values in query.lists():
        if len(values) > 1:
            return ValidationFailed(f"{name}: given {len(values)} times; give it once",
                                    extra={"field": name, "rule": "repeated"})
    method = "GET" if method == "HEAD" else method  # HEAD is GET without the body (the document has no HEAD)
    declared = next((names for pattern, verb, names in _declared() if verb == method and pattern.match(path)), None)
    if declared is None:
        return None
    unknown = sorted(name for name in query if name not in declared)
    if unknown:
        known = f"it takes {', '.join(sorted(declared))}" if declared else "it takes none"
        return ValidationFailed(f"{unknown[0]}: this endpoint takes no such query parameter ({known})",
                                extra={"field": unknown[0], "rule": "unknown_parameter", "allowed": sorted(declared)})
    return None
