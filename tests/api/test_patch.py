"""Design-time RFC 6902 patches: the result becomes a new version only if it validates."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.factories import API, assert_error, content_id, fetch_then_store, post_workflow, problems
from workflows.models import Workflow, WorkflowVersion


def patch(client: Any, tag: str, operations: Any, description: str = "", **extra: Any) -> Any:
    return client.patch(f"{API}/workflows/{tag}/patch",
                        {"operations": operations, "description": description, **extra}, format="json")


def current(client: Any, tag: str) -> dict[str, Any]:
    return client.get(f"{API}/workflows/{tag}", {"materialize": "true"}).json()


@pytest.fixture
def fetcher(api) -> dict[str, Any]:
    response = post_workflow(api, "fetcher", fetch_then_store())
    assert response.status_code == 201
    return response.json()


def test_a_nested_replace_makes_a_new_version(api, fetcher):
    response = patch(api, "fetcher", [{"op": "replace", "path": "/nodes/0/config/url",
                                       "value": "https://example.org/v2/items"}], "point at v2")

    assert response.status_code == 200, response.json()
    expected = fetch_then_store()
    expected["nodes"][0]["config"]["url"] = "https://example.org/v2/items"
    assert response.json()["version"] == 1
    assert response.json()["artifact_id"] == content_id(expected)
    assert response.json()["artifact_id"] != fetcher["artifact_id"]
    assert current(api, "fetcher")["definition"] == expected
    version = api.get(f"{API}/workflows/fetcher/versions/1").json()
    assert version["description"] == "point at v2"
    first = api.get(f"{API}/workflows/fetcher/versions/0", {"materialize": "true"}).json()
    assert first["definition"] == fetch_then_store()


def test_every_rfc_6902_operation_applies(api, fetcher):
    operations = [
        {"op": "test", "path": "/nodes/0/config/method", "value": "GET"},
        {"op": "add", "path": "/nodes/-", "value": {"id": "notify", "type": "http",
                                                    "config": {"url": "https://example.com/hook"}}},
        {"op": "add", "path": "/edges/-", "value": {"from": "store", "to": "notify"}},
        {"op": "copy", "from": "/nodes/0/config/method", "path": "/nodes/2/config/method"},
        {"op": "replace", "path": "/nodes/2/config/method", "value": "POST"},
        {"op": "move", "from": "/nodes/0/config/method", "path": "/nodes/0/config/x-method"},
        {"op": "remove", "path": "/nodes/0/config/x-method"},
        {"op": "add", "path": "/metadata", "value": {"name": "fetch, store, notify"}},
    ]

    response = patch(api, "fetcher", operations)

    assert response.status_code == 200, response.json()
    definition = current(api, "fetcher")["definition"]
    assert [n["id"] for n in definition["nodes"]] == ["fetch", "store", "notify"]
    assert definition["nodes"][0]["config"] == {"url": "https://example.com/v1/items"}
    assert definition["nodes"][2]["config"] == {"url": "https://example.com/hook", "method": "POST"}
    assert definition["edges"][-1] == {"from": "store", "to": "notify"}
    assert definition["metadata"] == {"name": "fetch, store, notify"}
    assert (response.json()["nodes_count"], response.json()["edges_count"]) == (3, 2)


def test_a_key_with_a_slash_is_reached_by_its_escaped_pointer(api, fetcher):
    response = patch(api, "fetcher", [{"op": "add", "path": "/nodes/0/config/query",
                                       "value": {"a/b": "1", "c~d": "2"}},
                                      {"op": "replace", "path": "/nodes/0/config/query/a~1b", "value": "3"},
                                      {"op": "remove", "path": "/nodes/0/config/query/c~0d"}])

    assert response.status_code == 200, response.json()
    assert current(api, "fetcher")["definition"]["nodes"][0]["config"]["query"] == {"a/b": "3"}


def test_a_patch_that_changes_nothing_makes_no_version(api, fetcher):
    response = patch(api, "fetcher", [{"op": "test", "path": "/nodes/0/id", "value": "fetch"}])

    assert response.status_code == 200
    assert (response.json()["version"], response.json()["created"]) == (0, False)
    assert WorkflowVersion.objects.count() == 1


BREAKING = [
    ("http loses its url", [{"op": "remove", "path": "/nodes/0/config/url"}], "/nodes/0/config", "config.required"),
    ("edge to a node that is not there", [{"op": "add", "path": "/edges/-", "value": {"from": "store", "to": "x"}}],
     "/edges/1/to", "edge_node_exists"),
    ("a cycle", [{"op": "add", "path": "/edges/-", "value": {"from": "store", "to": "fetch"}}], "/edges", "acyclic"),
    ("a duplicate id", [{"op": "replace", "path": "/nodes/1/id", "value": "fetch"}], "/nodes/1/id",
     "unique_node_id"),
    ("a bad condition", [{"op": "add", "path": "/edges/0/condition", "value": "$.status =="}],
     "/edges/0/condition", "condition_syntax"),
    ("config not an object", [{"op": "replace", "path": "/nodes/0/config", "value": "https://x"}],
     "/nodes/0/config", "schema.type"),
    ("all nodes removed", [{"op": "replace", "path": "/nodes", "value": []}], "/nodes", "schema.minItems"),
    ("an unknown top-level field", [{"op": "add", "path": "/owner", "value": "mallory"}], "/",
     "schema.additionalProperties"),
]


@pytest.mark.parametrize(("operations", "path", "rule"), [c[1:] for c in BREAKING], ids=[c[0] for c in BREAKING])
def test_a_patch_that_breaks_validity_is_a_400_and_the_tag_does_not_move(api, fetcher, operations, path, rule):
    response = patch(api, "fetcher", operations)

    body = assert_error(response, 400, "invalid_workflow")
    assert (path, rule) in problems(body)
    after = current(api, "fetcher")
    assert (after["version"], after["artifact_id"]) == (0, fetcher["artifact_id"])
    assert after["definition"] == fetch_then_store()
    assert WorkflowVersion.objects.count() == 1


MALFORMED = [
    ("unknown op", [{"op": "frobnicate", "path": "/nodes/0"}]),
    ("no op", [{"path": "/nodes/0/config/url", "value": "https://x"}]),
    ("no path", [{"op": "replace", "value": "https://x"}]),
    ("replace without value", [{"op": "replace", "path": "/nodes/0/config/url"}]),
    ("path without a leading slash", [{"op": "replace", "path": "nodes/0/config/url", "value": "https://x"}]),
    ("replace of a missing member", [{"op": "replace", "path": "/nodes/0/config/nope", "value": 1}]),
    ("index out of range", [{"op": "replace", "path": "/nodes/9/config/url", "value": "https://x"}]),
    ("index that is not a number", [{"op": "replace", "path": "/nodes/first/id", "value": "x"}]),
    ("remove of a missing member", [{"op": "remove", "path": "/metadata"}]),
    ("move from a missing member", [{"op": "move", "from": "/nope", "path": "/metadata"}]),
    ("a failing test", [{"op": "test", "path": "/nodes/0/id", "value": "other"},
                        {"op": "replace", "path": "/nodes/0/config/url", "value": "https://x"}]),
    ("path is not a string", [{"op": "replace", "path": 7, "value": "https://x"}]),
    ("op is not a string", [{"op": ["replace"], "path": "/nodes/0/id", "value": "x"}]),
    ("an add with no value", [{"op": "add", "path": "/metadata", "extra": 1}]),
]


@pytest.mark.parametrize("operations", [c[1] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_a_malformed_operation_is_a_400_and_the_tag_does_not_move(api, fetcher, operations):
    response = patch(api, "fetcher", operations)

    body = assert_error(response, 400, "invalid_patch")
    assert body["details"]["field"] == "operations"
    # the refusal names the operation and why in its own words: not Python's ("list index out of
    # range"), nor a failed test's quote of the value it found
    assert body["message"].startswith(f"patch cannot be applied: operation {body['details']['op']}")
    assert not any(words in body["message"] for words in ("out of range", "KeyError", "is not equal", "'fetch'"))
    if "value" not in operations[0] and operations[0]["op"] == "add":  # said as what it is, not a path's fault
        assert body["details"]["failure"] == "invalid_operation", body
    assert current(api, "fetcher")["artifact_id"] == fetcher["artifact_id"]
    assert WorkflowVersion.objects.count() == 1


@pytest.mark.parametrize("body", [
    {"operations": []},
    {"operations": {"op": "replace", "path": "/nodes/0/id", "value": "x"}},
    {"operations": ["replace /nodes/0/id"]},
    {"description": "no operations"},
    {"operations": [{"op": "test", "path": "/nodes/0/id", "value": "fetch"}], "desc": "typo"},
], ids=["empty", "an object", "a string op", "missing", "unknown field"])
def test_a_malformed_patch_request_is_a_400(api, fetcher, body):
    response = api.patch(f"{API}/workflows/fetcher/patch", body, format="json")

    answer = assert_error(response, 400, "validation_error")
    assert answer["details"]["field"] and answer["details"]["rule"], answer  # a nested field's too
    assert WorkflowVersion.objects.count() == 1


def test_an_operation_that_is_not_an_object_is_named_with_its_rule(api, fetcher):
    """The handler named the nested field (``operations.1``) and looked its rule up under the
    top-level key, so the rule was null; the two come from one walk now."""
    operations = [{"op": "test", "path": "/nodes", "value": []}, 1]

    answer = assert_error(patch(api, "fetcher", operations), 400, "validation_error")

    assert (answer["details"]["field"], answer["details"]["rule"]) == ("operations.1", "not_object"), answer
    assert answer["message"].startswith("operations.1: "), answer
    assert WorkflowVersion.objects.count() == 1


def test_patching_an_unknown_tag_is_a_404(api):
    response = patch(api, "nope", [{"op": "replace", "path": "/nodes/0/id", "value": "x"}])

    assert_error(response, 404, "not_found")
    assert not Workflow.objects.exists()


def test_a_patch_whose_result_is_nested_too_deep_is_a_400(api, fetcher):
    value: Any = 0
    for _ in range(61):  # 61 arrays under /nodes/0/config/payload: 65 levels in all
        value = [value]

    response = patch(api, "fetcher", [{"op": "add", "path": "/nodes/0/config/payload", "value": value}])

    # refused at the operation that would nest it (``definitions._check_depth``), as it is applied
    body = assert_error(response, 400, "invalid_patch")
    assert body["details"] == {"field": "operations", "path": "/operations/0", "rule": "max_depth", "op": 0,
                               "limit": 64}, body
    assert current(api, "fetcher")["artifact_id"] == fetcher["artifact_id"]


def test_a_patch_whose_result_has_too_many_nodes_is_a_400(api, fetcher):
    operations = [{"op": "add", "path": "/nodes/-", "value": {"id": f"n{i}", "type": "transform",
                                                              "config": {"expression": "1"}}} for i in range(999)]

    response = patch(api, "fetcher", operations)

    body = assert_error(response, 400, "invalid_workflow")
    assert problems(body) == {("/nodes", "max_nodes")}
    assert current(api, "fetcher")["nodes_count"] == 2


def test_more_than_a_thousand_operations_are_a_400(api, fetcher):
    operations = [{"op": "test", "path": "/nodes/0/id", "value": "fetch"}] * 1001

    body = assert_error(patch(api, "fetcher", operations), 400, "validation_error")

    assert body["details"]["field"] == "operations"


@pytest.mark.django_db
def test_a_run_patch_past_the_policys_operations_is_refused_as_its_schema_says(user):
    """The run patch's body took 1,000 operations (the OpenAPI document said so) and the policy
    refused past 100: one bound now (``services.patches.MAX_OPERATIONS``), stated in the schema."""
    from tests.api.test_openapi import openapi_json
    from tests.conftest import client_for, stored_run
    from workflows.services.patches import MAX_OPERATIONS

    run = stored_run(user)
    operations = [{"op": "test", "path": "/nodes/0/id", "value": "a"}] * (MAX_OPERATIONS + 1)

    answer = client_for(user).post(f"{API}/runs/{run.pk}/patches", {"operations": operations}, format="json")

    assert answer.status_code == 400, answer.json()
    assert (answer.json()["details"]["field"], answer.json()["details"]["rule"]) == ("operations", "max_length")
    document = openapi_json(client_for(user), data={"format": "json"})
    schema = document["components"]["schemas"]["RunPatchInRequest"]["properties"]["operations"]
    assert schema["maxItems"] == MAX_OPERATIONS
