"""A response body, read and decoded within its cap.

httpx decodes a whole network read at once (up to 64 KiB, which gzip makes up to 64 MiB, and gzip
on gzip a thousand times that) before its caller can count a byte. Here the raw bytes are decoded
with zlib's ``max_length``, so no step makes more than the bytes the body may still take; an
encoding stacked on another is refused, as no server needs one.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpx

from aob_project.decimal_text import bounded_decimal
from workers.http.exceptions import HTTPRequestError, ResponseTooLarge

DECODED = ("gzip", "deflate")
ACCEPT_ENCODING = ", ".join(DECODED)  # what the client asks for: what it can decode within a bound


_GZIP = zlib.MAX_WBITS | 16
_GZIP_MAGIC = b"\x1f\x8b"  # RFC 1952 §2.3.1: every member begins so


def _encoding(headers: Any, url: str) -> str | None:
    """The response's one Content-Encoding the client decodes; None for identity, or one it does
    not decode (passed on as it came, as httpx does)."""
    layers = [v.strip().lower() for v in headers.get_list("content-encoding", split_commas=True)]
    layers = [v for v in layers if v and v != "identity"]
    if len(layers) > 1:
        raise HTTPRequestError(f"the response is encoded {len(layers)} times ({', '.join(layers)}): one "
                               "Content-Encoding at most is decoded", extra={"url": url, "transient": False,
                                                                              "kind": "content-encoding"})
    return layers[0] if layers and layers[0] in DECODED else None


def _zlib_wrapped(head: bytes) -> bool:
    """Whether a deflate body starts with its zlib header (RFC 1950 §2.2: method 8, the check bits),
    as RFC 9110 says it does; some servers send the raw stream, which httpx and browsers accept too."""
    return head[0] & 0x0F == 8 and (head[0] << 8 | head[1]) % 31 == 0


def _inflated(chunks: Iterator[bytes], kind: str, room: Callable[[], int], url: str) -> Iterator[bytes]:
    """The decoded body, each step at most ``room()`` bytes. Every gzip member is decoded (RFC 1952
    §2.2; zero padding between them skipped, and bytes after the last member that do not begin
    another ignored, as gzip(1) does), not only the first; a stream that ends before its compressed
    end (a truncated body) is refused, not passed on as if whole."""
    inflate: zlib._Decompress | None = None
    head = b""
    try:
        for raw in chunks:
            if inflate is None:  # deflate's wrapping is told by its first two bytes
                head += raw
                if len(head) < 2:
                    continue
                inflate = zlib.decompressobj(_GZIP if kind == "gzip" else
                                             zlib.MAX_WBITS if _zlib_wrapped(head) else -zlib.MAX_WBITS)
                raw, head = head, b""
            elif inflate.eof and head:  # the first byte of what follows a member, kept for its second
                raw, head = head + raw, b""
            pending = raw
            while pending:
                if inflate.eof:
                    if kind != "gzip":
                        return  # bytes after a deflate stream's end are not the body's
                    pending = pending.lstrip(b"\0")
                    if not pending:
                        break
                    if len(pending) == 1:
                        head = pending  # too short to tell: wait for the next read
                        break
                    if not pending.startswith(_GZIP_MAGIC):
                        return  # trailing garbage, not another member
                    inflate = zlib.decompressobj(_GZIP)  # the next member
                yield inflate.decompress(pending, room())
                pending = inflate.unconsumed_tail or (inflate.unused_data if inflate.eof else b"")
        if inflate is None:
            if head:
                raise _decoding_error(f"a {kind} body of {len(head)} byte cannot be whole", url)
            return  # no body at all (HEAD, 204, 304) with the header still set
        yield inflate.flush(room())
        if not inflate.eof:
            raise _decoding_error(f"the {kind} body ended before its compressed stream did (a truncated body)", url)
    except zlib.error as exc:
        raise _decoding_error(str(exc), url) from exc


def read_capped(response: httpx.Response, *, cap: int, url: str) -> bytes:
    if response.request.method == "HEAD" or response.status_code in (204, 304):
        return b""  # no body comes (RFC 9110 §6.4.1); a HEAD's Content-Length is what a GET would get
    return b"".join(body_capped(response.headers, response.iter_raw(), cap=cap, url=url))


def body_capped(headers: Any, raw: Iterable[bytes], *, cap: int, url: str) -> Iterator[bytes]:
    """The body of an answer with these ``headers`` (httpx's or httpx2's), decoded as it is read
    from ``raw``, its bytes as they came; ``ResponseTooLarge`` past ``cap`` decoded bytes."""
    declared = headers.get("content-length", "")
    length = bounded_decimal(declared, 18)
    if length is not None and length > cap:
        raise ResponseTooLarge(f"response declares {declared} bytes, over the {cap}-byte cap",
                               extra={"url": url, "limit": cap, "transient": False})
    taken = 0
    kind = _encoding(headers, url)
    pieces = iter(raw)
    if kind is not None:
        pieces = _inflated(pieces, kind, lambda: cap - taken + 1, url)
    for piece in pieces:
        taken += len(piece)
        if taken > cap:
            raise ResponseTooLarge(f"response body passed the {cap}-byte cap",
                                   extra={"url": url, "limit": cap, "transient": False})
        yield piece


def _decoding_error(reason: str, url: str) -> HTTPRequestError:
    return HTTPRequestError(f"DecodingError: {reason}", extra={"url": url, "transient": False, "kind": "DecodingError"})
