"""Early refusal against a real uvicorn: a body announced larger than AOB_MAX_BODY_BYTES is answered
413 from the headers alone, at once, without the client sending a byte of it; a chunked body with
no length is cut off at the limit; a body within the limit is served as before."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from tests.support.stack import start_web

LIMIT = 65536
pytestmark = pytest.mark.django_db  # the server's test database is set up for marked tests only


@pytest.fixture(scope="module")
def server(stack_env: dict[str, str]) -> Iterator[int]:
    proc = start_web({**stack_env, "AOB_MAX_BODY_BYTES": str(LIMIT)}, "uvicorn-limits")
    yield proc.port
    proc.stop()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    while len(rest) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65536)
        assert chunk
        rest += chunk
    return int(lines[0].split()[1]), headers, rest


def request_head(path: str, **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json",
             *(f"{k.replace('_', '-')}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_a_body_announced_in_gigabytes_is_refused_at_once_without_being_sent(server):
    with socket.create_connection(("127.0.0.1", server), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(request_head("/api/v1/runs", Content_Length="10000000000"))  # and not one byte of it
        status, headers, body = read_response(sock)
        elapsed = time.monotonic() - started
    assert status == 413
    assert elapsed < 2, elapsed
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    answer = json.loads(body)
    assert answer["error"] == "body_too_large"
    assert answer["details"] == {"rule": "body_too_large", "limit": LIMIT, "size": 10_000_000_000}


def test_a_chunked_body_is_cut_off_at_the_limit(server):
    chunk = b"x" * 16384
    sent = 0
    with socket.create_connection(("127.0.0.1", server), timeout=5) as sock:
        sock.sendall(request_head("/api/v1/auth/token", Transfer_Encoding="chunked"))
        try:
            while sent < 100 * LIMIT:  # far more than the limit, unless the server stops reading
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
                sock.settimeout(0.0)
                try:
                    if sock.recv(1, socket.MSG_PEEK):
                        break  # the answer has come
                except BlockingIOError:
                    pass
                finally:
                    sock.settimeout(5)
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, _, body = read_response(sock)
    assert status == 413
    assert json.loads(body)["details"]["rule"] == "body_too_large"
    assert sent < 100 * LIMIT  # answered while the body was still coming (socket buffers hold the rest)


def test_a_body_within_the_limit_is_served(server):
    payload = json.dumps({"username": "nobody", "password": "wrong"}).encode() + b" " * (LIMIT - 100)
    with socket.create_connection(("127.0.0.1", server), timeout=5) as sock:
        sock.sendall(request_head("/api/v1/auth/token", Content_Length=str(len(payload))) + payload)
        status, _, body = read_response(sock)
    assert status == 401 and json.loads(body)["error"] == "invalid_credentials"
