"""Connections one client address may hold open in a web process are bounded
(``AOB_WEB_CONNECTIONS_PER_ADDRESS``, aob_project/http_head.py), on the web process as `make up`
starts it. Without the bound, one address holding connections (each is kept up to the head's
deadline) used up the process's file descriptors, and a request from anyone else was never answered:
the control below shows it on the same server with the bound off."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import psutil
import pytest

from tests.engine.flow import wait_until
from tests.support.stack import Proc, start_web

pytestmark = pytest.mark.django_db  # the server's test database is set up for marked tests only

BOUND = 40
FILES = 160  # the web process's file descriptor limit in these tests: what a flood can exhaust quickly
WEBSOCKET = ["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
             "Sec-WebSocket-Version: 13"]


def start(stack_env: dict[str, str], bound: int) -> Proc:
    proc = start_web({**stack_env, "AOB_WEB_CONNECTIONS_PER_ADDRESS": str(bound), "AOB_WEB_HEAD_READ_S": "60"},
                     f"uvicorn-connections-{bound}")
    psutil.Process(proc.popen.pid).rlimit(psutil.RLIMIT_NOFILE, (FILES, FILES))
    return proc


@pytest.fixture(scope="module")
def bounded(stack_env: dict[str, str]) -> Iterator[Proc]:
    proc = start(stack_env, BOUND)
    yield proc
    proc.stop()


def head(path: str, port: int, *headers: str) -> bytes:
    return "\r\n".join([f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", *headers, "", ""]).encode()


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))


def answer(sock: socket.socket, timeout: float = 5) -> bytes:
    """What the server sent before it closed or went quiet for ``timeout`` s (b"" for a close)."""
    data = b""
    sock.settimeout(timeout)
    try:
        while chunk := sock.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data and (b"HTTP/1.1 101" in data or data.endswith(b"}")):
                break
    except ConnectionResetError:
        pass
    except TimeoutError:
        pass
    return data


def ask(port: int, source: str = "127.0.0.1") -> bytes:
    with connect(port, source) as sock:
        sock.sendall(head("/api/v1/health", port))
        return answer(sock)


def hold(stack: ExitStack, port: int, count: int, source: str = "127.0.0.1") -> list[socket.socket]:
    """``count`` connections opened and left open (each sends nothing: the server keeps it until
    the head's deadline); those the server refuses are kept too, as a flood keeps trying."""
    socks = []
    for _ in range(count):
        try:
            socks.append(stack.enter_context(connect(port, source)))
        except OSError:
            break
    return socks


def refused(data: bytes) -> bool:
    if not data.startswith(b"HTTP/1.1 429"):
        return False
    body = json.loads(data.partition(b"\r\n\r\n")[2])
    return body["error"] == "too_many_connections" and body["details"] == {
        "rule": "connections_per_address", "limit": BOUND}


def test_one_address_past_the_bound_is_refused_429_and_its_places_come_back(bounded: Proc) -> None:
    port = bounded.port
    with ExitStack() as stack:
        hold(stack, port, BOUND)
        wait_until(lambda: refused(ask(port)), timeout=10, what="a connection past the bound refused 429")
        assert ask(port, "127.0.0.2").startswith(b"HTTP/1.1 200"), "another address was refused too"
    # the held connections closed: their places are given back
    wait_until(lambda: ask(port).startswith(b"HTTP/1.1 200"), timeout=10, what="places given back after the close")


def test_a_websocket_holds_its_place_until_it_ends(bounded: Proc, transactional_db: None, make_user: Any) -> None:
    port = bounded.port
    token = make_user("watcher").auth_token.key
    with ExitStack() as stack:
        ws = stack.enter_context(connect(port))
        ws.sendall(head("/ws/events/", port, *WEBSOCKET, f"Origin: http://127.0.0.1:{port}",
                        f"Authorization: Token {token}"))
        assert answer(ws).startswith(b"HTTP/1.1 101")
        with ExitStack() as others:
            hold(others, port, BOUND - 1)
            wait_until(lambda: refused(ask(port)), timeout=10, what="the upgraded connection's place counted")
        wait_until(lambda: ask(port).startswith(b"HTTP/1.1 200"), timeout=10)
        with ExitStack() as others:  # the socket is still open: it still holds its place
            hold(others, port, BOUND - 1)
            wait_until(lambda: refused(ask(port)), timeout=10)
    # closed: its end gave its place back, and the whole bound can be held again
    with ExitStack() as again:
        wait_until(lambda: ask(port).startswith(b"HTTP/1.1 200"), timeout=10)
        hold(again, port, BOUND - 1)
        wait_until(lambda: ask(port).startswith(b"HTTP/1.1 200"), timeout=10, what="a WebSocket's place given back")


@pytest.mark.parametrize("bound", [BOUND, 0], ids=["bounded", "control-unbounded"])
def test_a_flood_from_one_address_leaves_others_served(stack_env: dict[str, str], bound: int) -> None:
    """Past the process's file descriptors: with the bound, another address is answered; without it
    (the control) it is not."""
    proc = start(stack_env, bound)
    try:
        with ExitStack() as stack:
            hold(stack, proc.port, 2 * FILES)  # queued before the other address's, in the listen backlog
            served = ask(proc.port, "127.0.0.2").startswith(b"HTTP/1.1 200")
        assert served is bool(bound), f"another address {'was not' if bound else 'was'} served"
    finally:
        proc.stop()


class _Peer:
    """What asyncio's transport says of its peer (the one thing ``_address`` asks)."""

    def __init__(self, peername: object) -> None:
        self.peername = peername

    def get_extra_info(self, name: str) -> object:
        return self.peername if name == "peername" else None


@pytest.mark.parametrize(("peername", "place"), [
    (("203.0.113.7", 50000), "203.0.113.7"),
    (("::ffff:203.0.113.7", 50000, 0, 0), "203.0.113.7"),  # the same host over a dual-stack socket
    (("2001:db8:1:2::1", 50000, 0, 0), "2001:db8:1:2::/64"),
    (("2001:db8:1:2:ffff:ffff:ffff:ffff", 50000, 0, 0), "2001:db8:1:2::/64"),  # one host holds its /64 whole
    (("fe80::1%eth0", 50000, 0, 2), "fe80::/64"),
    ("/run/aob.sock", None),  # a Unix socket: no address
])
def test_a_place_is_an_ipv4_address_or_an_ipv6_64(peername: object, place: str | None) -> None:
    from aob_project.http_head import _address

    assert _address(_Peer(peername)) == place  # type: ignore[arg-type]
