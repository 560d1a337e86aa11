"""A request's head (its request line and headers) is bounded before any of AOB's code sees it: in
bytes, in headers and in the time it takes to arrive, on the web process as `make up` starts it
(``aob.launcher.web_command``), for HTTP requests and WebSocket handshakes alike. Each failed on
the code before (a red-team helper's findings: uvicorn's httptools parser took a 16 MB header and
100,000 headers, eight unfinished 64 MiB headers took the process from 85 to 606 MB, and a head
sent a byte every few seconds was never cut off)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import psutil
import pytest

from tests.support.stack import start_web

HEAD_READ_S = 2  # AOB_WEB_HEAD_READ_S for this server: the slow-loris tests wait about this long
pytestmark = pytest.mark.django_db  # the server's test database is set up for marked tests only


@pytest.fixture(scope="module")
def server(stack_env: dict[str, str]) -> Iterator[tuple[int, psutil.Process]]:
    proc = start_web({**stack_env, "AOB_WEB_HEAD_READ_S": str(HEAD_READ_S)}, "uvicorn-heads")
    yield proc.port, psutil.Process(proc.popen.pid)  # one worker: uvicorn serves in the process it started in
    proc.stop()


def answer(sock: socket.socket) -> bytes:
    """What the server says before it closes or goes quiet for 10 s: its status line, or b"" for a close."""
    data = b""
    sock.settimeout(10)
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (ConnectionResetError, BrokenPipeError):
        pass
    except TimeoutError:
        return b"(open, quiet for 10 s)"
    return data.split(b"\r\n", 1)[0]


def send_head(port: int, head: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(head)
        except (ConnectionResetError, BrokenPipeError):
            pass  # refused before it was all sent: the answer may still be there to read
        return answer(sock)


def get(path: str, *headers: str) -> bytes:
    return "\r\n".join([f"GET {path} HTTP/1.1", "Host: 127.0.0.1", *headers, "", ""]).encode()


def test_a_head_past_the_byte_bound_is_refused_431(server: tuple[int, psutil.Process]) -> None:
    port, _ = server
    status = send_head(port, get("/api/v1/runs", "X-Filler: " + "a" * 2**20))
    assert status.startswith(b"HTTP/1.1 431"), status


def test_a_head_past_the_header_count_is_refused_431(server: tuple[int, psutil.Process]) -> None:
    port, _ = server
    status = send_head(port, get("/api/v1/runs", *(f"X-H{i}: v" for i in range(10_000))))
    assert status.startswith(b"HTTP/1.1 431"), status


def test_a_websocket_handshake_past_the_bounds_is_refused_431(server: tuple[int, psutil.Process]) -> None:
    port, _ = server
    upgrade = ["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
               "Sec-WebSocket-Version: 13", f"Origin: http://127.0.0.1:{port}"]
    big = send_head(port, get("/ws/events/", *upgrade, "Cookie: " + "a" * 2**20))
    many = send_head(port, get("/ws/events/", *upgrade, *(f"X-H{i}: v" for i in range(10_000))))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:  # control: an ordinary one
        sock.sendall(get("/ws/events/", *upgrade, "Cookie: sessionid=" + "a" * 8000).replace(
            b"Host: 127.0.0.1", f"Host: 127.0.0.1:{port}".encode()))
        ordinary = answer(sock)
    assert big.startswith(b"HTTP/1.1 431"), big
    assert many.startswith(b"HTTP/1.1 431"), many
    assert ordinary.startswith(b"HTTP/1.1 101"), ordinary


def test_an_ordinary_head_is_served_as_before(server: tuple[int, psutil.Process]) -> None:
    """Control: a browser's head with a big cookie and a proxy's share of headers is not refused."""
    port, _ = server
    status = send_head(port, get("/api/v1/runs", "Cookie: sessionid=" + "a" * 8000,
                                 *(f"X-Forwarded-H{i}: value-{i}" for i in range(60))))
    assert status.startswith(b"HTTP/1.1 40"), status  # the API's own 401/403, not the server's 431


def test_a_body_is_not_counted_as_head(server: tuple[int, psutil.Process]) -> None:
    """Control: a body many times the head's bound, sent with its head at once, reaches the API."""
    port, _ = server
    body = b'{"username": "' + b"a" * 500_000 + b'", "password": "x"}'
    head = (f"POST /api/v1/auth/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    status = send_head(port, head + body)
    assert status.startswith(b"HTTP/1.1 4") and not status.startswith(b"HTTP/1.1 431"), status


def test_unfinished_heads_cannot_take_the_web_process_memory(server: tuple[int, psutil.Process]) -> None:
    """Eight anonymous connections each send 16 MiB of one header and never end it: before, the
    parser kept every byte (the process grew by about the 128 MiB sent, and on with more)."""
    port, proc = server
    before = proc.memory_info().rss
    chunk = b"a" * 2**16
    socks = []
    for _ in range(8):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        socks.append(sock)
        try:
            sock.sendall(b"GET /api/v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Filler: ")
            for _ in range(256):
                sock.sendall(chunk)
        except (ConnectionResetError, BrokenPipeError):
            pass  # cut off: what we want
        except TimeoutError:
            pass  # the server stopped reading: its memory is what is measured
    time.sleep(0.5)
    grown = (proc.memory_info().rss - before) / 2**20
    for sock in socks:
        sock.close()
    print(f"8 unfinished 16 MiB heads: the web process grew by {grown:.1f} MiB")
    assert grown < 32, f"8 unfinished heads grew the web process by {grown:.0f} MiB"


def test_a_head_sent_a_byte_at_a_time_is_cut_off(server: tuple[int, psutil.Process]) -> None:
    """Slow-loris: one header byte every 0.2 s keeps uvicorn's keep-alive timer from ever firing
    (every read resets it), so the connection was held for as long as the client liked."""
    port, _ = server
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /api/v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        started = time.monotonic()
        closed_after = None
        while time.monotonic() - started < 4 * HEAD_READ_S:
            try:
                sock.sendall(b"a")
            except (ConnectionResetError, BrokenPipeError):
                closed_after = time.monotonic() - started
                break
            sock.settimeout(0.2)
            try:
                data = sock.recv(4096)
            except TimeoutError:
                continue
            except ConnectionResetError:
                data = b""
            closed_after = time.monotonic() - started
            assert data == b"" or data.startswith(b"HTTP/1.1 408"), data
            break
    assert closed_after is not None, f"a head still unfinished after {4 * HEAD_READ_S} s was not cut off"
    assert closed_after < HEAD_READ_S + 1.5, closed_after


def test_a_kept_connections_next_head_has_the_same_deadline(server: tuple[int, psutil.Process]) -> None:
    """The deadline starts again at the first byte of a kept connection's next request (not at
    its first, long answered, nor never)."""
    port, _ = server
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(get("/api/v1/runs"))
        first = b""
        while b"\r\n\r\n" not in first:
            first += sock.recv(65536)
        head, _, body = first.partition(b"\r\n\r\n")
        length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))[15:])
        while len(body) < length:
            body += sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 40") and len(body) == length, first
        time.sleep(HEAD_READ_S + 0.5)  # past the deadline of the first head, within uvicorn's 5 s keep-alive
        sock.sendall(b"GET /api/v1/runs HTTP/1.1\r\n")
        started = time.monotonic()
        for _ in range(int(4 * HEAD_READ_S / 0.2)):
            try:
                sock.sendall(b"X")
            except (ConnectionResetError, BrokenPipeError):
                break
            time.sleep(0.2)
        status = answer(sock) if time.monotonic() - started < 4 * HEAD_READ_S else b"(still open)"
        waited = time.monotonic() - started
    assert status.startswith(b"HTTP/1.1 408") or status == b"", status
    assert waited < HEAD_READ_S + 1.5, waited


