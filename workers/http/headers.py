"""Which request headers a workflow may set: RFC 7230 token names; RFC 9110 field values (no
control character but tab, no whitespace at either end: h11 refuses some of those with the value
in its message, a secret escaped where masking cannot find it, and sends the others; ASCII only, as
httpx encodes them: its ``UnicodeEncodeError`` came out of the client); and none of
the connection-level or routing headers that would retarget or desynchronize the request
(``Host``, ``Content-Length``, ``Transfer-Encoding``, ``Connection``, ``Proxy-*``, ...).

Judged at save time on literal headers (``workflows.definition.validation``) and again by the
client at send time, after references are resolved, where the values are final.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from workers.http.exceptions import InvalidHeader

TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
UNSAFE_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]|^[ \t]|[ \t]$")
FORBIDDEN = frozenset({
    "host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te", "trailer",
    "expect", "forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip",
    "x-http-method-override", "http2-settings",
    # the other spellings common servers and proxies read for the same three things: the method
    # applied, the path or virtual host routed, the client's address
    "x-http-method", "x-method-override", "x-original-url", "x-rewrite-url", "x-forwarded-server", "x-host",
    "true-client-ip", "x-client-ip", "cf-connecting-ip",
})
FORBIDDEN_PREFIXES = ("proxy-",)


def header_problem(name: Any, value: Any = "") -> tuple[str, str] | None:
    """``(rule, message)`` for a header a workflow may not send, else None."""
    if not isinstance(name, str) or not TOKEN.match(name):
        return "header_name", f"header name {name!r} is not an RFC 7230 token"
    lowered = name.lower()
    if lowered in FORBIDDEN or lowered.startswith(FORBIDDEN_PREFIXES):
        return "header_forbidden", f"header {name!r} is connection-level or routing and cannot be set"
    if isinstance(value, str) and UNSAFE_VALUE.search(value):
        return "header_value", (f"the value of header {name!r} contains a control character (CR, LF, NUL, ...) "
                                "or begins or ends with whitespace")
    if isinstance(value, str) and not value.isascii():
        # httpx encodes header values as ASCII: its UnicodeEncodeError quoted the character and
        # where it was (of a secret, too), and failed the node with nothing to act on
        return "header_value", (f"the value of header {name!r} contains a character outside ASCII, which a header "
                                "cannot carry: percent- or base64-encode it")
    return None


def check_headers(headers: Mapping[str, Any] | None) -> dict[str, str]:
    """The headers as text, or InvalidHeader naming the first one a workflow may not send."""
    checked: dict[str, str] = {}
    for name, value in (headers or {}).items():
        text = value if isinstance(value, str) else str(value)
        problem = header_problem(name, text)
        if problem is not None:
            raise InvalidHeader(problem[1], extra={"rule": problem[0], "header": str(name)[:200],
                                                   "transient": False})
        checked[name] = text
    return checked
