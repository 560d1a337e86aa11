from __future__ import annotations

import hashlib
import json
import re
from decimal import Decimal
from typing import Any

from django.db import models


def canonical_json(value: Any) -> str:
    """The one serialization that content ids are taken over: sorted keys, no whitespace; a number
    as PostgreSQL's jsonb reads it back (``as_read``), so a value read back has the id it was
    stored under. Sizes are of it as jsonb writes it out (``size_of``)."""
    text = _dumps(value)
    if _rewritten(text):
        return _dumps(as_read(value))
    return text


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


# A number jsonb reads back as another (``as_read``): one with a positive exponent, ``-0.0``.
# Searched for by its end, a literal first (a 16 MB text in a few tens of milliseconds, where a
# search for the whole token took as long as writing the text, and rebuilding the value for any
# "e+" in a string, base64's or a URL's, four times that); ``_NUMBER``, the whole token.
_ENDS = (re.compile(r"e\+(?<=\de\+)\d+(?=[,\]}]|$)"), re.compile(r"-0\.0(?=[,\]}]|$)"))
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?e\+\d+|-0\.0")
_DIGITS = frozenset("0123456789.-")


def _rewritten(text: str) -> bool:
    """Whether ``text`` (``_dumps``) holds a number ``as_read`` writes otherwise: a whole
    ``_NUMBER`` where only a number can be (first, or after ``:``, ``,`` or ``[``). A string may end
    so too (``"x,1e+5]"``): past a few such, the value is rebuilt anyway (a wrong text never, a
    slower one for whoever sent it)."""
    looked = 0
    for search in _ENDS:
        for match in search.finditer(text):
            start = end = match.start()
            while start > 0 and end - start < 24 and text[start - 1] in _DIGITS:
                start -= 1
            if (start == 0 or text[start - 1] in ":,[") and _NUMBER.fullmatch(text, start, match.end()):
                return True
            looked += 1
            if looked > 64:
                return True
    return False


def as_read(value: Any) -> Any:
    """``value`` with its floats as jsonb reads them back: jsonb keeps the decimal Python wrote and
    writes it out in full, so ``1e+16`` is read back as the integer 10000000000000000 (as many
    digits as the exponent says: ``1.5e+300`` is 301) and ``-0.0`` as ``0.0`` (no negative zero).
    A float below 1e-4 (``1e-05``) reads back as the same float: kept, and measured in full."""
    if isinstance(value, float):
        if value == 0:
            return 0.0
        if abs(value) >= 1e16:  # where Python writes a float with an exponent: a whole number
            return int(Decimal(float.__repr__(value)))
        return value
    if isinstance(value, dict):
        return {key: as_read(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [as_read(item) for item in value]
    return value


def content_id(value: Any) -> str:
    return text_id(canonical_json(value))


def text_id(canonical: str) -> str:
    """The content id of a value already in ``canonical_json`` form."""
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def size_of(canonical: str) -> int:
    """An artifact's ``size_bytes``, what every size bound measures: its ``canonical_json`` in UTF-8
    as jsonb writes it out, each number with a negative exponent in full (``_TINY``)."""
    size = len(canonical.encode("utf-8"))
    if "e-" in canonical and _TINY_END.search(canonical):
        numbers = _STRING.sub('""', canonical)  # the numbers, not a string's text
        # "5e-324" is 320 characters longer, "1.5e-05" 1: "0." and the exponent's zeros in place of "e-" and it
        size += sum(int(exponent) - len(exponent) - 1 for exponent in _TINY.findall(numbers))
        size -= len(_FRACTION.findall(numbers))
    return size


# A float below 1e-4, which Python writes with a negative exponent and jsonb writes out in full:
# ``1e-05`` is ``0.00001``, ``5e-324`` 326 characters (a 980 KB run was read back as 46 MB). It
# reads back as the same float, so the text keeps it short (as ``_rewritten``'s search, by its end,
# ``_TINY_END``; ``_STRING``, a string to leave out: ``json`` writes a quote in one as ``\\"``).
_TINY_END = re.compile(r"e-(?<=\de-)\d+(?=[,\]}]|$)")
_TINY = re.compile(r"e-(\d+)")
_FRACTION = re.compile(r"\.\d+e-")
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')


def stored_size(value: Any) -> int:
    """Bytes of ``value`` as the database stores it: ``size_of`` its ``canonical_json`` (a number as
    jsonb writes it out); a value not JSON yet (an error's exception or NaN, a key not a string) as
    ``json`` writes it, ``str`` of what is no JSON."""
    try:
        return size_of(canonical_json(value))
    except (TypeError, ValueError, RecursionError):
        return size_of(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str))


class Artifact(models.Model):
    """An immutable, content-addressed blob: same content, same id, stored once."""

    class Kind(models.TextChoices):
        DAG_VERSION = "dag_version"
        PATCH_SET = "patch_set"
        NODE_IO = "node_io"

    id = models.CharField(primary_key=True, max_length=71, editable=False)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    content = models.JSONField()
    size_bytes = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.kind} {self.id[:19]}"
