"""The web tests' live server: uvicorn serving the ASGI app, as `make up` runs it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from tests.support.stack import start_web


@pytest.fixture
def web(engine: Any, stack_env: dict[str, str]) -> Iterator[str]:
    """The web process as production starts it (``python -m aob.web``) on a free loopback port, on the test database,
    with the test stack's environment (its rate limits too: the global write limit is counted in
    the shared Redis, across every test of the last minute)."""
    proc = start_web(dict(stack_env), "uvicorn")
    yield proc.url
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
