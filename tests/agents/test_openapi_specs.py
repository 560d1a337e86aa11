"""``openapi_action`` against a registered API whose OpenAPI document is remote (``AOB_OPENAPI_SPECS``
with an ``http(s)`` URL): fetched through the SSRF-safe client when a tool call first needs it, and
whatever its host answers is an outsider's words."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agents.exceptions import ToolError
from agents.tools import AgentState, openapi
from tests.conftest import OPENAPI_SPEC
from tests.support.remote import RemoteServer, Reply
from workers.http import HTTPRequestError
from workflows.registry import NodeContext

SPEC = json.loads(Path(OPENAPI_SPEC).read_text())
GET_ITEM = {"api": "remote_spec", "operation_id": "getItem", "parameters": {"item_id": "a"}}


def agent_state() -> AgentState:
    ctx = NodeContext(run_id="run-1", node_run_id=1, node_id="plan", node_type="agent", iteration=0, attempt=1,
                      config={}, raw_config={}, inputs={}, outputs={}, timeout_s=None, owner_id=1)
    return AgentState(ctx=ctx, tools=["openapi_action"], proposal_key="1:0:0")


def register(settings: Any, remote: RemoteServer, key: str, answers: list[Any]) -> None:
    remote.script(key, answers)
    settings.AOB_OPENAPI_SPECS = {"remote_spec": {"spec": f"{remote.base}/seq/{key}", "base_url": remote.base}}


def test_a_spec_its_host_failed_to_serve_is_fetched_again_not_kept_for_the_process_s_life(settings, remote):
    """The document is cached per worker process (``functools.cache``), and what the first fetch
    answered was kept whatever its status: a 503 of the API's host (its body a JSON error, or a page
    that is no JSON: ``{}``) became the API's document until the worker restarted, so every agent's
    call to that API on that worker answered "no operation" for hours after the host came back."""
    register(settings, remote, "spec-after-503", [Reply(503, {"error": "down for maintenance"}), SPEC])

    with pytest.raises(ToolError) as down:
        openapi.run(agent_state(), GET_ITEM)
    result = openapi.run(agent_state(), GET_ITEM)

    assert "503" in down.value.message, down.value.message
    assert result["status"] == "success" and result["body"]["path"] == "/echo/items/a"
    assert len(remote.hits("/seq/spec-after-503")) == 2


def test_a_document_s_odd_shapes_are_tool_errors_and_every_path_parameter_is_filled(settings, remote):
    """What a remote document holds is its host's to write. A path item or a parameter that is not
    an object (``["get"]``, ``"id"``) raised ``AttributeError`` out of the tool, and the agent loop
    answers only ``AobError``s, so the whole node failed. And a path parameter declared where
    OpenAPI lets it be, on the path item (shared by its operations) or as a ``$ref`` to
    ``components/parameters``, was never read: the model's value was dropped and the request went to
    ``/echo/items/%7Bitem_id%7D``, a path outside the template, with the node's credentials for the
    API."""
    item_id = {"name": "item_id", "in": "path", "required": True, "schema": {"type": "string"}}
    spec = {"openapi": "3.0.3", "paths": {
        "/echo/items/{item_id}": {"parameters": [item_id], "get": {"operationId": "getItem"}},
        "/echo/things/{item_id}": {"get": {"operationId": "getThing",
                                           "parameters": [{"$ref": "#/components/parameters/ItemId"}]}},
        "/echo/odd": ["get"],
        "/echo/odder": {"get": {"operationId": "getOdder", "parameters": ["item_id"]}},
    }, "components": {"parameters": {"ItemId": item_id}}}
    register(settings, remote, "odd-spec", [spec])

    got = openapi.run(agent_state(), GET_ITEM)
    thing = openapi.run(agent_state(), {**GET_ITEM, "operation_id": "getThing"})
    with pytest.raises(ToolError):
        openapi.run(agent_state(), {**GET_ITEM, "operation_id": "getOdder"})
    with pytest.raises(ToolError):
        openapi.run(agent_state(), {**GET_ITEM, "operation_id": "nowhere"})

    assert got["body"]["path"] == "/echo/items/a" and thing["body"]["path"] == "/echo/things/a"
    assert not [h for h in remote.hits("/echo") if "%7B" in h["path"]]


def test_a_remote_document_needs_the_api_s_own_base_url_or_nothing_starts(settings, remote):
    """The node's ``auth`` (the owner's ``$secrets`` too) went to the remote document's first server
    when no ``base_url`` was registered: its host, or anyone on the way to an ``http://`` one, chose
    where the credentials went. Such a registration now stops every process at start-up (a system
    check, which Celery's workers run too), and the tool never reads a remote document's servers."""
    from agents.checks import openapi_specs_check

    settings.AOB_OPENAPI_SPECS = {"billing": {"spec": f"{remote.base}/openapi.json"},
                                  "typo": {"spec": OPENAPI_SPEC, "base_url": "api.example.com"},
                                  "bare": "https://api.example.com/openapi.json"}
    problems = openapi_specs_check()
    assert [(p.id, p.msg.split(":")[0]) for p in problems] == [
        ("agents.E001", "AOB_OPENAPI_SPECS['bare']"), ("agents.E001", "AOB_OPENAPI_SPECS['billing']"),
        ("agents.E001", "AOB_OPENAPI_SPECS['typo']")]
    assert "base_url" in problems[1].msg

    settings.AOB_OPENAPI_SPECS = {"billing": {"spec": f"{remote.base}/openapi.json", "base_url": remote.base},
                                  "local": {"spec": OPENAPI_SPEC}}
    assert openapi_specs_check() == []
    document = {"servers": [{"url": "https://collector.example"}], "paths": {}}
    assert openapi._base({"spec": f"{remote.base}/openapi.json"}, document) == ""
    assert openapi._base({"spec": OPENAPI_SPEC}, document) == "https://collector.example"


@pytest.mark.parametrize("path", [".attacker.example/x", ":9999/x", "//attacker.example/x", "@attacker.example/x",
                                  "/../x", "/a/../../x", "/a/%2e%2e/x", "/a/%2E/x", "/a%2f..%2fx", "/a/..",
                                  "/a\\..\\x"])
def test_a_document_s_path_never_leaves_the_api_s_base_url(path):
    """The registered ``base_url`` is where the node's ``auth`` goes; a remote document's path is its
    host's words, and one that does not begin with ``/`` named another host or port when joined; one
    with a dot segment (or its percent-encoding, which a server may decode) climbed out of its path."""
    with pytest.raises(ToolError, match="leaves its base URL"):
        openapi._at_base("https://api.example.com/v1", path)
    assert openapi._at_base("https://api.example.com/v1/", "/items/1") == "https://api.example.com/v1/items/1"
    assert openapi._at_base("https://api.example.com", "/v1.2/a..b/.well-known") == (
        "https://api.example.com/v1.2/a..b/.well-known")


def test_a_document_s_dot_segments_never_leave_the_api_s_base_path(settings: Any, remote: RemoteServer):
    """The API may be one tenant's prefix on a shared gateway, its credentials for that prefix only:
    ``/../../status/200`` joined to ``…/echo/tenant-a`` was sent to ``/status/200`` (the client
    removes dot segments), with the node's ``auth``; it is now refused and nothing is sent."""
    spec = {"openapi": "3.0.3", "paths": {"/../../status/200": {"get": {"operationId": "getItem"}}}}
    remote.script("dots-spec", [spec])
    settings.AOB_OPENAPI_SPECS = {"remote_spec": {"spec": f"{remote.base}/seq/dots-spec",
                                                  "base_url": f"{remote.base}/echo/tenant-a"}}

    with pytest.raises(ToolError, match="leaves its base URL"):
        openapi.run(agent_state(), {"api": "remote_spec", "operation_id": "getItem"})
    assert remote.hits("/status") == remote.hits("/echo/tenant-a") == [] and remote.hits("/seq/dots-spec")


def test_a_document_whose_fetch_timed_out_is_not_an_operation_sent(settings: Any, remote: RemoteServer):
    """The client says a request that timed out after going out was ``sent``, and a tool's error
    carrying it tells the model the operation may have taken effect: the document's GET is not it."""
    settings.AOB_HTTP_TIMEOUT_S = 0.5
    settings.AOB_OPENAPI_SPECS = {"remote_spec": {"spec": f"{remote.base}/sleep/2", "base_url": remote.base}}

    before = len(remote.hits("/echo"))

    with pytest.raises(HTTPRequestError, match="timed out") as caught:
        openapi.run(agent_state(), GET_ITEM)
    assert "sent" not in caught.value.extra and len(remote.hits("/echo")) == before
