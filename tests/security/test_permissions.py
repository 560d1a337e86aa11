"""Who may touch what, and the browser-facing defences: another user's workflows, artifacts, runs,
events, patches and approvals are a 404 on every endpoint; an approver who is not the owner sees and
decides the approvals asked of them, and nothing else of the owner's; session writes need CSRF;
CORS is off; production cookies are secure; WebSockets check the origin; secrets are never logged."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import connections
from rest_framework.test import APIClient

from aob_project.asgi import application
from aob_project.logs import formatter as log_format
from tests.api.factories import assert_error
from tests.approvals.runs import wait_until
from tests.conftest import client_for, wait_for_run
from tests.security.conftest import HELLO, World, add_node_after, state, swapped_worker
from tests.support import stack
from workflows.models import NodeRun
from workflows.services.runs import run_start

API = "/api/v1"
PASSWORD = "s3cret-pass!"  # make_user's


@pytest.fixture
def carol(make_user: Any) -> Any:
    """Owns nothing and is asked nothing."""
    return make_user("carol")


def artifacts(world: World) -> list[str]:
    """One artifact of each kind alice can read: a workflow version, a run's definition, a node's
    output, a patch and the definition it made."""
    output = NodeRun.objects.filter(run=world.finished, node_id="done").values_list("output_artifact_id", flat=True)
    return [world.workflow.current_version.artifact_id, world.waiting.base_artifact_id, output.get(),
            world.patch.patch_artifact_id, world.patch.after_artifact_id]


def run_endpoints(world: World) -> list[tuple[str, str, Any]]:
    return [*run_reads(world), *run_writes(world)]


def run_reads(world: World) -> list[tuple[str, str, Any]]:
    reads = [("GET", f"/runs/{run.pk}{suffix}", None) for run in (world.finished, world.waiting)
             for suffix in ("", "/details", "/events", "/events?after=1", "/patches", "/inputs", "/output")]
    return [*reads, ("GET", f"/runs/{world.waiting.pk}/patches/{world.patch.seq}", None),
            ("GET", f"/runs/{world.finished.pk}/nodes/done/iterations/0/output", None),
            ("GET", f"/runs/{world.waiting.pk}/nodes/review/iterations/0/input", None)]


def run_writes(world: World) -> list[tuple[str, str, Any]]:
    return [("POST", f"/runs/{world.waiting.pk}/cancel", None), ("POST", f"/runs/{world.finished.pk}/cancel", None),
            ("POST", f"/runs/{world.finished.pk}/nodes/done/replay", None),
            ("POST", f"/runs/{world.waiting.pk}/nodes/prepare/replay", None),
            ("POST", f"/runs/{world.waiting.pk}/patches", {"operations": add_node_after("refund", "evil")})]


def workflow_endpoints(tag: str) -> list[tuple[str, str, Any]]:
    return [("GET", f"/workflows/{tag}", None), ("GET", f"/workflows/{tag}/versions", None),
            ("GET", f"/workflows/{tag}/versions/0", None), ("GET", f"/workflows/{tag}/runs", None),
            ("POST", f"/workflows/{tag}/execute", {"inputs": {"name": "x"}}),
            ("PATCH", f"/workflows/{tag}/patch", {"operations": [{"op": "add", "path": "/metadata", "value": {}}]}),
            ("DELETE", f"/workflows/{tag}", None), ("POST", "/runs", {"tag": tag})]


def approval_endpoints(world: World) -> list[tuple[str, str, Any]]:
    return [("GET", f"/approvals/{world.approval.pk}", None), ("GET", f"/approvals?run={world.waiting.pk}", None),
            ("POST", f"/approvals/{world.approval.pk}/decide", {"approve": True}),
            ("POST", "/approvals", {"run_id": str(world.waiting.pk), "node_id": "review", "approved": True})]


def call(client: APIClient, method: str, path: str, body: Any = None) -> Any:
    return client.generic(method, f"{API}{path}", json.dumps(body) if body is not None else "",
                          content_type="application/json")


def test_the_owner_reaches_everything_the_others_do_not(world):
    """The control for the 404s below: the same calls as alice are answered."""
    alice = client_for(world.alice)
    for method, path, _ in [*run_reads(world), *workflow_endpoints("hello")[:4],
                            *approval_endpoints(world)[:2]]:
        assert call(alice, method, path).status_code == 200, path
    for artifact in artifacts(world):
        assert alice.get(f"{API}/artifacts/{artifact}").status_code == 200, artifact


def test_another_users_objects_are_a_404_everywhere_and_nothing_changes(world, carol):
    client = client_for(carol)
    before = state()

    for method, path, body in [*run_endpoints(world), *workflow_endpoints("hello"), *approval_endpoints(world)]:
        assert_error(call(client, method, path, body), 404, "not_found")
    for artifact in artifacts(world):
        assert_error(client.get(f"{API}/artifacts/{artifact}"), 404, "not_found")
    assert state() == before


def test_another_users_objects_are_not_listed(world, carol):
    client = client_for(carol)

    for path in ["/runs", "/runs?tag=hello", "/runs?status=completed", "/workflows", "/workflows?scope=all",
                 "/approvals", "/approvals?status=pending", "/approvals?status=approved"]:
        assert client.get(f"{API}{path}").json()["results"] == [], path


def test_an_approver_sees_and_decides_what_is_asked_of_them_and_nothing_else(world):
    """bob is an approver of alice's waiting run, not its owner."""
    bob = client_for(world.bob)
    before = state()

    pending = bob.get(f"{API}/approvals", {"status": "pending"}).json()["results"]
    assert [a["id"] for a in pending] == [world.approval.pk]
    assert bob.get(f"{API}/approvals/{world.approval.pk}").status_code == 200
    assert bob.get(f"{API}/runs").json()["results"] == []  # the runs list is one's own runs
    assert bob.get(f"{API}/runs/{world.waiting.pk}").status_code == 200  # the run behind the approval
    assert bob.get(f"{API}/runs/{world.waiting.pk}/nodes/review/iterations/0/input").status_code == 200
    for method, path, body in [*run_writes(world), ("GET", f"/runs/{world.finished.pk}", None),
                               ("GET", f"/runs/{world.finished.pk}/nodes/done/iterations/0/input", None),
                               *workflow_endpoints("hello")]:
        assert_error(call(bob, method, path, body), 404, "not_found")
    version, definition, finished_output, patch_set, patched = artifacts(world)
    for artifact in (version, finished_output):  # alice's workflow, and a run not behind the approval
        assert_error(bob.get(f"{API}/artifacts/{artifact}"), 404, "not_found")
    for artifact in (definition, patch_set, patched, world.patch.before_artifact_id):
        # what the run behind the approval links: its definition and its patches' before and after
        assert bob.get(f"{API}/artifacts/{artifact}").status_code == 200, artifact
    assert state() == before

    decided = call(bob, "POST", f"/approvals/{world.approval.pk}/decide", {"approve": True, "comment": "fine"})
    assert decided.status_code == 200, decided.json()
    assert decided.json()["status"] == "approved"
    assert [d["user"] for d in decided.json()["decisions"]] == ["bob"]


