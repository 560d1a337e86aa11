"""Submitting runs through the API and reading back what the engine did, for the engine tests."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections import Counter
from typing import Any

import redis
from rest_framework.test import APIClient

from aob_project.celery import app
from tests.conftest import TERMINAL, wait_for_run
from workflows.models import Event, NodeRun, Run


def unique(prefix: str) -> str:
    """A node id no other test uses (the drop-publish hook is keyed by node id)."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def transform(node_id: str, expression: str, *, pure: bool = False, **extra: Any) -> dict[str, Any]:
    """A node that runs on a worker (``dispatch: "queue"``), or with ``pure`` in the decision."""
    config = {"expression": expression} if pure else {"expression": expression, "dispatch": "queue"}
    return {"id": node_id, "type": "transform", "config": config, **extra}


def http(node_id: str, url: str, **extra: Any) -> dict[str, Any]:
    config = extra.pop("config", {})
    return {"id": node_id, "type": "http", "config": {"url": url, **config}, **extra}


def edge(source: str, target: str, condition: str | None = None) -> dict[str, Any]:
    return {"from": source, "to": target, **({"condition": condition} if condition else {})}


def submit(api: APIClient, definition: dict[str, Any], inputs: dict[str, Any] | None = None) -> str:
    response = api.post("/api/v1/runs", {"workflow": definition, "inputs": inputs or {}}, format="json")
    assert response.status_code == 201, response.json()
    return str(response.json()["run_id"])


def run_to_end(api: APIClient, definition: dict[str, Any], inputs: dict[str, Any] | None = None,
               timeout: float = 30.0) -> Run:
    return wait_for_run(submit(api, definition, inputs), timeout=timeout)


def wait_all(run_ids: list[str], timeout: float = 60.0) -> list[Run]:
    deadline = time.monotonic() + timeout
    while True:
        runs = list(Run.objects.filter(pk__in=run_ids))
        if all(r.status in TERMINAL and not r.output_pending for r in runs):
            return runs
        if time.monotonic() > deadline:
            late = Counter(r.status for r in runs if r.status not in TERMINAL)
            raise AssertionError(f"runs not finished after {timeout}s: {dict(late)}")
        time.sleep(0.1)


def wait_until(predicate: Any, timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached after {timeout}s")
        time.sleep(0.05)


def _engine_queue(name: bytes | str) -> bool:
    """A node type's queue or the coordinator's (a priority's list carries a suffix after ``\\x06``)."""
    queue = (name.decode() if isinstance(name, bytes) else name).split("\x06")[0]
    return queue == "wf.coordinator" or queue.startswith("wf.tasks.")


def _node_run_of(raw: dict[str, Any]) -> Any:
    """The node run an executor (``[id]``) or coordinator (``[result, id]``) message is about."""
    body = raw["body"]
    if raw["properties"].get("body_encoding") == "base64":
        body = base64.b64decode(body)
    args = json.loads(body)[0]
    return args[-1] if args else None


def wait_drained(node_run_ids: list[int], timeout: float = 15.0) -> None:
    """Wait until no executor or coordinator message about these node runs waits in the (Redis)
    broker or is held by a worker. Tasks ack late, after whatever they publish was sent, and a
    message a worker has taken stays in ``unacked`` until then: every such message sent before this
    call has been handled. Seen twice in a row, for the instant between a worker's pop and its
    ``unacked`` entry. (Messages of other node runs are not waited for: a worker an earlier test
    killed leaves its own in ``unacked`` until the visibility timeout.)"""
    broker = redis.Redis.from_url(app.conf.broker_url)
    ours = set(node_run_ids)

    def drained() -> bool:
        waiting = [json.loads(m) for k in broker.scan_iter("wf.*") if _engine_queue(k) and broker.type(k) == b"list"
                   for m in broker.lrange(k, 0, -1)]
        held = [raw for raw, _, queue in map(json.loads, broker.hvals("unacked")) if _engine_queue(queue)]
        return not any(_node_run_of(raw) in ours for raw in waiting + held)

    wait_until(lambda: drained() and (time.sleep(0.05) or drained()), timeout=timeout,
               what="the node runs' executor and coordinator messages handled")


def node_runs(run: Run | str) -> dict[str, NodeRun]:
    """The latest node run of each node."""
    latest: dict[str, NodeRun] = {}
    for nr in NodeRun.objects.filter(run=run).order_by("node_id", "iteration"):
        latest[nr.node_id] = nr
    return latest


def statuses(run: Run | str) -> dict[str, str]:
    return {node_id: nr.status for node_id, nr in node_runs(run).items()}


def events(run: Run | str) -> list[Event]:
    return list(Event.objects.filter(run=run).order_by("seq"))


def event_counts(run: Run | str) -> Counter[tuple[str, str]]:
    return Counter((e.type, e.node_id) for e in events(run))


def types(run: Run | str) -> Counter[str]:
    return Counter(e.type for e in events(run))
