"""A JSON parser that refuses what PostgreSQL or the engine cannot hold, as a 400 and never a 500:
bodies over the limit, nesting past the limit, and what ``workflows.limits.unstorable`` refuses in
any stored value: NUL characters (``jsonb`` rejects ``\\u0000``), lone surrogates (not UTF-8),
integers beyond 64 bits and floats beyond them (``1e20``: ``jsonb`` reads it back as such an integer),
NaN and Infinity (``1e999`` too), and a key given twice in one object (``aob.jsontext.loads_unique``),
each named by its path."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from aob.jsontext import DuplicateKey, loads_unique
from aob_project.exceptions import AobError
from workflows.definition.validation import json_depth
from workflows.limits import loads_storable


class BodyRejected(ParseError):
    def __init__(self, code: str, message: str, path: str | None = None) -> None:
        super().__init__(detail=message, code=code)
        self.rule, self.path = code, path  # path: a JSON Pointer into the body, where one is known


class EncodedBody(AobError):
    """A body sent compressed: read as sent it is "not UTF-8", which names the wrong fault. RFC 9110
    answers a content coding the server does not decode with 415, naming it."""
    code = "unsupported_media_type"
    status = 415


def refuse_encoded(headers: Any) -> None:
    """Bodies are read as sent: a ``Content-Encoding`` other than ``identity`` is refused, before the
    body is read (the API's parser and the hooks' delivery)."""
    coding = (headers.get("Content-Encoding") or "").strip().lower()
    if coding and coding != "identity":
        raise EncodedBody(f"Content-Encoding {coding[:40]!r} is not accepted: send the body uncompressed",
                          extra={"field": "Content-Encoding", "rule": "content_encoding", "accepted": ["identity"]})


def loads_strict(raw: bytes) -> Any:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if limit and len(raw) > limit:
        raise BodyRejected("body_too_large", f"request body is {len(raw)} bytes; the limit is {limit}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyRejected("malformed_json", "request body is not UTF-8") from exc
    try:
        # NaN, Infinity and 1e999 (Infinity by another name) are parsed as Python's floats, and
        # ``unstorable`` refuses them naming where they are, as it does an integer past 64 bits
        data, problem = loads_storable(text, loads_unique)
    except DuplicateKey as exc:
        raise BodyRejected(exc.rule, str(exc), exc.path) from None
    except RecursionError as exc:
        raise BodyRejected("max_depth", f"JSON nesting is deeper than {settings.AOB_MAX_JSON_DEPTH}") from exc
    except ValueError as exc:
        raise BodyRejected("malformed_json", f"malformed JSON: {exc}") from exc
    if json_depth(data, settings.AOB_MAX_JSON_DEPTH) > settings.AOB_MAX_JSON_DEPTH:
        raise BodyRejected("max_depth", f"JSON nesting is deeper than {settings.AOB_MAX_JSON_DEPTH} levels")
    if problem is not None:  # what parsing lets through: NUL and lone surrogates, in keys too
        raise BodyRejected(problem.rule, f"{problem.message} (at {problem.path})", problem.path)
    return data


class StrictJSONParser(JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict | None = None) -> Any:
        request = (parser_context or {}).get("request")
        if request is not None:
            refuse_encoded(request.headers)
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 0
        raw = stream.read(limit + 1) if (stream is not None and limit) else (stream.read() if stream else b"")
        return loads_strict(raw)
