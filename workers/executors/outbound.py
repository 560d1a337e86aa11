"""Where a request goes. The ``http`` type's outbound check at save (``NodeType.check_outbound``):
the SSRF policy's static verdict on a literal URL, from the one SSRF-safe client's own rules
(workers/http), and the host of a literal origin by the workflow's ``allowed_hosts``
(``workflows.egress``). And the one rule for a value put into a URL an author wrote, an ``http``
node's ``${…}`` and an ``openapi_action``'s path parameter alike: in the path it is one segment, in
the query one value (``path_segment``, ``query_value``, ``templated_url``)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, unquote

from workers.http import SSRFBlocked, check_url_static
from workflows import egress

# The start of a URL that fixes where a request goes (scheme, host, port, then /, ? or #), before
# any reference: a node that sends secrets must have one, so no reference can aim them elsewhere.
LITERAL_ORIGIN = re.compile(r"^https?://[^/?#\\$@]+[/?#]", re.IGNORECASE)
# A URL up to where its origin ends (the /, ?, # or \ after scheme://host[:port]): what follows is
# its path, query or fragment. Bounded (a scheme, a host DNS could resolve, a user and password): a
# longer "origin" is none, and the text matched while none has ended is at most ``_HEAD``.
PAST_ORIGIN = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]{0,31}://[^/?#\\]{0,2048}[/?#\\]")
_HEAD = 2100  # longer than any PAST_ORIGIN match
# A "." or ".." segment, which the client (RFC 3986) or the server removes with the one before it.
DOT_SEGMENT = re.compile(r"(^|[/\\])\.\.?([/\\]|$)")
# Where a URL's path segment ends: at the next segment, or where the path does (a query, a fragment).
_SEGMENT_END = re.compile(r"[/\\?#]")


def path_segment(value: str, *, whole: bool = True) -> str:
    """``value`` put into a URL's path as one segment (or, not ``whole``, part of one): percent-encoded
    whole, so its ``/``, ``?``, ``#``, ``\\`` and ``%`` are its own characters and not the URL's; never
    ``.`` or ``..``, which the client (RFC 3986) or the server removes with the segment before, nor,
    as a whole segment, empty, which a server merges with the next: another path than the author's.
    ``ValueError`` says why not."""
    if value in (".", "..") or (whole and not value):
        raise ValueError("may not be empty, '.' or '..': it would leave its place in the path")
    return _encoded(value)


def query_value(value: str) -> str:
    """``value`` put into a URL's query (or fragment) as one value: its ``&``, ``=``, ``#`` and ``+``
    percent-encoded, so it neither adds parameters nor ends the query. ``ValueError`` says why not."""
    return _encoded(value)


def _encoded(value: str) -> str:
    try:
        return quote(value, safe="")
    except UnicodeEncodeError as exc:  # a lone surrogate, which JSON lets a model or a sender write
        raise ValueError(f"cannot be encoded as UTF-8: {exc.reason}") from None


def templated_url(template: str, text_of: Callable[[str], str], references: re.Pattern[str]) -> str:
    """The URL a template names, each reference (a match of ``references``; ``text_of`` gives its
    text) put in by where it stands once what comes before it is filled: before the origin ends as it
    is (a whole URL or host a reference gives: never on a node that sends secrets,
    ``secret_destination``); in the path as one segment (``path_segment``: ``../../x`` climbed out of
    the author's path, ``9?as=admin#`` replaced its end); in the query or fragment as one value
    (``query_value``). ``ValueError`` names the reference that may not be put in."""
    out: list[str] = []
    position, where, head = 0, "origin", ""
    segment = ""  # the path segment being assembled
    inside: list[str] = []  # the references put in it
    for found in references.finditer(template):
        literal = template[position:found.start()]
        out.append(literal)
        position = found.end()
        value = text_of(found.group(0))
        if where == "origin":
            head += literal
            origin = PAST_ORIGIN.match(head)
            if origin is not None:
                literal, where, head = head[origin.end() - 1:], "path", ""
            elif len(head) > _HEAD:  # no host is this long: held to the strict rule, as past one
                literal, where, head = head, "path", ""
        if where == "path":
            segment, inside = _segment_so_far(segment, inside, literal)
            if "?" in literal or "#" in literal:
                where = "query"
        try:
            piece = (value if where == "origin" else query_value(value) if where == "query"
                     else path_segment(value, whole=False))
        except ValueError as exc:
            raise ValueError(f"{found.group(0)} ({value[:100]!r}) is put in the URL's {where} as one "
                             f"{'value' if where == 'query' else 'segment'}, and {exc}") from None
        out.append(piece)
        if where == "origin":
            head += piece
        elif where == "path":
            segment, inside = segment + piece, [*inside, found.group(0)]
    if where == "path":
        _segment_so_far(segment, inside, template[position:] + "/")
    return "".join(out) + template[position:]


def _segment_so_far(segment: str, inside: list[str], literal: str) -> tuple[str, list[str]]:
    """The path segment being assembled (and the references put in it) once ``literal`` follows it.
    A segment that ends here with a reference in it may not be empty, ``.`` or ``..`` once decoded
    (``${a}${b}`` of two empty values, ``${a}.${b}``, ``%2${a}`` of ``E``): a server merges an empty
    one with the next, and the client or server removes a dot one with the segment before. A
    segment the author wrote whole (``//``, ``/./``) is theirs, as written."""
    end = _SEGMENT_END.search(literal)
    if end is None:
        return segment + literal, inside
    text = segment + literal[:end.start()]
    if inside and unquote(text) in ("", ".", ".."):
        raise ValueError(f"path segment made with {''.join(inside)} is {text[:100]!r}, and may not be empty, "
                         f"'.' or '..': it would leave its place in the path")
    return _SEGMENT_END.split(literal)[-1], []


def literal_url_problems(config: dict[str, Any], hosts: egress.Lists = (),
                         ) -> list[tuple[str, str, str, dict[str, Any]]]:
    """A URL without ``$`` (a reference or template is known only at run time) that the policy
    refuses; and, under ``hosts`` (the lists binding the run), a URL whose origin is literal (with or
    without references after it) to a host one of them leaves off. The check at the send stays the
    authority (a host a reference fills, a redirect)."""
    url = config.get("url")
    if not isinstance(url, str):
        return []
    if "$" not in url:
        try:
            target = check_url_static(url)
        except SSRFBlocked as exc:
            return [("/url", "ssrf", exc.message,
                     {**{k: v for k, v in exc.extra.items() if k != "rule"}, "reason": exc.rule})]
    elif hosts and (origin := LITERAL_ORIGIN.match(url)):
        try:  # only its host, for the list: the SSRF rules judge a URL with a reference at the send, as ever
            target = check_url_static(origin.group(0))
        except SSRFBlocked:
            return []
    else:
        return []
    refused_by = egress.refusing(target.host, hosts)
    if refused_by is not None:
        return [("/url", egress.RULE, egress.refusal(target.host, refused_by), {"host": target.host, "url": url})]
    return []
