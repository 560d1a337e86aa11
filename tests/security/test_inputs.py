"""Hostile input on the run, run-patch and approval endpoints is a 4xx in the one error format and
changes nothing: malformed JSON, wrong types, unknown fields, bodies and nesting over the limits,
NUL characters, integers beyond 64 bits, another user's ids, negative ids, a decision made twice,
unicode in names, and NUL in the URL. (The workflow endpoints: tests/api/test_limits.py.)"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from approvals.models import Approval
from tests.api.factories import assert_error, nested_lists
from tests.conftest import client_for
from tests.security.conftest import Committed, World, add_node_after, committed_run, refund_flow, state
from workflows.models import PatchRefusal, Run

API = "/api/v1"
BEYOND_64_BITS = 2**64


def post(client: APIClient, path: str, body: Any) -> Any:
    """``body`` as it is when it is bytes or str (malformed on purpose), else as JSON."""
    raw = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.generic("POST", f"{API}{path}", raw, content_type="application/json")


# Each endpoint: its path, a body it accepts, and the field where free text or JSON values go.
def _runs(w: World) -> tuple[str, dict[str, Any]]:
    return "/runs", {"tag": "hello", "inputs": {"name": "Ada"}}


def _patches(w: World) -> tuple[str, dict[str, Any]]:
    return f"/runs/{w.waiting.pk}/patches", {"operations": add_node_after("refund", "audit2"), "description": "x"}


def _decide(w: World) -> tuple[str, dict[str, Any]]:
    return f"/approvals/{w.approval.pk}/decide", {"approve": True, "comment": "ok", "data": {"note": "x"}}


def _compat(w: World) -> tuple[str, dict[str, Any]]:
    return "/approvals", {"run_id": str(w.waiting.pk), "node_id": "review", "approved": True, "comment": "ok",
                          "data": {"note": "x"}}


ENDPOINTS: dict[str, Callable[[World], tuple[str, dict[str, Any]]]] = {
    "POST /runs": _runs, "POST /runs/{id}/patches": _patches, "POST /approvals/{id}/decide": _decide,
    "POST /approvals": _compat,
}


def _with_value(endpoint: str, body: dict[str, Any], value: Any) -> dict[str, Any]:
    """``value`` where this endpoint would store it: run inputs, a patched node's config, decision data."""
    if endpoint == "POST /runs":
        return {**body, "inputs": {"name": value}}
    if endpoint == "POST /runs/{id}/patches":
        operations = add_node_after("refund", "audit2")
        operations[0]["value"]["config"] = {"expression": "1", "note": value}
        return {**body, "operations": operations}
    return {**body, "data": {"note": value}}


def _text(body: dict[str, Any], text: str) -> str:
    return json.dumps(body)[:-1] + f', "x": "{text}"}}'


