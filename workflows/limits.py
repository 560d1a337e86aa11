"""A value past its byte bound is refused one way wherever it is written (a run's inputs, a
schedule's inputs, a hook's mapping, an approver's form data): measured as the artifacts are
(``canonical_json`` in UTF-8), and refused naming the field, the rule, the limit and the size.
What is stored whatever its size, an error, is cut to its bound where it is made (``bounded_error``,
``clipped``).

A value JSON in PostgreSQL or the engine cannot hold is refused by one rule too (``unstorable``):
the API's body parser applies it to every body, and ``run_start`` to every run's inputs, whoever
made them (a hook's mapping can make NaN or NUL from a body that had neither)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db.models import QuerySet

from aob_project.exceptions import AobError, ValidationFailed
from workflows.models import canonical_json, size_of, stored_size


def refuse_past(value: Any, limit: int, *, field: str, error: type[AobError] = ValidationFailed,
                setting: str = "", code: str | None = None) -> int:
    """Raise ``error`` (400) when ``value`` is larger than ``limit`` bytes; ``setting`` names the
    operator's variable that sets the limit, when there is one. Returns the size."""
    size = size_of(canonical_json(value))
    if size > limit:
        raise error(f"{field} is {size} bytes; at most {limit}" + (f" ({setting})" if setting else ""), code=code,
                    extra={"field": field, "rule": "max_bytes", "limit": limit, "size": size})
    return size


def refuse_more(rows: QuerySet, *, setting: str, what: str, field: str, rule: str,
                error: type[AobError] = ValidationFailed) -> None:
    """Raise ``error`` (400) when an owner's ``rows`` (their schedules, hooks, secrets) already
    number the operator's ``setting``: the one per-owner count rule. Its caller holds the owner's
    lock, so concurrent creations are counted in turn."""
    limit = getattr(settings, setting)
    if rows.count() >= limit:
        raise error(f"an owner has at most {limit} {what} ({setting}); delete one first",
                    extra={"field": field, "rule": rule, "limit": limit})


# The engine's integers (CEL's int) are 64-bit: a wider one would fail the first node that reads it.
INT64 = (-(2**63), 2**63 - 1)



@dataclass(frozen=True)
class Unstorable:
    """What a value holds that cannot be stored: the rule it breaks, why, and where (a JSON Pointer,
    ``/`` for the whole value, cut to 200 bytes: a key can be as long as the value allows)."""

    rule: str
    message: str
    path: str


def unstorable(value: Any, *, int64: bool = True) -> Unstorable | None:
    """The first thing in ``value`` that ``jsonb`` or the engine cannot hold, else None: NUL
    (``jsonb`` refuses ``\\u0000``), a lone surrogate (no UTF-8), NaN or Infinity (no JSON), a key
    that is not a string, a value that is no JSON type and, with ``int64``, an integer beyond 64
    bits (what a sender may send: ``jsonb`` holds one), or a float beyond them (``1e20``, which
    ``jsonb`` reads back as such an integer). Iterative: a deep value cannot reach the recursion
    limit. A path is built only for the one found; scalars are judged where they are met, not
    stacked (a run's inputs are up to 16 MiB of them)."""
    if not isinstance(value, dict | list | tuple):
        problem = _scalar_problem(value, int64)
        return Unstorable(problem[0], problem[1], "/") if problem else None
    stack: list[tuple[Any, Any]] = [(value, None)]  # (container, where): where is (parent's where, key) or None
    while stack:
        item, where = stack.pop()
        is_map = isinstance(item, dict)
        for key, child in (item.items() if is_map else enumerate(item)):
            if is_map and (key.__class__ is not str or not key.isascii() or "\x00" in key):
                problem = (_text_problem(key) if isinstance(key, str)
                           else ("type", f"a key must be a string, not a {type(key).__name__}"))
                if problem is not None:
                    return Unstorable(problem[0], problem[1], _pointer(where))
            if isinstance(child, dict | list | tuple):
                stack.append((child, (where, key)))
            elif child.__class__ is not str or not child.isascii() or "\x00" in child:
                problem = _scalar_problem(child, int64)
                if problem is not None:
                    return Unstorable(problem[0], problem[1], _pointer((where, key)))
    return None


# Where a JSON text may hold a string ``unstorable`` refuses: NUL and a lone surrogate are written
# as escapes (a raw control character is malformed JSON, and text decoded from UTF-8 has no
# surrogate): ``\u0000`` and ``\ud800``, with the two of a pair. A string's text may match too.
STRING_ESCAPES = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")


