"""A read of a stored value whole (up to 32 MiB, built in the web process) holds one of its user's
``AOB_WHOLE_READS_AT_ONCE_PER_USER`` places until its answer has been sent: a client that reads its
answers slowly, or not at all, keeps each in the web process's memory that long, and past the
limit that user's next one is refused at once; another user's, and the user's bounded reads, are
answered as before. Real uvicorn serving the ASGI app, real Redis, raw sockets that do not read."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import set_inputs, stored_run
from tests.engine.flow import wait_until
from tests.support.stack import start_web

pytestmark = [pytest.mark.ratelimit]

PAD = 12 * 1024 * 1024  # past what the two sockets' kernel buffers hold between the web and a client that does not read


def serve(stack_env: dict[str, str], at_once: int, **env_extra: str) -> Iterator[tuple[str, int]]:
    proc = start_web({**stack_env, "AOB_WHOLE_READS_AT_ONCE_PER_USER": str(at_once), **env_extra}, "uvicorn")
    try:
        yield proc.url, proc.port
    finally:
        proc.stop()


@pytest.fixture
def limited(transactional_db: Any, stack_env: dict[str, str]) -> Iterator[tuple[str, int]]:
    yield from serve(stack_env, 2)


@pytest.fixture
def impatient(transactional_db: Any, stack_env: dict[str, str]) -> Iterator[tuple[str, int]]:
    yield from serve(stack_env, 1, AOB_WHOLE_READ_SEND_S="2")


@pytest.fixture
def unlimited(transactional_db: Any, stack_env: dict[str, str]) -> Iterator[tuple[str, int]]:
    yield from serve(stack_env, 0)


class Slow:
    """A client that asks for a path and reads the answer's head only, then nothing (a 4 KiB receive
    window): the rest of the answer waits in the web process."""

    def __init__(self, port: int, path: str, token: str) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: the window
        self.sock.settimeout(20)
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Token {token}\r\n\r\n".encode())
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = self.sock.recv(4096)
            assert chunk, f"the web closed the connection: {received!r}"
            received += chunk
        head, self.body = received.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        headers = dict(line.split(": ", 1) for line in lines[1:])
        self.length = int(headers.get("content-length", "0"))

    def read_until_closed(self) -> int:
        """Read what the web sends until it closes the connection: the body's bytes received."""
        got = len(self.body)
        while chunk := self.sock.recv(1 << 20):
            got += len(chunk)
        self.close()
        return got

    def read_to_end(self) -> None:
        got = len(self.body)
        while got < self.length:
            chunk = self.sock.recv(1 << 20)
            assert chunk, f"the answer ended at {got} of {self.length} bytes"
            got += len(chunk)
        self.close()

    def close(self) -> None:
        self.sock.close()


def held(port: int, path: str, token: str) -> Slow | None:
    """A slow client's read, or None if it was refused (and closed)."""
    read = Slow(port, path, token)
    if read.status == 200:
        return read
    assert read.status == 429, read.status
    read.close()
    return None


def test_a_user_s_whole_reads_in_flight_are_limited_until_their_answers_are_sent(limited, make_user):
    base, port = limited
    alice, bob = make_user("alice"), make_user("bob")
    run = stored_run(alice)
    set_inputs(run, {"pad": "x" * PAD})
    path, token = f"/api/v1/runs/{run.pk}/inputs", alice.auth_token.key
    auth = {"Authorization": f"Token {token}"}

    first, second = Slow(port, path, token), Slow(port, path, token)
    assert (first.status, second.status) == (200, 200) and first.length > PAD
    refused = httpx.get(f"{base}{path}", headers=auth, timeout=20)
    assert refused.status_code == 429, refused.text[:300]
    body = refused.json()
    assert body["error"] == "read_concurrency_exceeded", body
    assert body["details"]["limit"] == 2 and body["details"]["in_flight"] == 2
    assert refused.headers["Retry-After"] == "1"

    # the user's bounded reads are answered; so is another user's whole read
    assert httpx.get(f"{base}/api/v1/runs/{run.pk}", headers=auth, timeout=20).status_code == 200
    bobs = stored_run(bob)
    set_inputs(bobs, {"pad": "y" * (2 * 1024 * 1024)})
    other = httpx.get(f"{base}/api/v1/runs/{bobs.pk}/inputs", headers={"Authorization": f"Token {bob.auth_token.key}"},
                      timeout=20)
    assert other.status_code == 200 and len(other.content) > 2 * 1024 * 1024

    # an answer read to its end gives its place back; so does a client gone in the middle of one
    first.read_to_end()
    third = wait_until(lambda: held(port, path, token), timeout=10)
    assert held(port, path, token) is None  # the second and the third hold both places
    second.close()
    fourth = wait_until(lambda: held(port, path, token), timeout=10)
    assert held(port, path, token) is None
    third.read_to_end()
    fourth.read_to_end()


def test_negative_control_without_the_limit_a_third_unread_answer_is_built(unlimited, make_user):
    """The same two unread answers, with ``AOB_WHOLE_READS_AT_ONCE_PER_USER=0``: the third is built
    and sent too (so the test above would fail without the places)."""
    _, port = unlimited
    alice = make_user("alice")
    run = stored_run(alice)
    set_inputs(run, {"pad": "x" * PAD})
    path, token = f"/api/v1/runs/{run.pk}/inputs", alice.auth_token.key
    reads = [Slow(port, path, token) for _ in range(3)]
    assert [read.status for read in reads] == [200, 200, 200]
    for read in reads:
        read.close()


def test_a_client_that_does_not_read_its_answer_in_time_is_cut_off_and_its_place_given_back(impatient, make_user):
    """The places are counted until the answers are sent; an answer's place is also forgotten
    (``ratelimit``: its window) after its sending's deadline and a minute more. A client that never
    reads would otherwise keep the answer in the web's memory past that, uncounted: at
    ``AOB_WHOLE_READ_SEND_S`` (2 s here) it is cut off, and its place is given back then."""
    _, port = impatient
    alice = make_user("alice")
    run = stored_run(alice)
    set_inputs(run, {"pad": "x" * PAD})
    path, token = f"/api/v1/runs/{run.pk}/inputs", alice.auth_token.key

    stalled = Slow(port, path, token)
    assert stalled.status == 200
    assert held(port, path, token) is None  # its one place is taken
    admitted = wait_until(lambda: held(port, path, token), timeout=15, what="the place given back at the deadline")
    assert stalled.read_until_closed() < stalled.length  # cut off, short of its Content-Length
    admitted.close()
