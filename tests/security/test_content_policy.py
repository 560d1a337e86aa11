"""The Content-Security-Policy every response carries: the pages, the admin, the approval page and
the API run no inline or foreign script, embed no plugin, cannot be rebased or framed, post forms and
open connections (their WebSocket included) to this server only. The API docs loosen their scripts,
images, fonts and workers, and nothing else. (The browser tests, with their console errors, show the
pages work under it: tests/web/test_hostile_pages.py and the others.)"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from approvals.models import Approval
from tests.conftest import stored_run
from workflows.services.definitions import workflow_save

STRICT = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'none'"],
    "frame-ancestors": ["'none'"],
    "form-action": ["'self'"],
}


def policy(response: Any) -> dict[str, list[str]]:
    header = response.headers.get("Content-Security-Policy")
    assert header, f"{response.status_code} {response.request['PATH_INFO']}: no Content-Security-Policy"
    directives = [part.split() for part in header.split(";") if part.strip()]
    return {name: values for name, *values in directives}


@pytest.fixture
def root(make_user: Any) -> Any:
    return make_user("root", is_staff=True, is_superuser=True)  # the admin's pages too


@pytest.fixture
def staff(root: Any) -> Client:
    client = Client()
    client.force_login(root)
    return client


@pytest.fixture
def pages(root: Any) -> list[str]:
    workflow_save(owner=root, tag="hello", definition={
        "nodes": [{"id": "a", "type": "transform", "config": {"expression": "1"}}], "edges": []})
    run = stored_run(root)
    approval = Approval.objects.create(run=run, node_id="a", approvers=["root"], message="<b>hi</b>")
    return ["/", "/workflows/hello/", "/workflows/new/?tag=x", "/workflows/hello/triggers/", "/runs/",
            f"/runs/{run.pk}/", "/approvals/", f"/approvals/{approval.pk}/", "/secrets/", "/admin/",
            f"/admin/approvals/approval/{approval.pk}/change/", f"/admin/workflows/run/{run.pk}/change/",
            "/api/v1/runs", f"/api/v1/approvals/{approval.pk}", "/api/v1/nowhere", "/runs/not-a-run/"]


def test_every_page_and_answer_carries_the_strict_policy(staff: Client, pages: list[str]) -> None:
    for path in pages:
        response = staff.get(path)
        assert response.status_code in (200, 404), (path, response.status_code)
        found = policy(response)
        assert {k: found.get(k) for k in STRICT} == STRICT, (path, found)
        # connections to this server only: its origin ('self') and its WebSocket origin, named for
        # the browsers whose 'self' does not cover ws: (the live pages would fall silent)
        assert found["connect-src"] == ["'self'", "ws://testserver"], (path, found)
        assert "'unsafe-inline'" not in found["script-src"] and "'unsafe-eval'" not in found["script-src"]


def test_the_login_page_and_a_signed_link_refused_carry_it_too(db: Any) -> None:
    """And keep their address to this server: a signed approval link's token is in its path, and the
    login page a visitor is sent to carries it in ``next`` (Django's ``same-origin`` default, kept)."""
    for path in ["/login/?next=/approvals/1/open/a-token", "/approvals/1/open/forged-token"]:
        response = Client().get(path)
        found = policy(response)
        assert {k: found.get(k) for k in STRICT} == STRICT, (path, found)
        assert response.headers["Referrer-Policy"] == "same-origin"


def test_over_https_the_socket_origin_is_wss(staff: Client) -> None:
    found = policy(staff.get("/approvals/", secure=True))
    assert found["connect-src"] == ["'self'", "wss://testserver"]


def test_a_host_not_allowed_gets_the_policy_without_a_socket_origin(db: Any) -> None:
    response = Client(HTTP_HOST="evil.example").get("/login/")
    assert response.status_code == 400
    assert policy(response)["connect-src"] == ["'self'"]


@pytest.mark.parametrize("path", ["/api/v1/docs/", "/api/v1/redoc/"])
def test_the_api_docs_loosen_their_scripts_images_fonts_and_workers_only(staff: Client, path: str) -> None:
    found = policy(staff.get(path))
    assert found["script-src"] == ["'self'", "'unsafe-inline'"]
    assert found["img-src"] == ["'self'", "data:", "blob:"]
    assert found["worker-src"] == ["'self'", "blob:"]
    assert {k: found.get(k) for k in STRICT if k != "script-src"} == {k: v for k, v in STRICT.items()
                                                                      if k != "script-src"}
    assert found["connect-src"] == ["'self'", "ws://testserver"]