def loads_storable(text: str, loads: Callable[..., Any] = json.loads, *, int64: bool = True
                   ) -> tuple[Any, Unstorable | None]:
    """``loads(text)`` (``json.loads`` or one taking its hooks) and what ``unstorable`` finds in it,
    the value walked only when it holds something to find (the walk cost the web process 0.9 s of
    CPU on a 12 MB body of 330,000 small objects, five times its parsing). Numbers are judged by
    ``_scalar_problem`` as they are parsed, and only where the text may hold one it refuses: each
    is NaN or Infinity, has an exponent (``1e999``, ``1e20``, ``1e-21``) or, without one, 19 digits
    in a row (past 64 bits takes 19 integer digits).
    Strings, where the text has an escape that may make one it refuses (``STRING_ESCAPES``), by the
    value written again (in C): with no lone surrogate it encodes, and ``json`` writes a NUL as
    ``\\u0000``."""
    found = False

    def integer(digits: str) -> int:
        nonlocal found
        number = int(digits)
        if len(digits) > 18 and _scalar_problem(number, int64) is not None:  # 18 characters: within 64 bits
            found = True
        return number

    def real(digits: str) -> float:
        nonlocal found
        number = float(digits)
        if not _PLAIN[0] <= abs(number) < _PLAIN[1] and _scalar_problem(number, int64) is not None:
            found = True
        return number

    def constant(name: str) -> float:  # NaN, Infinity, -Infinity
        nonlocal found
        found = True
        return float(name)

    digits = text.encode("utf-8", "surrogatepass").translate(_DIGITS)
    hooks: dict[str, Callable[[str], Any]] = {"parse_constant": constant}
    if b"0" * 19 in digits:
        hooks.update(parse_int=integer, parse_float=real)
    elif b"0e" in digits:
        hooks["parse_float"] = real
    value = loads(text, **hooks)
    if not found and "\x00" not in text and (text.isascii() or encodable(text)):
        if "\\u" not in text or not STRING_ESCAPES.search(text):
            return value, None
        written = json.dumps(value, ensure_ascii=False)
        if "\\u0000" not in written and encodable(written):
            return value, None
    return value, unstorable(value, int64=int64)


# Every digit a "0" and every "E" an "e": where the text so written has no "0e" no number has an
# exponent, and where it has no 19 "0"s in a row no number has 19 digits.
_DIGITS = bytes.maketrans(b"0123456789E", b"0000000000e")
# The magnitudes of a float no part of ``_scalar_problem`` refuses (NaN compares false): within
# 64 bits.
_PLAIN = (0.0, float(2**63))


def encodable(text: str) -> bool:
    """Whether ``text`` is UTF-8 as it stands (no lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _scalar_problem(value: Any, int64: bool) -> tuple[str, str] | None:
    if isinstance(value, str):
        return _text_problem(value)
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return "invalid_number", ("NaN is not a JSON number" if math.isnan(value) else
                                  "a number outside the range of a double (1e999, Infinity) is not a JSON number")
    if isinstance(value, int | float):
        # a float too: jsonb keeps 1e20 as the number it is and reads it back as an integer, 21
        # digits, which this rule would refuse when the value read is sent again
        if not int64 or INT64[0] <= value <= INT64[1]:
            return None
        return "integer_out_of_range", (f"integer {_digits(value)} is outside the 64-bit range" if isinstance(value, int)
                                        else f"number {value!r} is outside the 64-bit range (stored, it reads back "
                                             "as an integer)")
    return "type", f"a value of type {type(value).__name__} is not JSON"


def _text_problem(text: str) -> tuple[str, str] | None:
    if "\x00" in text:
        return "nul_character", "strings must not contain the NUL character (\\u0000)"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # "\ud800" parses, but is no UTF-8: PostgreSQL and hashing fail
            return "invalid_unicode", "strings must not contain lone surrogates (\\ud800)"
    return None


def _digits(number: int) -> str:
    """The start of ``number``'s digits; Python refuses to write one past 4300 digits at all."""
    return str(number)[:30] if number.bit_length() < 1000 else f"of {number.bit_length()} bits"


def _pointer(where: Any) -> str:
    keys = []
    while where is not None:
        where, key = where
        keys.append(str(key).replace("~", "~0").replace("/", "~1"))
    return clipped("".join(f"/{key}" for key in reversed(keys)), 200) or "/"


def refuse_unstorable(value: Any, *, field: str, error: type[AobError] = ValidationFailed,
                      code: str | None = None, int64: bool = True) -> None:
    """Raise ``error`` (400) naming ``field``, the rule and the path when ``value`` holds something
    ``unstorable``: before the value reaches ``canonical_json`` (NaN) or PostgreSQL (NUL)."""
    problem = unstorable(value, int64=int64)
    if problem is not None:
        raise error(f"{field} at {problem.path}: {problem.message}", code=code,
                    extra={"field": field, "rule": problem.rule, "path": problem.path})


# An error is stored in its node run, its event, the run's error (in every run a list answers) and
# a parent's error: at most this many bytes. An exception's text can carry a value the node read
# (CEL names a missing key, up to 16 MiB of inputs) and an agent's error the model's tool calls.
ERROR_MAX_BYTES = 8 * 1024
_MESSAGE_BYTES = 2000
_FIELD_BYTES = 1024


def _size(value: Any) -> int:
    """Bytes as the database stores the value (UTF-8 JSON: ``stored_size``)."""
    return stored_size(value)


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
