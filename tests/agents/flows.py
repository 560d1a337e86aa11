"""Building agent workflows, starting runs and reading back what the model was sent, for the agent tests."""

from __future__ import annotations

import json
from typing import Any

from rest_framework.test import APIClient

from tests.conftest import wait_for_run
from workflows.models import NodeRun, Run

WAITING = {"waiting_for_approval", "completed", "failed", "cancelled"}


def agent(node_id: str = "plan", task: str = "do the task", **config: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "agent", "config": {"task": task, **config}}


def http(node_id: str, url: str, **config: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "http", "config": {"url": url, **config}}


def edge(source: str, target: str) -> dict[str, str]:
    return {"from": source, "to": target}


def add_after(source: str, node: dict[str, Any]) -> list[dict[str, Any]]:
    """RFC 6902 operations adding ``node`` with one edge from ``source``."""
    return [{"op": "add", "path": "/nodes/-", "value": node},
            {"op": "add", "path": "/edges/-", "value": edge(source, node["id"])}]


def start(api: APIClient, nodes: list[dict[str, Any]], edges: list[dict[str, str]] | None = None,
          metadata: dict[str, Any] | None = None, inputs: dict[str, Any] | None = None) -> str:
    definition: dict[str, Any] = {"nodes": nodes, "edges": edges or []}
    if metadata:
        definition["metadata"] = metadata
    response = api.post("/api/v1/runs", {"workflow": definition, "inputs": inputs or {}}, format="json")
    assert response.status_code == 201, response.json()
    return str(response.json()["run_id"])


def finish(run_id: str, timeout: float = 30.0) -> Run:
    return wait_for_run(run_id, timeout=timeout)


def node(run: Run | str, node_id: str) -> NodeRun:
    return NodeRun.objects.get(run_id=getattr(run, "pk", run), node_id=node_id)


def tool_messages(request: dict[str, Any]) -> list[dict[str, Any]]:
    """The tool results a recorded LLM request carried back to the model, parsed."""
    return [json.loads(m["content"]) for m in request["body"]["messages"] if m["role"] == "tool"]
