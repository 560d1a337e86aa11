"""Workflow definitions and small request helpers for the API tests."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from rest_framework.test import APIClient

API = "/api/v1"
ERROR_KEYS = {"error", "message", "details"}


def fetch_then_store() -> dict[str, Any]:
    """http → transform: the smallest realistic workflow, with a nested config to patch."""
    return {
        "nodes": [
            {"id": "fetch", "type": "http", "config": {"url": "https://example.com/v1/items", "method": "GET"}},
            {"id": "store", "type": "transform", "config": {"expression": "nodes.fetch.status_code == 200"}},
        ],
        "edges": [{"from": "fetch", "to": "store"}],
    }


def with_url(url: str) -> dict[str, Any]:
    definition = fetch_then_store()
    definition["nodes"][0]["config"]["url"] = url
    return definition


def loop_workflow() -> dict[str, Any]:
    """start → work → again (loop back to work) → done: a cycle that goes through a loop node."""
    return {
        "nodes": [
            {"id": "start", "type": "transform", "config": {"expression": "1"}},
            {"id": "work", "type": "transform", "config": {"expression": "iteration"}},
            {"id": "again", "type": "loop",
             "config": {"max_iterations": 3, "loop_back_to": "work", "condition": "$.value < 3",
                        "break_path": "done"}},
            {"id": "done", "type": "transform", "config": {"expression": "2"}},
        ],
        "edges": [{"from": "start", "to": "work"}, {"from": "work", "to": "again"},
                  {"from": "again", "to": "work"}],
    }


def many_nodes(count: int) -> dict[str, Any]:
    return {"nodes": [{"id": f"n{i}", "type": "transform", "config": {"expression": "1"}} for i in range(count)],
            "edges": []}


def nested_lists(depth: int, leaf: Any = 0) -> Any:
    """``depth`` levels of JSON arrays around ``leaf`` (built without recursion)."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def deep_workflow(body_depth: int) -> dict[str, Any]:
    """A valid workflow whose POST body ``{"tag_name", "workflow": {"metadata": {"deep": [...]}}}``
    is nested exactly ``body_depth`` levels deep (body 1, workflow 2, metadata 3, the arrays after)."""
    definition = fetch_then_store()
    definition["metadata"] = {"deep": nested_lists(body_depth - 3)}
    return definition


def content_id(definition: Any) -> str:
    """The artifact id, computed here independently: sha256 of canonical JSON."""
    canonical = json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def post_workflow(client: APIClient, tag: str, definition: Any, **extra: Any) -> Any:
    return client.post(f"{API}/workflows", {"tag_name": tag, "workflow": definition, **extra}, format="json")


def post_raw(client: APIClient, path: str, body: bytes | str, content_type: str = "application/json") -> Any:
    return client.generic("POST", f"{API}{path}", body, content_type=content_type)


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """The one error format: ``{"error", "message", "details"}`` as JSON, with this status."""
    assert response.status_code == status, (response.status_code, response.content[:500])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert set(body) == ERROR_KEYS, body
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["details"], dict)
    if code is not None:
        assert body["error"] == code, body
    return body


def problems(body: dict[str, Any]) -> set[tuple[str, str]]:
    """The ``(path, rule)`` pairs of a validation error body, each with a message."""
    errors = body["details"]["errors"]
    assert errors and all(set(e) == {"path", "rule", "message"} and e["message"] for e in errors), errors
    return {(e["path"], e["rule"]) for e in errors}


def mutated(change: Any) -> dict[str, Any]:
    definition = copy.deepcopy(fetch_then_store())
    change(definition)
    return definition
