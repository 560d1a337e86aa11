"""A response body, read and decoded within its cap.

httpx decodes a whole network read at once (up to 64 KiB, which gzip makes up to 64 MiB, and gzip
on gzip a thousand times that) before its caller can count a byte. Here the raw bytes are decoded
with zlib's ``max_length``, so no step makes more than the bytes the body may still take; an
encoding stacked on another is refused, as no server needs one.
"""

from __future__ import annotations

import zlib

import httpx

from aob_project.decimal_text import bounded_decimal
from workers.http.exceptions import HTTPRequestError, ResponseTooLarge

DECODED = ("gzip", "deflate")
ACCEPT_ENCODING = ", ".join(DECODED)  # what the client asks for: what it can decode within a bound


def _decompressor(response: httpx.Response, url: str) -> tuple[str, zlib._Decompress] | None:
    """The zlib decompressor of the response's Content-Encoding; None for identity, or one the
    client does not decode (passed on as it came, as httpx does)."""
    layers = [v.strip().lower() for v in response.headers.get_list("content-encoding", split_commas=True)]
    layers = [v for v in layers if v and v != "identity"]
    if len(layers) > 1:
        raise HTTPRequestError(f"the response is encoded {len(layers)} times ({', '.join(layers)}): one "
                               "Content-Encoding at most is decoded", extra={"url": url, "transient": False,
                                                                              "kind": "content-encoding"})
    if not layers or layers[0] not in DECODED:
        return None
    return layers[0], zlib.decompressobj(zlib.MAX_WBITS | 16 if layers[0] == "gzip" else zlib.MAX_WBITS)


def read_capped(response: httpx.Response, *, cap: int, url: str) -> bytes:
    declared = response.headers.get("content-length", "")
    length = bounded_decimal(declared, 18)
    if length is not None and length > cap:
        raise ResponseTooLarge(f"response declares {declared} bytes, over the {cap}-byte cap",
                               extra={"url": url, "limit": cap, "transient": False})
    decoding = _decompressor(response, url)
    body = bytearray()
    first = True

    def take(piece: bytes) -> None:
        body.extend(piece)
        if len(body) > cap:
            raise ResponseTooLarge(f"response body passed the {cap}-byte cap",
                                   extra={"url": url, "limit": cap, "transient": False})

    for raw in response.iter_raw():
        if decoding is None:
            take(raw)
            continue
        kind, inflate = decoding
        pending = raw
        while pending:
            try:
                piece = inflate.decompress(pending, cap - len(body) + 1)
            except zlib.error as exc:
                if kind == "deflate" and first:  # deflate without its zlib header, as httpx accepts it
                    inflate = zlib.decompressobj(-zlib.MAX_WBITS)
                    decoding, first = (kind, inflate), False
                    continue
                raise _decoding_error(exc, url) from exc
            first = False
            take(piece)
            pending = inflate.unconsumed_tail
    if decoding is not None:
        try:
            take(decoding[1].flush(cap - len(body) + 1))
        except zlib.error as exc:
            raise _decoding_error(exc, url) from exc
    return bytes(body)


def _decoding_error(exc: zlib.error, url: str) -> HTTPRequestError:
    return HTTPRequestError(f"DecodingError: {exc}", extra={"url": url, "transient": False, "kind": "DecodingError"})