# --- CSRF ---------------------------------------------------------------------------------------

@pytest.fixture
def browser(world: World) -> APIClient:
    """alice logged in through the login page, as a browser: session cookie and CSRF cookie."""
    client = APIClient(enforce_csrf_checks=True)
    client.get("/login/")
    response = client.post("/login/", {"username": "alice", "password": PASSWORD,
                                       "csrfmiddlewaretoken": client.cookies["csrftoken"].value})
    assert response.status_code == 302, response.content[:300]
    return client


def session_writes(world: World) -> list[tuple[str, str, Any, int]]:
    return [("POST", "/runs", {"tag": "hello", "inputs": {"name": "x"}}, 201),
            ("POST", f"/runs/{world.waiting.pk}/patches", {"operations": add_node_after("refund", "audit2")}, 201),
            ("POST", f"/approvals/{world.approval.pk}/decide", {"approve": False}, 200),
            ("POST", f"/runs/{world.waiting.pk}/cancel", None, 200),
            ("PATCH", "/workflows/hello/patch",
             {"operations": [{"op": "replace", "path": "/metadata/description", "value": "third"}]}, 200),
            ("DELETE", "/workflows/hello", None, 204)]


def test_session_writes_without_the_csrf_token_are_a_403_and_change_nothing(world, browser):
    before = state()

    for method, path, body, _ in session_writes(world):
        body_ = assert_error(call(browser, method, path, body), 403)
        assert "CSRF" in body_["message"], body_
    assert state() == before
    assert call(browser, "GET", f"/runs/{world.waiting.pk}").status_code == 200  # reads need no token