def test_a_connection_that_sends_nothing_is_closed(server: tuple[int, psutil.Process]) -> None:
    port, _ = server
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        started = time.monotonic()
        sock.settimeout(4 * HEAD_READ_S)
        try:
            data = sock.recv(4096)
        except TimeoutError:
            data = None
        except ConnectionResetError:
            data = b""
        waited = time.monotonic() - started
    assert data is not None, f"a connection that sent nothing was still open after {waited:.1f} s"
    assert data == b"" or data.startswith(b"HTTP/1.1 408"), data


@pytest.mark.parametrize("request_bytes", [
    get("/api/v1/runs", "Authorization: Token a\x00b"),
    get("/api/v1/runs", "Bad Name: x"),
    b"POST /api/v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
], ids=["nul-in-a-header", "space-in-a-header-name", "bad-chunk-size"])
def test_a_request_the_parser_refuses_is_answered_400_in_the_api_s_json(server: tuple[int, psutil.Process],
                                                                          request_bytes: bytes) -> None:
    """uvicorn answered these with its text/plain "Invalid HTTP request received.", not the one
    error shape its 431 and 408 here are answered in."""
    port, _ = server
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request_bytes)
        data = b""
        while chunk := sock.recv(65536):  # the server closes after its answer
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"content-type: application/json" in head.lower(), data[:300]
    answer = json.loads(body)
    assert answer["error"] == "malformed_request" and answer["details"] == {"rule": "http_syntax"}, answer
