"""The web server's HTTP handler (aob_project/http_handler.py) on a live uvicorn: requests run in
a fixed pool of threads that keep their database connections, and everything Django's own ASGI
handler did still happens: middleware (request id, session and CSRF for the pages), the API's
JSON errors, request_finished."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.db import connection

from workflows.services.definitions import workflow_save


def sessions() -> int:
    """PostgreSQL sessions ever opened on the test database."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        return int(cursor.fetchone()[0])


def test_api_requests_reuse_their_database_connections(web: str, user: Any) -> None:
    workflow_save(owner=user, tag="one", definition={
        "nodes": [{"id": "t", "type": "transform", "config": {"expression": "1"}}], "edges": []})
    headers = {"Authorization": f"Token {user.auth_token.key}"}
    requests = 3 * settings.AOB_WEB_THREADS
    with httpx.Client(base_url=web, headers=headers, timeout=30) as client:
        run_id = client.post("/api/v1/workflows/one/execute", json={"inputs": {}}).json()["run_id"]
        before = sessions()
        for i in range(requests):
            started = client.post("/api/v1/workflows/one/execute", json={"inputs": {"i": i}})
            assert started.status_code == 201, started.text
            assert client.get(f"/api/v1/runs/{run_id}/details").status_code == 200
        opened = sessions() - before
    # Django's own ASGI handler ran each request in a new thread, so each opened a connection
    # (2 × requests here); the pool's threads keep theirs (the workers may open a few meanwhile).
    assert opened < requests, f"{opened} new database sessions for {2 * requests} requests"


def test_request_id_and_json_errors_through_the_handler(web: str, user: Any) -> None:
    headers = {"Authorization": f"Token {user.auth_token.key}", "X-Request-ID": "handler-test-1"}
    with httpx.Client(base_url=web, headers=headers, timeout=30) as client:
        missing = client.get("/api/v1/runs/00000000-0000-0000-0000-000000000000/details")
        assert missing.status_code == 404
        assert missing.json()["error"] == "not_found"
        assert missing.headers["X-Request-ID"] == "handler-test-1"
        bad = client.post("/api/v1/runs", content=b"{not json", headers={"Content-Type": "application/json"})
        assert bad.status_code == 400 and "error" in bad.json()


@pytest.mark.browser  # the live server checks Django's default password hashers (tests/conftest.py)
def test_session_login_with_csrf_through_the_handler(web: str, make_user: Any) -> None:
    make_user("carol", password="carol-pass-123")
    with httpx.Client(base_url=web, timeout=30) as client:
        form = client.get("/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
        assert token, form.text[:500]
        refused = client.post("/login/", data={"username": "carol", "password": "carol-pass-123"})
        assert refused.status_code == 403  # no CSRF token: the middleware still runs
        logged_in = client.post("/login/", data={"username": "carol", "password": "carol-pass-123",
                                                 "csrfmiddlewaretoken": token.group(1)},
                                headers={"Referer": f"{web}/login/"})
        assert logged_in.status_code == 302
        page = client.get("/")
        assert page.status_code == 200 and "carol" in page.text


@pytest.fixture
def web_quick_bodies(engine: Any, stack_env: dict[str, str]) -> Any:
    """uvicorn whose request bodies must be whole within a second (AOB_BODY_READ_S)."""

    from tests.support.stack import start_web

    proc = start_web({**stack_env, "AOB_BODY_READ_S": "1"}, "uvicorn-bodies")
    yield proc.port
    proc.stop()


def test_a_body_not_whole_within_its_deadline_is_answered_408_and_let_go(web_quick_bodies: int) -> None:
    """A body was read with no deadline, before any view: 150 connections that each sent all but a
    byte of a 1 MiB body held 165 MiB of the web process for as long as they liked (a red-team
    helper's finding). Each is now answered 408 and closed; a body that arrives in time is served."""
    import json
    import socket

    def stalled() -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", web_quick_bodies), timeout=20)
        sock.sendall(b"POST /api/v1/workflows/validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100000\r\n\r\n" + b" " * 99_999)
        return sock

    def answer(sock: socket.socket) -> bytes:
        received = b""
        while chunk := sock.recv(65536):  # until the server closes it
            received += chunk
        return received

    socks = [stalled() for _ in range(5)]
    for sock in socks:
        head, _, body = answer(sock).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), head
        assert json.loads(body)["details"] == {"rule": "body_read_timeout", "limit_s": 1.0}
        sock.close()
    served = httpx.post(f"http://127.0.0.1:{web_quick_bodies}/api/v1/workflows/validate", json={"workflow": {}})
    assert served.status_code == 401  # whole in time: on to the view (which asks who is calling)


