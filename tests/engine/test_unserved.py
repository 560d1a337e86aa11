"""A node whose queue no worker consumes (workers started with ``--node-types`` for other types, a
type's plugin dropped from the workers): the sweeper says so on the node run (``wait_reason``
``worker``) and in the run's events (``node_unserved``, naming the queue), once; a worker that
starts later takes it, and the reason goes with the claim. So does a finished node whose decision sits
on a coordinator queue no worker consumes."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from django.utils import timezone
from rest_framework.test import APIClient

from aob_project.celery import COORDINATOR_QUEUE
from tests.conftest import wait_for_run
from tests.engine.flow import submit, transform, unique, wait_until
from tests.engine.victim import control
from tests.support import stack
from workflows.engine import sweeper
from workflows.models import NodeRun, Run


def _node(api: Any, run_id: str, node_id: str) -> dict[str, Any]:
    details = api.get(f"/api/v1/runs/{run_id}/details").json()
    return next(n for n in details["nodes"] if n["node_id"] == node_id)


def test_a_node_no_worker_serves_says_why_it_waits_and_goes_on_once_one_does(
        engine: Any, api: Any, stack_env: dict[str, str]) -> None:
    loud = unique("loud")  # the session worker serves every queue but the example type's
    run_id = submit(api, {"nodes": [{"id": loud, "type": "shout", "config": {"text": "hi"}}], "edges": []})

    node = wait_until(lambda: (n := _node(api, run_id, loud))["wait_reason"] == "worker" and n, timeout=45,
                      what="the node's wait_reason")
    assert node["status"] == "queued" and node["waiting_for"].startswith("a worker: none running consumes its queue")
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


def test_a_node_no_worker_serves_of_a_deactivated_owner_fails_as_its_claim_would(engine: Any, api: Any,
                                                                                   user: Any) -> None:
    """Nothing of a deactivated owner's run starts (its claim fails the node ``owner_inactive``),
    but no worker came to claim it: the run stayed queued for ever, which nobody could end (its
    owner cannot sign in, staff cannot cancel another's run) and no prune removes (unfinished)."""
    loud = unique("loud")
    run_id = submit(api, {"nodes": [{"id": loud, "type": "shout", "config": {"text": "hi"}}], "edges": []})
    wait_until(lambda: _node(api, run_id, loud)["wait_reason"] == "worker", timeout=45, what="the node's wait_reason")

    user.is_active = False
    user.save(update_fields=["is_active"])

    run = wait_for_run(run_id, timeout=45)
    assert run.status == Run.Status.FAILED
    assert (run.error["node_id"], run.error["error_type"]) == (loud, "owner_inactive"), run.error
    node = NodeRun.objects.get(run_id=run_id, node_id=loud)  # (the owner's token went with the deactivation)
    assert (node.status, node.error["rule"], node.wait_reason) == ("failed", "owner_active", "")


def test_a_service_queue_no_worker_consumes_is_named_by_the_health_answer_and_on_the_runs_it_holds(
        engine: Any, api: Any) -> None:
    """A deployment that lists its workers' queues itself and leaves one out: with wf.output, a
    completed run's page said "Computing the output…" for ever; with wf.triggers no schedule fired,
    with wf.notify no approver heard, and nothing said so. The check beat sends every minute
    (``sweeper.check_service_queues``, asked here twice as beat would) names each in the health
    answer, and a run whose output waits on it says so in its events."""
    from workflows.engine.sweeper import check_service_queues
    from workflows.models import Event

    worker = engine["worker"].node_name
    node_id = unique("double")
    control(worker, "cancel_consumer", "wf.output")
    try:
        run_id = submit(api, {"nodes": [transform(node_id, "21 * 2")], "edges": [],
                              "metadata": {"output": {"expression": f"nodes.{node_id}"}}})
        wait_until(lambda: Run.objects.get(pk=run_id).status == "completed", timeout=30, what="the run's end")
        assert check_service_queues() == []  # one answer: a worker's late answer is not taken for none
        assert check_service_queues() == ["wf.output"]
        health = APIClient().get("/api/v1/health").json()
        assert health["status"] == "degraded", health
        assert health["checks"]["queues"].startswith("unserved: wf.output (no run's metadata.output is computed")
        assert "-Q wf.output" in health["checks"]["queues"]
        said = wait_until(lambda: Event.objects.filter(run_id=run_id, type="node_unserved", data__queue="wf.output")
                          .first(), timeout=45, what="the run's word on its output")
        assert "-Q wf.output" in said.data["message"] and said.node_id == ""
    finally:
        control(worker, "add_consumer", "wf.output")
    assert not wait_for_run(run_id, timeout=60).output_pending  # a consumer back: it is computed
    check_service_queues()
    assert check_service_queues() == []
    assert APIClient().get("/api/v1/health").json()["checks"]["queues"] == "ok"


@pytest.mark.faults_full  # slow: `make test-faults` runs it (tests/conftest.py; the lean faults keep make test short)
def test_a_decision_no_worker_takes_says_why_the_run_waits(engine: Any, api: Any) -> None:
    """Every node done, the run ``running``: the decision of what follows sits on wf.coordinator,
    which no running worker consumes (workers started with ``--node-types`` and no ``-Q``). The
    finished node's ``node_unserved`` event says so, once; a worker consuming it ends the run."""
    worker = engine["worker"].node_name
    only = unique("only")
    control(worker, "cancel_consumer", COORDINATOR_QUEUE)
    try:
        run_id = submit(api, {"nodes": [transform(only, "1")], "edges": []})
        event = wait_until(lambda: next((e for e in api.get(f"/api/v1/runs/{run_id}/events").json()
                                         if e["type"] == "node_unserved"), None), timeout=45, what="node_unserved")
        assert Run.objects.get(pk=run_id).status == Run.Status.RUNNING
        assert event["node_id"] == only and event["data"]["queue"] == COORDINATOR_QUEUE
        assert f"-Q {COORDINATOR_QUEUE}" in event["data"]["message"]
        # the pass says it once: a node its run has told of is not read again (nor told twice)
        assert sweeper._say_undecided(timezone.now()) == 0
    finally:
        control(worker, "add_consumer", COORDINATOR_QUEUE)
    assert wait_for_run(run_id, timeout=30).status == Run.Status.COMPLETED
    assert [e["type"] for e in api.get(f"/api/v1/runs/{run_id}/events").json()].count("node_unserved") == 1


def test_the_health_answer_says_when_no_sweep_finishes(engine: Any, settings: Any) -> None:
    """With beat or the maintenance queue's worker down, nothing re-sends a lost message and no run
    could say so: the health answer does (``degraded``, still 200: the web itself serves)."""
    health = APIClient()
    settings.AOB_SWEEP_STALE_S = 2.5  # the stack sweeps every second
    wait_until(lambda: health.get("/api/v1/health").json()["checks"]["sweeper"] == "ok", timeout=20,
               what="a finished sweep")
    hooks = redis.Redis.from_url(settings.REDIS_URL)
    hooks.set("aob:test:sweeper_paused", 1)  # every sweep does nothing, as with beat stopped
    try:
        answer = wait_until(lambda: (r := health.get("/api/v1/health")).json()["status"] == "degraded" and r,
                            timeout=20, what="a stale sweeper")
        assert answer.status_code == 200
        assert answer.json()["checks"]["sweeper"].startswith("stale: the last sweep finished")
        assert {answer.json()["checks"][part] for part in ("db", "redis", "broker")} == {"ok"}
    finally:
        hooks.delete("aob:test:sweeper_paused")
    wait_until(lambda: (back := health.get("/api/v1/health").json())["status"] == "ok" and {
        part: back["checks"][part] for part in ("db", "redis", "broker", "sweeper")} == {
        "db": "ok", "redis": "ok", "broker": "ok", "sweeper": "ok"}, timeout=20, what="the sweeper back")
