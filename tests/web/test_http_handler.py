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