def test_session_writes_with_the_csrf_token_go_through(world, browser):
    for method, path, body, status in session_writes(world):
        response = browser.generic(method, f"{API}{path}", json.dumps(body) if body is not None else "",
                                   content_type="application/json", HTTP_X_CSRFTOKEN=browser.cookies["csrftoken"].value)
        assert response.status_code == status, (path, response.content[:300])


def test_a_wrong_csrf_token_is_a_403(world, browser):
    response = browser.post(f"{API}/runs", {"tag": "hello"}, format="json", HTTP_X_CSRFTOKEN="x" * 64)

    assert_error(response, 403)


def test_token_clients_need_no_csrf_token(world):
    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=f"Token {world.alice.auth_token.key}")

    assert client.post(f"{API}/runs", {"tag": "hello"}, format="json").status_code == 201


# --- CORS and production cookies ------------------------------------------------------------------

def test_cors_is_off(world):
    alice = client_for(world.alice)
    evil = {"HTTP_ORIGIN": "https://evil.example"}

    responses = [
        alice.get(f"{API}/runs", **evil),
        alice.get(f"{API}/health", **evil),
        alice.post(f"{API}/runs", {"tag": "hello"}, format="json", **evil),
        alice.options(f"{API}/runs", HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
                      HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization,content-type", **evil),
    ]

    for response in responses:
        assert not [h for h in response.headers if h.lower().startswith("access-control-")], response.headers
    assert not [app for app in settings.INSTALLED_APPS if "cors" in app]


def test_production_cookies_are_secure_and_http_only():
    code = ("import json, django; django.setup(); from django.conf import settings as s; print(json.dumps({k: "
            "getattr(s, k) for k in ['SESSION_COOKIE_SECURE', 'CSRF_COOKIE_SECURE', 'SESSION_COOKIE_HTTPONLY', "
            "'SECURE_SSL_REDIRECT', 'SECURE_HSTS_SECONDS', 'DEBUG']}))")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "aob_project.settings", "AOB_PRODUCTION": "true", "DEBUG": "false",
           "SECRET_KEY": "x" * 64, "ALLOWED_HOSTS": "aob.example.com", "AOB_PUBLIC_URL": "https://aob.example.com",
           "AOB_SECRETS_KEYS": "kNXy1Jw4uGaO0sKhBQq3Vfr7o5Kx3nJ2s8h8m2Jc8Ao="}

    result = subprocess.run([sys.executable, "-c", code], cwd=settings.BASE_DIR, env=env, capture_output=True, text=True,
                            timeout=120)

    assert result.returncode == 0, result.stderr
    production = json.loads(result.stdout.strip().splitlines()[-1])
    assert production == {"SESSION_COOKIE_SECURE": True, "CSRF_COOKIE_SECURE": True, "SESSION_COOKIE_HTTPONLY": True,
                          "SECURE_SSL_REDIRECT": True, "SECURE_HSTS_SECONDS": 31536000, "DEBUG": False}


# --- WebSocket origin ---------------------------------------------------------------------------

