"""A request's head (request line and headers) bounded as it is read, before any of AOB's code sees it.

uvicorn's httptools protocol bounds none of it: llhttp keeps an unfinished header's bytes however
many arrive (eight anonymous connections, each sending an unended 64 MiB header, took a web process
from 85 to 606 MB and growing), passes any number of headers (100,000 reached the app), and a head
sent a byte every few seconds is never cut off (uvicorn's keep-alive timer is reset by every read
and is not armed before a connection's first request). WebSocket handshakes are parsed here too,
before the upgrade, so the same bounds hold for them.

This protocol is uvicorn's, with three bounds from settings: a head over ``AOB_WEB_HEAD_MAX_BYTES``
or with more than ``AOB_WEB_HEADERS_MAX`` headers is answered 431, and a head not whole within
``AOB_WEB_HEAD_READ_S`` of the connection's start or of its first byte is answered 408 (or, if no
byte of it came, the connection is closed). ``python -m aob.web`` (aob/web.py) runs uvicorn with it.

Chosen over uvicorn's ``--http h11`` and its ``h11_max_incomplete_event_size``: h11 bounds the bytes
only (neither the count nor the time) and took about 0.2 ms more a request (measured in
docs/PERFORMANCE.md, "Tried").

A fourth bound is on connections: at most ``AOB_WEB_CONNECTIONS_PER_ADDRESS`` open at once from one
client address (an IPv6 one's /64) in a web process, WebSockets included (``Peers``;
``CountedWebSocket`` gives an upgraded connection's place back when it ends). Each connection holds
a file descriptor and the bounds above let each hold one for seconds: one address opening thousands
would leave the process none to accept anyone else's. One over is answered 429 and closed before
anything of it is read.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from typing import Any

import httptools
from django.conf import settings
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

logger = logging.getLogger(__name__)


class HeadTooLarge(Exception):
    def __init__(self, rule: str, limit: int) -> None:
        super().__init__(rule)
        self.rule, self.limit = rule, limit


class Peers:
    """The connections open from each client address in this process (one event loop: no lock).
    A place is taken when a connection is accepted and given back when it ends, as HTTP or, after
    an upgrade, as a WebSocket."""

    def __init__(self) -> None:
        self.open: dict[str, int] = {}
        self.over: set[str] = set()  # addresses refused since they last held nothing: logged once

    def take(self, address: str, limit: int) -> bool:
        count = self.open.get(address, 0)
        if limit and count >= limit:
            if address not in self.over:
                self.over.add(address)
                logger.warning("Connections from %s refused: %d open, the most one address may hold "
                               "(AOB_WEB_CONNECTIONS_PER_ADDRESS).", address, count)
            return False
        self.open[address] = count + 1
        return True

    def give_back(self, address: str) -> None:
        count = self.open.pop(address, 0) - 1
        if count > 0:
            self.open[address] = count
        else:
            self.over.discard(address)  # logged again only after it held nothing


PEERS = Peers()


def _address(transport: asyncio.BaseTransport) -> str | None:
    """Whose place a connection takes: its IPv4 address (an IPv4-mapped IPv6 one too), or its IPv6
    address's /64, which one host or site is given whole (one address each would let it open as many
    as it has addresses); None for a Unix socket."""
    peer = transport.get_extra_info("peername")
    if not isinstance(peer, tuple | list) or not peer:
        return None
    try:
        address = ipaddress.ip_address(str(peer[0]).split("%", 1)[0])
    except ValueError:
        return str(peer[0])
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class HeadBoundedProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_max_bytes: int = settings.AOB_WEB_HEAD_MAX_BYTES
        self.headers_max: int = settings.AOB_WEB_HEADERS_MAX
        self.head_read_s: float = settings.AOB_WEB_HEAD_READ_S
        self.head_open = True  # a head is awaited or being read (until its headers are complete)
        self.head_bytes = 0  # of the open head's url and complete headers, counted exactly
        self.head_count = 0  # of its complete headers
        self.head_read = 0  # of the chunks read while it is open, less bodies: what llhttp may hold
        self.head_started = False  # the open head's message has begun (a byte of it came)
        self.head_deadline: asyncio.TimerHandle | None = None
        self.body_bytes = 0  # of the chunk being fed
        self.peer: str | None = None  # the address whose place this connection holds

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        address = _address(transport)
        if address is not None:
            if not PEERS.take(address, settings.AOB_WEB_CONNECTIONS_PER_ADDRESS):
                limit = settings.AOB_WEB_CONNECTIONS_PER_ADDRESS
                self._send_error(429, "too_many_connections",
                                 f"this address has {limit} connections open to this server, the most it may",
                                 {"rule": "connections_per_address", "limit": limit})
                return
            self.peer = address
        self._arm()  # a connection that sends nothing is held no longer than a slow head

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._give_back()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        super().handle_websocket_upgrade()
        upgraded = self.transport.get_protocol()
        if isinstance(upgraded, CountedWebSocket):  # its end gives the place back, not ours (never called now)
            upgraded.peer, self.peer = self.peer, None
        else:  # another WebSocket protocol (aob/web.py sets ours): uncounted from here, never held for ever
            self._give_back()

    def _give_back(self) -> None:
        if self.peer is not None:
            PEERS.give_back(self.peer)
            self.peer = None

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        self.body_bytes = 0
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, HeadTooLarge):
                self._refuse_too_large(exc.__context__)
            else:
                self._refuse_malformed(exc)
            return
        except httptools.HttpParserError as exc:  # a NUL in a header, a space in its name, a bad chunk size
            self._refuse_malformed(exc)
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self.head_open and self.head_started:
            if self.head_deadline is None:  # a kept connection's next head, in more than one read
                self._arm()  # (a head read whole at once, as most are, costs no timer)
            # llhttp keeps an unfinished header to itself, unseen: it holds at most what came, less
            # bodies (a chunk that also carried earlier pipelined heads counts them again: early, never late)
            self.head_read += len(data) - self.body_bytes
            if self.head_read > self.head_max_bytes:
                self._refuse_too_large(HeadTooLarge("head_bytes", self.head_max_bytes))

    # Parser callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.head_open, self.head_started = True, True
        self.head_bytes, self.head_count, self.head_read = 0, 0, 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_count += 1
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.head_open, self.head_started = False, False
        self._disarm()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.head_open = True  # the next request's deadline starts at its first byte

    def _count(self, size: int) -> None:
        self.head_bytes += size
        if self.head_count > self.headers_max:
            raise HeadTooLarge("header_count", self.headers_max)
        if self.head_bytes > self.head_max_bytes:
            raise HeadTooLarge("head_bytes", self.head_max_bytes)

    # The deadline
    def _arm(self) -> None:
        self._disarm()
        self.head_deadline = self.loop.call_later(self.head_read_s, self._head_too_slow)

    def _disarm(self) -> None:
        if self.head_deadline is not None:
            self.head_deadline.cancel()
            self.head_deadline = None

    def _head_too_slow(self) -> None:
        self.head_deadline = None
        if self.transport.is_closing() or not self.head_open:
            return
        if self._responding():  # a pipelined head, behind a response still going out: its turn comes
            self._arm()
            return
        if not self.head_started:  # nothing came: a close, as for an idle kept connection
            self.transport.close()
            return
        self._send_error(408, "request_head_timeout",
                         f"the request's head was not whole within {self.head_read_s:g} s",
                         {"rule": "head_read_s", "limit": self.head_read_s})

    # Answers
    def _refuse_too_large(self, exc: HeadTooLarge) -> None:
        what = "headers" if exc.rule == "header_count" else "bytes of request line and headers"
        self.logger.warning("Request head refused: more than %d %s.", exc.limit, what)
        self._send_error(431, "request_head_too_large", f"the request's head has more than {exc.limit} {what}",
                         {"rule": exc.rule, "limit": exc.limit})

    def _refuse_malformed(self, exc: Exception) -> None:
        self.logger.warning("Invalid HTTP request received: %s.", exc)
        self._send_error(400, "malformed_request", f"the request is not HTTP this server can read: {exc}",
                         {"rule": "http_syntax"})

    def _responding(self) -> bool:
        """A response goes out, or waits to, before any answer of ours could: while a head is read,
        an earlier request's; once it is whole (a body being read), this request's own once begun,
        or an earlier one's it waits behind in uvicorn's pipeline."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            return False
        return self.head_open or cycle.response_started or bool(self.pipeline)

    def _send_error(self, status: int, code: str, message: str, details: dict[str, Any]) -> None:
        """The API's error shape, then the connection closed (nothing of the request was read whole);
        behind a response still going out, only the close."""
        self._disarm()
        responding = self._responding()
        self.head_open = False
        if responding:
            self.transport.close()
            return
        if self.cycle is not None and not self.cycle.response_complete:  # this request's, its answer unbegun:
            self.cycle.disconnected = True  # the app's answer, if it comes, is not written after ours
        body = json.dumps({"error": code, "message": message, "details": details}).encode()
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend([b"content-type: application/json\r\n",
                        b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                        b"connection: close\r\n", b"\r\n", body])
        self.transport.write(b"".join(content))
        self.transport.close()


class CountedWebSocket(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol (the one it picks by default), giving back the place its
    connection took as HTTP (``HeadBoundedProtocol``) when it ends."""

    peer: str | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None:
            PEERS.give_back(self.peer)
            self.peer = None
        super().connection_lost(exc)
