"""A node whose queue no worker consumes (workers started with ``--node-types`` for other types, a
type's plugin dropped from the workers): the sweeper says so on the node run (``wait_reason``
``worker``) and in the run's events (``node_unserved``, naming the queue), once; a worker that
starts later takes it, and the reason goes with the claim."""

from __future__ import annotations

from typing import Any

from tests.conftest import wait_for_run
from tests.engine.flow import submit, unique, wait_until
from tests.support import stack
from workflows.models import Run


def _node(api: Any, run_id: str, node_id: str) -> dict[str, Any]:
    details = api.get(f"/api/v1/runs/{run_id}/details").json()
    return next(n for n in details["nodes"] if n["node_id"] == node_id)


def test_a_node_no_worker_serves_says_why_it_waits_and_goes_on_once_one_does(
        engine: Any, api: Any, stack_env: dict[str, str]) -> None:
    loud = unique("loud")  # the session worker serves every queue but the example type's
    run_id = submit(api, {"nodes": [{"id": loud, "type": "shout", "config": {"text": "hi"}}], "edges": []})

    node = wait_until(lambda: (n := _node(api, run_id, loud))["wait_reason"] == "worker" and n, timeout=20,
                      what="the node's wait_reason")
    assert node["status"] == "queued"
    unserved = [e for e in api.get(f"/api/v1/runs/{run_id}/events").json() if e["type"] == "node_unserved"]
    assert len(unserved) == 1 and unserved[0]["node_id"] == loud
    data = unserved[0]["data"]
    assert data["queue"] == stack.EXAMPLE_QUEUE and data["node_type"] == "shout"
    assert stack.EXAMPLE_QUEUE in data["message"] and "--node-types shout" in data["message"]

    late = stack.start_worker(stack_env, "late-shout", node_types=["shout"], concurrency=1)
    try:
        run = wait_for_run(run_id, timeout=60)
    finally:
        late.stop()
    assert run.status == Run.Status.COMPLETED, run.error
    assert _node(api, run_id, loud)["wait_reason"] == ""
    assert len([e for e in api.get(f"/api/v1/runs/{run_id}/events").json() if e["type"] == "node_unserved"]) == 1