def _socket(path: str, origin: str | None, token: str) -> WebsocketCommunicator:
    headers = [(b"host", b"127.0.0.1"), (b"authorization", f"Token {token}".encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    return WebsocketCommunicator(application, path, headers=headers)


def test_a_websocket_from_a_foreign_origin_is_refused_and_from_ours_accepted(engine, make_user):
    """Committed rows (the consumer reads in another thread); the stack's worker runs the run."""
    alice = make_user("alice")
    run = run_start(owner=alice, definition=HELLO, inputs={"name": "Ada"})
    path, token = f"/ws/runs/{run.pk}/", alice.auth_token.key

    async def main() -> tuple[list[bool], dict[str, Any]]:
        try:
            refused = []
            for origin in ["https://evil.example", "http://127.0.0.1.evil.example", "null", None]:
                socket = _socket(path, origin, token)
                connected, _ = await socket.connect(timeout=10)
                refused.append(connected)
                await socket.disconnect()
            ours = _socket(path, "http://127.0.0.1", token)
            connected, _ = await ours.connect(timeout=10)
            assert connected
            frame = await ours.receive_json_from(timeout=10)
            await ours.disconnect()
            return refused, frame
        finally:
            await sync_to_async(connections.close_all)()

    refused, frame = asyncio.run(main())

    assert refused == [False, False, False, False]
    assert (frame["seq"], frame["type"]) == (1, "workflow_started")
    assert wait_for_run(run.pk).status == "completed"


# --- secrets in logs ----------------------------------------------------------------------------

@pytest.fixture
def console() -> Any:
    """The app's console log format (JSON with the bound context), rendered as each record is
    emitted, into a buffer."""
    options = log_format()
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(options.pop("()")(**options))
    logging.getLogger().addHandler(handler)
    yield handler.stream
    logging.getLogger().removeHandler(handler)


@pytest.fixture
def debug_worker(engine: dict[str, stack.Proc], stack_env: dict[str, str]) -> Iterator[stack.Proc]:
    """The stack's worker, swapped for one logging at DEBUG for this test."""
    with swapped_worker(engine, stack_env, "debug", AOB_LOG_LEVEL="DEBUG") as proc:
        yield proc


def test_secrets_are_never_logged(debug_worker, make_user, caplog, console):
    """A login (right and wrong), token use, a run carried out by a worker, a session login: at
    DEBUG on every logger of this process and of the worker, no record and no rendered line holds
    the password, the token or SECRET_KEY."""
    make_user("alice")
    for name in [None, *logging.root.manager.loggerDict]:
        caplog.set_level(logging.DEBUG, logger=name)
    anonymous = APIClient()

    issued = anonymous.post(f"{API}/auth/token", {"username": "alice", "password": PASSWORD}, format="json")
    wrong = anonymous.post(f"{API}/auth/token", {"username": "alice", "password": PASSWORD + "x"}, format="json")
    token = issued.json()["token"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    # worker nodes (``dispatch: "queue"``): the run is carried out by executors, whose log lines are checked
    hello = {**HELLO, "nodes": [{**n, "config": {**n["config"], "dispatch": "queue"}} for n in HELLO["nodes"]]}
    started = client.post(f"{API}/runs", {"workflow": hello, "inputs": {"name": "Ada"}}, format="json")
    run = wait_for_run(started.json()["run_id"])
    client.get(f"{API}/runs/{run.pk}/details")
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION=f"Token {token[:-1]}x")
    bad.get(f"{API}/runs")
    APIClient().post("/login/", {"username": "alice", "password": PASSWORD})
    worker = wait_until(lambda: _logged_completion(debug_worker, run.pk), what="the worker's node_run.completed")

    assert (issued.status_code, wrong.status_code, run.status) == (200, 401, "completed")
    records = [f"{r.getMessage()} {r.__dict__!r}" for r in caplog.records]
    rendered = console.getvalue()
    heard = "Unauthorized: /api/v1/runs"  # the wrong token's request: this process was heard
    assert heard in rendered and [line for line in records if heard in line]
    assert '"level": "debug"' in worker  # and the worker, at DEBUG, carried the run out
    for secret in (PASSWORD, token, token[:-1], settings.SECRET_KEY):
        assert not [line for line in records if secret in line], secret[:4]
        assert secret not in rendered, secret[:4]
        assert secret not in worker, secret[:4]


def _logged_completion(worker: stack.Proc, run_id: Any) -> str:
    """The worker's log, once it holds the completion of both of the run's node runs (HELLO's)."""
    log = worker.log.read_text(errors="replace")
    done = [line for line in log.splitlines() if "node_run.completed" in line and str(run_id) in line]
    return log if len(done) == 2 else ""