def test_the_pool_s_threads_are_taken_by_clients_in_turn() -> None:
    """``Turns``: at most ``per_client`` threads run one client's requests, at most ``per_address``
    one address's; as threads free up the clients waiting take them one request each, round and
    round; a waiter that goes away takes none, even as its turn comes."""
    import asyncio

    from aob_project.http_handler import Turns

    async def scenario() -> tuple[list[str], dict[str, int], int]:
        turns, order = Turns(threads=4, per_client=2, per_address=3), []

        async def request(client: str, name: str, address: str = "") -> None:
            await turns.take(client, address or client)
            order.append(name)

        async def done(client: str, address: str = "") -> None:  # a request finished: its thread is free
            turns.give_back(client, address or client)
            await asyncio.sleep(0)

        for client, name in (("a", "a1"), ("a", "a2"), ("x", "x1")):
            await request(client, name, "x")  # a's share, and x's own from the same address: its third
        await request("b", "b1")  # the last thread
        waiting = [asyncio.create_task(request(*args)) for args in (("a", "a3", "x"), ("x", "x2", "x"),
                                                                    ("b", "b2"), ("c", "c1"), ("d", "d1"))]
        await asyncio.sleep(0)
        waiting.pop().cancel()  # d went away while it waited
        await asyncio.sleep(0)
        await done("b")  # a at its share, x's address at its: b's second first
        await done("a", "x")  # then a's third, x's second, c's first, in the order they waited
        await done("x", "x")
        await done("b")
        await asyncio.wait_for(asyncio.gather(*waiting), 5)
        late = asyncio.create_task(request("e", "e1"))  # waits: no thread free
        await asyncio.sleep(0)
        turns.give_back("c", "c")  # its turn comes ...
        late.cancel()  # ... as it goes: the thread is given back, not kept
        await asyncio.gather(late, return_exceptions=True)
        return order, dict(turns.running), turns.free

    order, running, free = asyncio.run(asyncio.wait_for(scenario(), 30))

    assert order == ["a1", "a2", "x1", "b1", "b2", "a3", "x2", "c1"]
    assert running == {"a": 2, "x": 1, "@x": 3} and free == 1, (running, free)


def test_a_client_is_its_token_on_the_api_else_its_address(settings: Any) -> None:
    """Not a session: one user holds as many as the login limit lets them log in, and a cookie
    header can name several; nor a token on a page, which reads a session alone (the reviewer's)."""
    from aob_project.http_handler import clients_of

    def scope(headers: list[tuple[bytes, bytes]], address: str = "10.0.0.1", path: str = "/api/v1/runs") -> dict:
        return {"headers": headers, "client": (address, 1234), "path": path}

    token, at = clients_of(scope([(b"authorization", b"Token abc")]))
    assert (token, at) == clients_of(scope([(b"authorization", b"Bearer \tabc ")]))  # as DRF splits it
    assert token != clients_of(scope([(b"authorization", b"Token abd")]))[0]
    assert token == clients_of(scope([(b"authorization", b"Token abc")], "10.0.0.2"))[0]
    assert at != clients_of(scope([(b"authorization", b"Token abc")], "10.0.0.2"))[1]
    sessions = {clients_of(scope([(b"cookie", f"{settings.SESSION_COOKIE_NAME}=s{i}".encode())]))
                for i in range(3)}
    assert sessions == {(at, at)}  # any session: the address
    assert clients_of(scope([(b"authorization", b"Token junk")], path="/runs/")) == (at, at)  # a page
    assert "abc" not in token and len(token) == 32  # no credential kept as the key
