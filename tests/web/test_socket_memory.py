"""What a web process holds for sockets whose clients stop reading (a red-team helper's findings).

Measured on a real uvicorn started as the suite's ``web`` fixture starts it, with psutil's RSS."""

from __future__ import annotations

import base64
import os
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import psutil

from tests.conftest import stored_run

FRAME_BYTES = 60_000  # an approval_required event's data: a gate's message, within EVENT_VALUE_MAX_BYTES (64 KiB)


def uvicorn_process(web: str) -> psutil.Process:
    port = str(urlsplit(web).port)
    for child in psutil.Process().children(recursive=True):
        try:
            cmdline = child.cmdline()
        except psutil.Error:
            continue
        if "uvicorn" in " ".join(cmdline) and port in cmdline:
            return child
    raise AssertionError(f"no uvicorn on port {port}")


def silent_socket(web: str, path: str, token: str) -> socket.socket:
    """A WebSocket opened by hand that never reads a byte after its handshake (a small receive
    buffer, so the server's writes block soon: a client that stopped reading, or reads slowly)."""
    parts = urlsplit(web)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((parts.hostname, parts.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: {web}\r\n"
                  f"Authorization: Token {token}\r\n\r\n").encode())
    head = b""
    sock.settimeout(30)
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, "closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def test_one_users_sockets_that_stop_reading_cannot_take_the_web_process_memory(web: str, make_user: Any) -> None:
    """A user opens a socket on each of 8 of their runs (``AOB_WS_MAX_PER_USER`` allows 50) and stops
    reading. Each run's events keep coming (a run's gates each say ``approval_required`` with their
    message, up to 64 KiB of data an event). The consumer's send waits on the client (websockets'
    drain), so it stops taking its channel's messages; another socket of the process (here another
    user's, idle) keeps channels_redis's receive loop going, which moves every message for the
    stalled channel into that channel's in-process buffer (``receive_buffer``, a ``BoundedQueue`` of
    ``capacity`` = 1000 in ``CHANNEL_LAYERS``). Nothing expires there (``expiry`` is Redis's), so a
    stalled socket holds up to 1000 x 64 KiB = 64 MiB, and one user's 50 up to 3.2 GB, of the one
    web process every user shares. One user's stalled sockets should hold a bounded few MiB."""
    from django.db import transaction

    from workflows.engine.events import append

    heavy, other = make_user("heavy"), make_user("other")
    runs = [stored_run(heavy) for _ in range(8)]
    quiet = stored_run(other)
    proc = uvicorn_process(web)
    # the other user's socket: open and idle, as most are; it keeps the channel layer's receive loop turning
    watcher = silent_socket(web, f"/ws/runs/{quiet.pk}/", other.auth_token.key)
    stalled = [silent_socket(web, f"/ws/runs/{run.pk}/", heavy.auth_token.key) for run in runs]
    time.sleep(1)
    before = proc.memory_info().rss
    started = time.monotonic()
    message = "x" * FRAME_BYTES
    for batch in range(20):  # 50 events a run at a time: 1,000 a run in all
        for run in runs:
            with transaction.atomic():
                append(run.pk, heavy.pk, [("approval_required", f"gate{batch}_{i}",
                                           {"approval_id": batch * 50 + i, "message": message, "approvers": ["x"]})
                                          for i in range(50)])
    time.sleep(3)
    after = proc.memory_info().rss
    elapsed = time.monotonic() - started
    grown = (after - before) / 2**20
    for sock in [watcher, *stalled]:
        sock.close()
    print(f"rss before {before / 2**20:.0f} MiB, after {after / 2**20:.0f} MiB (+{grown:.0f}) in {elapsed:.1f} s")
    assert grown < 128, (f"8 sockets of one user that stopped reading grew the web process by {grown:.0f} MiB "
                         f"({before / 2**20:.0f} -> {after / 2**20:.0f} MiB in {elapsed:.1f} s)")
