"""The web tests' live server: uvicorn serving the ASGI app, as `make up` runs it."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from tests.support.stack import Proc


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def web(engine: Any, stack_env: dict[str, str]) -> Iterator[str]:
    """uvicorn serving the ASGI app (HTTP and WebSocket) on a free loopback port, on the test database,
    with the test stack's environment (its rate limits too: the global write limit is counted in
    the shared Redis, across every test of the last minute)."""
    port = free_port()
    env = dict(stack_env)
    proc = Proc("uvicorn", [sys.executable, "-m", "uvicorn", "aob_project.asgi:application", "--host", "127.0.0.1",
                            "--port", str(port)], env, ready_line="Uvicorn running on")
    yield f"http://127.0.0.1:{port}"
    proc.stop()


@pytest.fixture
def root(make_user: Any) -> Any:
    """A superuser, for the admin's pages."""
    return make_user("root", is_staff=True, is_superuser=True)


@pytest.fixture
def admin_client(root: Any) -> Client:
    client = Client()
    client.force_login(root)
    return client
