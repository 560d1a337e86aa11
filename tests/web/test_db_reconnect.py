"""The web keeps a database connection per thread (aob_project/http_handler.py). When PostgreSQL
drops those connections (a restart, a failover, an idle timeout), the next requests still succeed:
each thread checks its kept connection before reusing it (AOB_WEB_DB_HEALTH_CHECKS). Without the
check (the negative control) a request lands on a dead connection, and the API answers it with a
JSON 503 naming the rule, never a 500."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.db import connection
from django.test import Client

from aob_project import http_handler
from tests.engine.flow import wait_until
from tests.support.stack import Proc, start_web


def web_backends(application_name: str) -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", [application_name])
        return [row[0] for row in cursor.fetchall()]


def drop_backends(application_name: str) -> int:
    """What a PostgreSQL restart does to the web's kept connections: the server ends them."""
    pids = web_backends(application_name)
    with connection.cursor() as cursor:
        for pid in pids:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    wait_until(lambda: not web_backends(application_name), what="the web's connections ended")
    return len(pids)


@pytest.fixture
def live_web(transactional_db: Any, stack_env: dict[str, str]) -> Iterator[Any]:
    """uvicorn on the test database whose connections carry a name of their own (libpq's
    ``PGAPPNAME``, to find them in pg_stat_activity); ``start(checks)`` with the web's health
    checks on or off."""
    procs: list[Proc] = []

    def start(checks: bool) -> tuple[str, str]:
        name = f"aob-web-{uuid.uuid4().hex[:8]}"
        env = dict(stack_env, AOB_WEB_DB_HEALTH_CHECKS="true" if checks else "false", AOB_DB_HEALTH_CHECKS="false",
                   PGAPPNAME=name)
        procs.append(start_web(env, "uvicorn"))
        return procs[-1].url, name

    yield start
    for proc in procs:
        proc.stop()


def concurrently(base: str, token: str, count: int, path: str = "/api/v1/workflows") -> list[httpx.Response]:
    """``count`` requests at once, so several of the web's threads answer (one after another, an
    idle thread would answer them all). ``token``: the API's, or for a page a session's key."""
    def get(_: int) -> httpx.Response:
        auth = ({"cookies": {settings.SESSION_COOKIE_NAME: token}} if not path.startswith("/api/") else
                {"headers": {"Authorization": f"Token {token}"}})
        with httpx.Client(base_url=base, timeout=30, **auth) as client:
            return client.get(path)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(get, range(count)))


def answers_after_drop(base: str, name: str, token: str, path: str = "/api/v1/workflows") -> list[httpx.Response]:
    threads = settings.AOB_WEB_THREADS
    assert all(a.status_code == 200 for a in concurrently(base, token, threads, path))
    kept = len(web_backends(name))
    assert kept >= 2, f"only {kept} of the web's threads kept a connection"
    assert drop_backends(name) == kept
    return concurrently(base, token, threads, path) + concurrently(base, token, threads, path)


def session_of(user: Any) -> str:
    """A logged-in session's key, stored where the web reads sessions."""
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def test_requests_after_postgres_drops_the_webs_connections_succeed(live_web: Any, user: Any) -> None:
    base, name = live_web(checks=True)
    answers = answers_after_drop(base, name, user.auth_token.key)
    assert [a.status_code for a in answers] == [200] * len(answers), [a.text for a in answers if a.status_code != 200]
    assert web_backends(name), "the web opened new connections"


def test_control_without_the_check_a_request_lands_on_a_dead_connection(live_web: Any, user: Any) -> None:
    base, name = live_web(checks=False)
    answers = answers_after_drop(base, name, user.auth_token.key)
    failed = [a for a in answers if a.status_code != 200]
    assert failed, "every request succeeded without the check: the test no longer drops a kept connection"
    for answer in failed:  # a clear, retryable JSON error, not a 500
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"] == "service_unavailable"
        assert answer.json()["details"]["rule"] == "database_unavailable"
        assert answer.headers["Retry-After"] == "1"


def test_control_a_page_on_a_dead_connection_is_the_same_503(live_web: Any, user: Any) -> None:
    """The pages (the web UI here) answer a database error as the API does
    (workflows.middleware.DatabaseErrorMiddleware); without it they answered a 500."""
    base, name = live_web(checks=False)
    answers = answers_after_drop(base, name, session_of(user), path="/runs/")
    failed = [a for a in answers if a.status_code != 200]
    assert failed, "every page succeeded without the check: the test no longer drops a kept connection"
    for answer in failed:
        assert answer.status_code == 503, answer.text
        assert answer.json()["details"]["rule"] == "database_unavailable"
        assert answer.headers["Retry-After"] == "1"


def last_statement(pid: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid])
        row = cursor.fetchone()
    return row[0] if row else ""


@pytest.mark.parametrize("socket_first", [True, False])
def test_a_quiet_kept_connection_is_reused_without_a_statement_and_a_dropped_one_is_replaced(
        transactional_db: Any, socket_first: bool) -> None:
    """In one web thread: the check sends nothing while the server has said nothing, and finds
    the connection the server ended. The control (Django's check alone, ``socket_first`` off)
    sends its ``SELECT 1``, so the first assertion can see a statement."""
    seen: dict[str, Any] = {}

    def web_thread() -> None:
        try:
            if socket_first:
                http_handler._check_kept_connections()
            else:
                connection.settings_dict = {**connection.settings_dict, "CONN_HEALTH_CHECKS": True}
            marker = f"SELECT 'kept-{uuid.uuid4().hex}'"
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                pid = cursor.fetchone()[0]
                cursor.execute(marker)  # the backend's last statement, until another is sent
            connection.health_check_done = False  # a new request
            connection.close_if_health_check_failed()
            seen["quiet"] = (connection.connection is not None, marker, pid)
            seen["terminate"].wait(30)  # the server ends this thread's connection meanwhile
            connection.health_check_done = False
            connection.close_if_health_check_failed()
            seen["dropped"] = connection.connection is None
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                seen["new_pid"] = cursor.fetchone()[0]
        except Exception as exc:
            seen["error"] = repr(exc)
            raise
        finally:
            connection.close()

    seen["terminate"] = threading.Event()
    thread = threading.Thread(target=web_thread)
    thread.start()
    wait_until(lambda: "quiet" in seen or not thread.is_alive(), what="the first check")
    kept, marker, pid = seen["quiet"]
    assert kept
    assert (last_statement(pid) == marker) is socket_first, last_statement(pid)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    wait_until(lambda: not web_backends_by_pid(pid), what="the backend ended")
    seen["terminate"].set()
    thread.join(30)
    assert "error" not in seen, seen.get("error")
    assert seen["dropped"] and seen["new_pid"] != pid


def web_backends_by_pid(pid: int) -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE pid = %s", [pid])
        return [row[0] for row in cursor.fetchall()]
