from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from django.db import models


def canonical_json(value: Any) -> str:
    """The one serialization that content ids are taken over: sorted keys, no whitespace, a number
    as Python writes it (a float's shortest form: ``1.5e+300``, ``5e-324``, ``-0.0``). Its id and
    size are of it as PostgreSQL's jsonb reads it back and writes it out (``text_id``,
    ``size_of``), each measured from the text as written: ``1.5e+300`` is read back as an integer
    of 301 digits, which nothing builds (a remote's 10 MiB of ``1e300`` would be 500 MB of them,
    built before any bound refused it)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


# A number jsonb reads back as another: one with a positive exponent (``1e+16`` as the integer
# 10000000000000000, as many digits as the exponent says), ``-0.0`` (as ``0.0``: no negative zero).
# Searched for by its end, a literal first (a 16 MB text in a few tens of milliseconds, where a
# search for the whole token took as long as writing the text); ``_NUMBER``, the whole token.
_ENDS = (re.compile(r"e\+(?<=\de\+)\d+(?=[,\]}]|$)"), re.compile(r"-0\.0(?=[,\]}]|$)"))
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?e\+\d+|-0\.0")
_DIGITS = frozenset("0123456789.-")


def _rewritten(text: str) -> bool:
    """Whether ``text`` (``canonical_json``) may hold a number jsonb reads back as another: a
    whole ``_NUMBER`` where only a number can be (first, or after ``:``, ``,`` or ``[``). A string
    may end so too (``"x,1e+5]"``): past a few such, the text is read exactly (``_READ``) anyway."""
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


# A string (``json`` writes a quote in one as ``\\"``), or a number jsonb reads back as another.
_READ = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|(-?\d+(?:\.\d+)?e\+\d+|-0\.0(?!\d))')


def _read_back(number: str) -> str:
    """A ``_NUMBER`` as jsonb writes it out: ``1.5e+300`` as 15 and 299 zeros, ``-0.0`` as ``0.0``
    (Python writes a float from 1e16 up with one digit before the point, at most 17 in all)."""
    if number == "-0.0":
        return "0.0"
    mantissa, exponent = number.split("e+")
    sign = "-" if mantissa[0] == "-" else ""
    digits = mantissa.lstrip("-").replace(".", "")
    return sign + digits + "0" * (int(exponent) + 1 - len(digits))


def content_id(value: Any) -> str:
    return text_id(canonical_json(value))


def text_id(canonical: str) -> str:
    """The content id of a value already in ``canonical_json`` form: of it as jsonb reads it back,
    so a value read back has the id it was stored under (``1e+16`` hashed as 10000000000000000).
    Each such number is written out as it is hashed, one at a time: nothing of its size is built
    (the caller has refused a value past its bound by ``size_of`` first)."""
    digest = hashlib.sha256()
    if not _rewritten(canonical):
        digest.update(canonical.encode("utf-8"))
        return "sha256:" + digest.hexdigest()
    at = 0
    for match in _READ.finditer(canonical):
        if match.group(1) is not None:
            digest.update(canonical[at:match.start()].encode("utf-8"))
            digest.update(_read_back(match.group(1)).encode())
            at = match.end()
    digest.update(canonical[at:].encode("utf-8"))
    return "sha256:" + digest.hexdigest()


def size_of(canonical: str) -> int:
    """An artifact's ``size_bytes``, what every size bound measures: its ``canonical_json`` in UTF-8
    as jsonb writes it out, each number written otherwise measured from its exponent, not built:
    a negative one in full (``_TINY``: ``5e-324`` is 326 bytes), a positive one as the integer it
    is read back as (``_HUGE``: ``1.5e+300`` is 301), ``-0.0`` as ``0.0``."""
    size = len(canonical.encode("utf-8"))
    tiny = "e-" in canonical and _TINY_END.search(canonical)
    if tiny or _rewritten(canonical):
        numbers = _STRING.sub('""', canonical)  # the numbers, not a string's text
        # "5e-324" is 320 characters longer, "1.5e-05" 1: "0." and the exponent's zeros in place of "e-" and it
        size += sum(int(exponent) - len(exponent) - 1 for exponent in _TINY.findall(numbers))
        size -= len(_FRACTION.findall(numbers))
        # "1.5e+300" is 293 longer: the exponent's digits and one (and its sign) in place of the token
        size += sum(len(huge[1]) + int(huge[2]) + 1 - len(huge[0]) for huge in _HUGE.finditer(numbers))
        size -= sum(1 for _ in _NEGATIVE_ZERO.finditer(numbers))
    return size


# A float below 1e-4, which Python writes with a negative exponent and jsonb writes out in full:
# ``1e-05`` is ``0.00001``, ``5e-324`` 326 characters (a 980 KB run was read back as 46 MB). It
# reads back as the same float, so the text keeps it short (as ``_rewritten``'s search, by its end,
# ``_TINY_END``; ``_STRING``, a string to leave out: ``json`` writes a quote in one as ``\\"``).
_TINY_END = re.compile(r"e-(?<=\de-)\d+(?=[,\]}]|$)")
_TINY = re.compile(r"e-(\d+)")
_FRACTION = re.compile(r"\.\d+e-")
_HUGE = re.compile(r"(-?)\d+(?:\.\d+)?e\+(\d+)")
_NEGATIVE_ZERO = re.compile(r"-0\.0(?!\d)")
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
        # its id alone: the row's kind is its first storer's, maybe another user's (``selectors.artifact_seen``)
        return self.id[:19]
