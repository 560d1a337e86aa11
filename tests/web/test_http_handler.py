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
    """``Turns``: at most ``per_client`` threads run one client's requests; as threads free up the
    clients waiting take them one request each, round and round; a waiter that goes away takes none."""
    import asyncio

    from aob_project.http_handler import Turns

    async def scenario() -> tuple[list[str], dict[str, int]]:
        turns, order = Turns(threads=3, per_client=2), []

        async def request(client: str, name: str) -> None:
            await turns.take(client)
            order.append(name)

        for name in ("a1", "a2"):
            await request("a", name)  # a takes its share at once
        waiting = [asyncio.create_task(request("a", n)) for n in ("a3", "a4")]
        await request("b", "b1")  # the last thread: b is under its share
        waiting += [asyncio.create_task(request("b", "b2")), asyncio.create_task(request("c", "c1")),
                    asyncio.create_task(request("c", "c2"))]
        gone = asyncio.create_task(request("d", "d1"))
        await asyncio.sleep(0)
        gone.cancel()  # went away while it waited
        await asyncio.sleep(0)
        for client in ("a", "a", "b", "a", "b", "c"):  # each request done frees its thread
            turns.give_back(client)
            await asyncio.sleep(0)
        await asyncio.gather(*waiting)
        return order, dict(turns.running)

    order, running = asyncio.run(scenario())

    # a's third waited though a thread freed (a at its share); then a, b, c in the order they waited
    assert order == ["a1", "a2", "b1", "a3", "b2", "c1", "a4", "c2"]
    assert running == {"a": 1, "c": 1}  # a4 and c2 still hold theirs; d took none


def test_a_client_is_its_token_else_its_session_else_its_address(settings: Any) -> None:
    from aob_project.http_handler import client_of

    def scope(headers: list[tuple[bytes, bytes]], address: str = "10.0.0.1") -> dict[str, Any]:
        return {"headers": headers, "client": (address, 1234)}

    token = client_of(scope([(b"authorization", b"Token abc")]))
    assert token == client_of(scope([(b"authorization", b"Bearer abc")], "10.0.0.2"))  # wherever it comes from
    assert token != client_of(scope([(b"authorization", b"Token abd")]))
    session = client_of(scope([(b"cookie", f"a=1; {settings.SESSION_COOKIE_NAME}=xyz".encode())]))
    assert session == client_of(scope([(b"cookie", f"{settings.SESSION_COOKIE_NAME}=xyz".encode())], "10.0.0.9"))
    assert client_of(scope([])) == client_of(scope([(b"cookie", b"other=1")]))  # the address
    assert client_of(scope([])) != client_of(scope([], "10.0.0.2"))
    assert "abc" not in token and len(token) == 32  # no credential kept as the key
