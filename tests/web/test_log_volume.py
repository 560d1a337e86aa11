"""What one request may write to the web's log: bounded, whatever its path holds."""

from __future__ import annotations

import socket
import time
from typing import Any

from tests.support.stack import start_web


def test_an_anonymous_request_writes_a_bounded_log(stack_env: dict[str, Any]) -> None:
    """uvicorn (as ``make up`` and compose run it) takes a request line up to about 64 KB, and a path
    no route has is a 404 before any rate limit: its access line and Django's ``Not Found`` warning
    (the path again in its ``request``) wrote the path three times, about 180 KB of log for each
    anonymous request (a red-team helper's measurement), as often as a visitor sends them. Now
    every line of the web process, uvicorn's access lines included, is clipped
    (``aob_project/logs.py``)."""
    proc = start_web(dict(stack_env), "uvicorn")
    port = proc.port
    try:
        before = proc.log.stat().st_size
        path = "/nothing-here/" + "a" * 60_000
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 404"), answer[:200]
        deadline = time.monotonic() + 10
        while True:  # both lines written: Django's warning, then the access line after the answer
            log = proc.log.read_bytes()[before:]
            if b"Not Found: /nothing-here" in log and b'"GET /nothing-here' in log:
                break
            assert time.monotonic() < deadline, log[-2000:]
            time.sleep(0.05)
        assert len(log) < 16_000, len(log)
    finally:
        proc.stop()


def test_an_approval_link_s_token_is_left_out_of_the_web_s_log(stack_env: dict[str, Any]) -> None:
    """A notification's link carries its token in the path (opening it still needs the approver's
    login): uvicorn's access line wrote it, so did Django's warning for a refused link (another
    user's: "Forbidden: /approvals/5/open/…") and the login page's ``next``."""
    proc = start_web(dict(stack_env), "uvicorn")
    try:
        before = proc.log.stat().st_size
        for path in ("/approvals/5/open/SECRET-TOKEN-ONE", "/login/?next=/approvals/5/open/SECRET-TOKEN-TWO",
                     "/login/?next=%2Fapprovals%2F5%2Fopen%2FSECRET-TOKEN-THREE"):
            with socket.create_connection(("127.0.0.1", proc.port), timeout=10) as sock:
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
                while sock.recv(65536):
                    pass
        deadline = time.monotonic() + 10
        while True:  # the three access lines written, and Django's warning for the link it refused
            log = proc.log.read_bytes()[before:]
            if log.count(b"[token]") >= 4:
                break
            assert time.monotonic() < deadline, log[-3000:]
            time.sleep(0.05)
        assert b"SECRET-TOKEN" not in log, log[-3000:]
    finally:
        proc.stop()
