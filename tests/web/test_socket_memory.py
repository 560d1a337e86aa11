"""What one user's or one address's sockets may take of a web process that every user shares: the
memory of sockets whose clients stop reading (a live frame is at most ~4 KiB,
``events.live_frame``, and a channel holds 100), and the lookups of handshakes with made-up
credentials (``consumers.AnonymousLimit``). Each failed on the code before (a red-team helper's
findings), measured on a real uvicorn, memory with psutil's RSS."""

from __future__ import annotations

import base64
import os
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import psutil
import pytest

from tests.conftest import stored_run

FRAME_BYTES = 60_000  # an approval_required event's data: a gate's message, within EVENT_VALUE_MAX_BYTES (64 KiB)

# web processes of their own, flooded and starved from outside: the whole system (make test-system)
pytestmark = pytest.mark.system


def uvicorn_process(web: str) -> psutil.Process:
    port = str(urlsplit(web).port)
    for child in psutil.Process().children(recursive=True):
        try:
            cmdline = child.cmdline()
        except psutil.Error:
            continue
        if "aob.web" in cmdline and port in cmdline:
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
    for batch in range(8):  # 50 events a run at a time: 400 a run in all (before: some 170 MiB held)
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
    assert grown < 64, (f"8 sockets of one user that stopped reading grew the web process by {grown:.0f} MiB "
                         f"({before / 2**20:.0f} -> {after / 2**20:.0f} MiB in {elapsed:.1f} s)")


# An anonymous client, in a process of its own: ``k`` handshakes at a time with a made-up token and
# session, again and again for ``seconds``; prints how many were judged (closed 4401 after the lookups).
FLOOD = r'''
import asyncio, os, sys, time
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
base, origin, path, k, seconds = sys.argv[1:6]
k, seconds = int(k), float(seconds)
judged = other = 0
async def one(until):
    global judged, other
    while time.monotonic() < until:
        try:
            async with connect(base + path, origin=origin, open_timeout=60, additional_headers={
                    "Authorization": "Token " + os.urandom(20).hex(), "Cookie": "sessionid=" + os.urandom(16).hex()}) as ws:
                await ws.recv()
        except ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.code == 4401:
                judged += 1
            else:
                other += 1
        except Exception:
            other += 1
async def main():
    until = time.monotonic() + seconds
    await asyncio.gather(*(one(until) for _ in range(k)))
    print(judged, other, flush=True)
asyncio.run(main())
'''


def test_anonymous_handshakes_with_made_up_credentials_are_limited_per_address(engine: Any, stack_env: dict[str, str],
                                                                              make_user: Any) -> None:
    """HTTP requests without a valid identity are limited per client address
    (``AOB_RATE_ANON_PER_MIN``, 60 a minute here as by default); a WebSocket handshake is not: each
    one with a made-up token and session is judged by reading the session and the token from the
    database, on the one thread every socket's database reads in the web process share
    (``database_sync_to_async``), outside the per-user turns (``consumers.turns``), with no limit at
    all. One address's handshakes past the limit should be refused before any lookup (as HTTP's
    401s are counted and refused); meanwhile another user's socket opening is measured too."""
    import asyncio
    import subprocess
    import sys

    from websockets.asyncio.client import connect

    from tests.support.stack import start_web

    proc = start_web({**stack_env, "AOB_RATE_ANON_PER_MIN": "60"}, "uvicorn")
    web = proc.url
    base = f"ws://127.0.0.1:{proc.port}"
    try:
        other = make_user("other")
        mine = stored_run(other)

        async def opening_times() -> list[float]:
            times = []
            for _ in range(5):
                started = time.monotonic()
                async with connect(f"{base}/ws/runs/{mine.pk}/", origin=web, open_timeout=120,
                                   additional_headers={"Authorization": f"Token {other.auth_token.key}"},
                                   local_addr=("127.0.0.2", 0)):  # another address than the flood's
                    times.append(round(time.monotonic() - started, 3))
                await asyncio.sleep(0.2)
            return times

        control = asyncio.run(opening_times())
        flood = subprocess.Popen([sys.executable, "-c", FLOOD, base, web, f"/ws/runs/{mine.pk}/", "100", "3"],
                                 stdout=subprocess.PIPE, text=True)
        time.sleep(1)
        loaded = asyncio.run(opening_times())
        out, _ = flood.communicate(timeout=120)
        judged, refused_otherwise = (int(n) for n in out.split())
    finally:
        proc.stop()
    print(f"judged {judged} anonymous handshakes in 3 s from one address ({refused_otherwise} otherwise); "
          f"another user's socket opened in {loaded} s (control {control})")
    assert judged <= 60, (f"one address had {judged} anonymous handshakes judged (a session and a token read each) "
                          f"in 3 s, past the 60 a minute its HTTP requests get; another user's socket took "
                          f"{loaded} s to open meanwhile (control {control})")