MB = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
DEPTH = settings.AOB_MAX_JSON_DEPTH
# (case, body made from the endpoint name and its valid body, status, error code)
HOSTILE: list[tuple[str, Callable[[str, dict[str, Any]], Any], int, str]] = [
    ("malformed JSON", lambda e, b: json.dumps(b)[:-1], 400, "malformed_json"),
    ("not UTF-8", lambda e, b: b"\xff\xfe{}", 400, "malformed_json"),
    ("empty body", lambda e, b: "", 400, "validation_error"),
    ("an array", lambda e, b: [b], 400, "validation_error"),
    ("null", lambda e, b: "null", 400, "validation_error"),
    ("unknown field", lambda e, b: {**b, "dry_run": True}, 400, "validation_error"),
    ("over the body limit", lambda e, b: {**b, "pad": "x" * MB}, 400, "body_too_large"),
    ("nested past the limit", lambda e, b: _with_value(e, b, nested_lists(DEPTH)), 400, "max_depth"),
    ("NUL in a value", lambda e, b: _with_value(e, b, "Ada\u0000"), 400, "nul_character"),
    ("NUL in a key", lambda e, b: {**b, "\u0000": 1}, 400, "nul_character"),
    ("lone surrogate", lambda e, b: _text(b, "\\ud800"), 400, "invalid_unicode"),
    ("integer beyond 64 bits", lambda e, b: _with_value(e, b, BEYOND_64_BITS), 400, "integer_out_of_range"),
    ("negative integer beyond 64 bits", lambda e, b: _with_value(e, b, -BEYOND_64_BITS), 400,
     "integer_out_of_range"),
    ("NaN", lambda e, b: json.dumps(_with_value(e, b, float("nan"))), 400, "invalid_number"),
    ("1e999", lambda e, b: json.dumps(_with_value(e, b, 0.5)).replace("0.5", "1e999"), 400, "invalid_number"),
]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(("case", "make", "status", "code"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_bodies_are_refused_and_change_nothing(world, endpoint, case, make, status, code):
    path, body = ENDPOINTS[endpoint](world)
    before = state()

    response = post(client_for(world.alice), path, make(endpoint, body))

    assert_error(response, status, code)
    assert state() == before


@pytest.fixture(scope="module")
def parked(committed: Committed) -> dict[str, Run]:
    """Two more of alice's runs, parked at ``review`` by the workers beside the world: one for
    alice alone, one that needs two approvals of alice or bob."""
    assert committed.world is not None
    alice = committed.world.alice
    return committed.build(lambda: {
        "alone": committed_run(alice, refund_flow(["alice"]), {"amount": 1}, Run.Status.WAITING_FOR_APPROVAL),
        "two": committed_run(alice, refund_flow(["alice", "bob"], required_approvals=2), {"amount": 1},
                             Run.Status.WAITING_FOR_APPROVAL)})


def test_the_valid_bodies_are_accepted(world, parked):
    """The control: each endpoint takes its valid body (so a refusal above is the hostile part's)."""
    alice = client_for(world.alice)
    for endpoint in ["POST /runs", "POST /runs/{id}/patches", "POST /approvals/{id}/decide"]:
        path, body = ENDPOINTS[endpoint](world)
        assert post(alice, path, body).status_code in (200, 201), endpoint
    other = parked["alone"]
    path, body = _compat(world)
    assert post(alice, path, {**body, "run_id": str(other.pk)}).status_code == 200


WRONG_TYPES = {
    "POST /runs": [{"tag": ["hello"]}, {"tag": True}, {"tag": "hello", "inputs": [1]}, {"tag": "hello", "inputs": "x"},
                   {"workflow": "nodes"}, {"workflow": []}, {}, {"tag": "hello", "workflow": {"nodes": []}}],
    "POST /runs/{id}/patches": [{"operations": {"op": "add"}}, {"operations": ["add"]}, {"operations": [None]},
                                {"operations": "add"}, {"operations": add_node_after("refund", "x"), "description": []},
                                {"operations": add_node_after("refund", "x"), "node_id": {"id": "x"}}, {}],
    "POST /approvals/{id}/decide": [{"approve": "true"}, {"approve": "yes"}, {"approve": 1}, {"approve": None},
                                    {"approve": [True]}, {"approve": True, "comment": {"a": 1}}, {"comment": "ok"}],
    "POST /approvals": [{"run_id": "not-a-uuid", "node_id": "review", "approved": True},
                        {"run_id": ["x"], "node_id": "review", "approved": True},
                        {"node_id": ["review"], "approved": True}, {"node_id": "review", "approved": "yes"},
                        {"node_id": "review", "approved": 1}, {"node_id": "review"}],
}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_wrong_types_are_a_400_and_change_nothing(world, endpoint):
    path, valid = ENDPOINTS[endpoint](world)
    alice = client_for(world.alice)
    before = state()

    for wrong in WRONG_TYPES[endpoint]:
        body = {"run_id": valid["run_id"], **wrong} if "run_id" in valid and "node_id" in wrong else wrong
        response = post(alice, path, body)
        assert_error(response, 400, "validation_error")
        assert state() == before, wrong


def test_a_form_body_is_a_415(world):
    before = state()

    response = client_for(world.alice).post(f"{API}/runs", "tag=hello", content_type="application/x-www-form-urlencoded")

    assert_error(response, 415, "unsupported_media_type")
    assert state() == before


@pytest.fixture
def carol(make_user: Any) -> Any:
    return make_user("carol")


def test_another_users_run_and_approval_are_a_404_on_every_write(world, carol):
    client = client_for(carol)
    before = state()

    for endpoint in ENDPOINTS:
        if endpoint == "POST /runs":
            continue  # another user's tag: tests/api/test_auth_and_scoping.py
        path, body = ENDPOINTS[endpoint](world)
        assert_error(post(client, path, body), 404, "not_found")
    for action in ["cancel", "nodes/done/replay"]:
        assert_error(client.post(f"{API}/runs/{world.finished.pk}/{action}"), 404, "not_found")
    assert state() == before


@pytest.mark.parametrize("path", [
    "/approvals/-1", "/approvals/0", "/approvals/99999999999999999999999", "/approvals/1.5", "/approvals/1e3",
    "/runs/-1", "/runs/0", "/runs/-1/details", "/runs/-1/events", "/runs/-1/patches",
    "/runs/{run}/patches/-1", "/runs/{run}/patches/99999999999999999999",
])
def test_negative_and_out_of_range_ids_are_a_404(world, path):
    response = client_for(world.alice).get(f"{API}{path.format(run=world.waiting.pk)}")

    assert_error(response, 404, "not_found")


@pytest.mark.parametrize("path", ["/approvals/-1/decide", "/approvals/99999999999999999999999/decide",
                                  "/runs/-1/patches", "/runs/-1/cancel", "/runs/-1/nodes/done/replay"])
def test_writes_to_negative_ids_are_a_404_and_change_nothing(world, path):
    before = state()

    response = post(client_for(world.alice), path, {"approve": True} if "decide" in path else
                    {"operations": add_node_after("refund", "x")})

    assert_error(response, 404, "not_found")
    assert state() == before


def test_a_decision_made_twice_is_a_409_and_changes_nothing(world):
    alice, bob = client_for(world.alice), client_for(world.bob)
    path = f"/approvals/{world.approval.pk}/decide"
    assert post(alice, path, {"approve": True}).json()["status"] == "approved"
    before = state()

    again = post(alice, path, {"approve": False})
    other = post(bob, path, {"approve": False})
    compat = post(bob, "/approvals", {"run_id": str(world.waiting.pk), "node_id": "review", "approved": False})

    for response in (again, other, compat):
        body = assert_error(response, 409, "approval_settled")
        assert body["details"] == {"status": "approved"}
    assert state() == before


def test_one_person_deciding_twice_is_a_409_while_the_approval_waits_for_another(world, parked):
    run = parked["two"]
    approval = Approval.objects.get(run=run)
    path = f"/approvals/{approval.pk}/decide"
    alice = client_for(world.alice)
    assert post(alice, path, {"approve": True}).json()["status"] == "pending"
    before = state()

    assert_error(post(alice, path, {"approve": True}), 409, "already_decided")
    assert_error(post(alice, "/approvals", {"run_id": str(run.pk), "node_id": "review", "approved": True}),
                 409, "already_decided")
    assert state() == before


@pytest.mark.parametrize("tag", ["café", "ｈｅｌｌｏ", "hello\u200b", "日本", "hel lo", "-hello", "hello/x"])
def test_a_tag_outside_the_pattern_is_refused_by_name_on_run_creation(world, tag):
    """Tags are ASCII (``[A-Za-z0-9][A-Za-z0-9_.-]*``): a non-ASCII one is a 400 naming the field,
    not a lookup that might fold it onto another workflow."""
    before = state()

    body = assert_error(post(client_for(world.alice), "/runs", {"tag": tag}), 400, "validation_error")

    assert body["details"]["field"] == "tag"
    assert state() == before


def test_a_non_ascii_tag_in_the_url_or_the_runs_filter_finds_nothing(world):
    alice = client_for(world.alice)

    assert_error(alice.get(f"{API}/workflows/caf%C3%A9"), 404, "not_found")
    assert alice.get(f"{API}/runs", {"tag": "café"}).json()["results"] == []


@pytest.mark.parametrize("node_id", ["révision", "ｒｅｖｉｅｗ", "re view", "review\u0301"])
def test_a_non_ascii_node_id_is_refused_in_a_patch_and_in_a_decision(world, node_id):
    alice = client_for(world.alice)
    before = state()

    as_author = post(alice, f"/runs/{world.waiting.pk}/patches",
                     {"operations": add_node_after("refund", "x"), "node_id": node_id})
    as_decider = post(alice, "/approvals", {"run_id": str(world.waiting.pk), "node_id": node_id, "approved": True})

    assert assert_error(as_author, 400, "validation_error")["details"]["field"] == "node_id"
    assert assert_error(as_decider, 400, "validation_error")["details"]["field"] == "node_id"
    assert state() == before


def test_a_patch_adding_a_non_ascii_node_is_refused_and_stores_no_patch(world):
    before = state()

    response = post(client_for(world.alice), f"/runs/{world.waiting.pk}/patches",
                    {"operations": add_node_after("refund", "nödé")})

    body = assert_error(response, 400, "patch_rejected")
    assert body["details"]["rule"] == "schema.pattern"
    assert state() == before  # nothing of a refused patch reaches the run, not even an event
    assert PatchRefusal.objects.filter(run=world.waiting, rule="schema.pattern").count() == 1


def test_unicode_in_free_text_round_trips(world):
    """Names are ASCII; what people write (inputs, comments, descriptions) is any Unicode."""
    alice = client_for(world.alice)
    text = "Zoë — 日本語 ✓ 🚀 \u202eevil"

    created = post(alice, "/runs", {"tag": "hello", "inputs": {"name": text}})
    patched = post(alice, f"/runs/{world.waiting.pk}/patches",
                   {"operations": add_node_after("refund", "audit2"), "description": text})
    decided = post(alice, f"/approvals/{world.approval.pk}/decide", {"approve": True, "comment": text})

    assert created.status_code == 201
    assert alice.get(f"{API}/runs/{created.json()['run_id']}").json()["inputs"] == {"name": text}
    assert patched.status_code == 201 and patched.json()["description"] == text
    assert decided.json()["decisions"][0]["comment"] == text


NUL_PATHS = [
    ("GET", "/approvals/%00"), ("GET", "/approvals/1%00"), ("GET", "/approvals/{approval}%00"),
    ("POST", "/approvals/%00/decide"), ("POST", "/approvals/{approval}%00/decide"),
    ("GET", "/runs/%00"), ("GET", "/runs/{run}%00"), ("GET", "/runs/{run}%00/details"),
    ("GET", "/runs/{run}%00/events"), ("GET", "/runs/{run}%00/patches"), ("POST", "/runs/{run}%00/patches"),
    ("GET", "/runs/{run}/patches/%00"), ("GET", "/runs/{run}/patches/1%00"), ("POST", "/runs/{run}%00/cancel"),
    ("POST", "/runs/%00/cancel"), ("POST", "/runs/{run}/nodes/%00/replay"), ("POST", "/runs/{run}/nodes/done%00/replay"),
    ("POST", "/runs/{run}%00/nodes/done/replay"), ("GET", "/approvals?run=%00"), ("GET", "/approvals?run={run}%00"),
    ("GET", "/runs/{run}/nodes/review/iterations/0/input%00"), ("GET", "/runs/{run}/nodes/review%00/iterations/0/input"),
    ("GET", "/runs/{run}/nodes/review/iterations/0%00/input"),
]


@pytest.mark.parametrize(("method", "path"), NUL_PATHS, ids=[f"{m} {p}" for m, p in NUL_PATHS])
def test_nul_in_the_url_is_a_404_not_a_500(world, method, path):
    before = state()
    url = API + path.format(run=world.waiting.pk, approval=world.approval.pk)

    response = client_for(world.alice).generic(method, url, json.dumps({"approve": True}),
                                               content_type="application/json")

    assert_error(response, 404)
    assert state() == before


@pytest.mark.parametrize("query", ["/runs?tag=%00", "/runs?status=%00", "/approvals?status=%00",
                                   "/runs/{run}/events?after=%00"])
def test_nul_in_a_query_filter_is_a_400(world, query):
    response = client_for(world.alice).get(API + query.format(run=world.waiting.pk))

    assert_error(response, 400, "validation_error")


@pytest.mark.parametrize("query", ["/runs?limit={big}", "/approvals?limit={big}&offset={big}",
                                   "/workflows?offset={big}", "/runs/{run}/events?after={big}",
                                   "/workflows/hello/runs?limit={big}"])
def test_integers_beyond_64_bits_in_the_query_are_clamped(world, query):
    response = client_for(world.alice).get(API + query.format(run=world.waiting.pk, big=10**30))

    assert response.status_code == 200, response.content[:300]


@pytest.mark.parametrize(("query", "field", "rule"), [
    ("/runs?stauts=failed", "stauts", "unknown_parameter"),  # read as no filter: every run listed
    ("/runs?offset=5", "offset", "unknown_parameter"),  # /runs pages by cursor: the offset was ignored
    ("/runs/{run}/details?after=1", "after", "unknown_parameter"),
    ("/runs?status=failed&status=completed", "status", "repeated"),  # the last was read alone
    ("/approvals?limit=abc&limit=5", "limit", "repeated"),
    # one reading of limit (params.query_int) on every list: the runs list read an empty one as its default
    ("/runs?limit=", "limit", "integer"), ("/approvals?limit=", "limit", "integer"),
    ("/workflows?limit=", "limit", "integer"), ("/runs?limit=0", "limit", "minimum"),
])
def test_a_query_parameter_the_endpoint_does_not_take_or_given_twice_is_a_400_naming_it(world, query, field, rule):
    """A misspelt filter listed everything and a repeated one kept its last value, each with a 200:
    the endpoint's parameters are the ones its OpenAPI document declares, each given once."""
    response = client_for(world.alice).get(API + query.format(run=world.waiting.pk))

    assert_error(response, 400, "validation_error")
    assert (response.json()["details"]["field"], response.json()["details"]["rule"]) == (field, rule)
