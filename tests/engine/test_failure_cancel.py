"""Semantic 9 and cancel: a failing node fails the run and cancels what is queued, with
`node_failed` and `workflow_failed` once each; POST /runs/{id}/cancel stops a run for good."""

from __future__ import annotations

import time

import redis
from django.conf import settings

from tests.conftest import wait_for_run
from tests.engine.flow import (
    edge,
    event_counts,
    events,
    http,
    node_runs,
    submit,
    transform,
    unique,
    wait_until,
)
from workflows.models import NodeRun, Run


def hooks() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


def hold_publish(node_id: str) -> None:
    """Keep a node queued: its first publish is dropped and the sweeper, which would re-send it,
    is paused until ``release_sweeper()``."""
    hooks().set(f"aob:test:drop_publish:{node_id}", 1)
    hooks().set("aob:test:sweeper_paused", 1)


def release_sweeper() -> None:
    hooks().delete("aob:test:sweeper_paused")


def test_a_failing_node_fails_the_run_and_cancels_what_is_queued(engine, api, remote):
    held = unique("held")
    hold_publish(held)
    definition = {
        "nodes": [
            transform("a", "1"),
            http("boom", f"{remote.base}/status/503", config={"fail_on_status": True}),
            transform(held, "'never'"),
            transform("after_boom", "'never'"),
        ],
        "edges": [edge("a", "boom"), edge("a", held), edge("boom", "after_boom")],
    }
    run = wait_for_run(submit(api, definition))
    assert run.status == "failed"
    assert run.error["node_id"] == "boom"
    assert run.error["error_type"] == "HTTPStatusError"
    release_sweeper()
    time.sleep(4)  # past the sweeper's re-publish deadline: a cancelled node must not start
    nrs = node_runs(run)
    assert nrs["boom"].status == "failed"
    assert nrs[held].status == "cancelled"
    assert nrs[held].started_at is None
    assert "after_boom" not in nrs
    counts = event_counts(run)
    assert counts[("node_failed", "boom")] == 1
    assert sum(n for (t, _), n in counts.items() if t == "node_failed") == 1
    assert counts[("workflow_failed", "boom")] == 1
    assert counts[("node_started", held)] == 0
    assert counts[("workflow_completed", "")] == 0
    assert events(run)[-1].type == "workflow_failed"
    assert Run.objects.get(pk=run.pk).status == "failed"


def test_cancel_discards_a_running_node_and_starts_nothing_queued(engine, api, remote):
    held = unique("held")
    hold_publish(held)
    definition = {
        "nodes": [http("slow", f"{remote.base}/sleep/1.5"), transform(held, "'never'"), transform("after", "1")],
        "edges": [edge("slow", "after")],
    }
    run_id = submit(api, definition)
    wait_until(lambda: NodeRun.objects.filter(run_id=run_id, node_id="slow", status="running").exists(),
               what="slow running")
    response = api.post(f"/api/v1/runs/{run_id}/cancel")
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "cancelled"
    release_sweeper()
    wait_until(lambda: remote.hits("/sleep/1.5") and time.time() - remote.hits("/sleep/1.5")[0]["at"] > 1.5,
               what="the slow request answered")
    time.sleep(4)  # the worker has finished the slow node; the sweeper has swept past the held one
    run = Run.objects.get(pk=run_id)
    assert run.status == "cancelled"
    nrs = node_runs(run)
    assert nrs["slow"].status == "cancelled"  # its result was discarded
    assert nrs["slow"].output is None
    assert nrs[held].status == "cancelled"
    assert "after" not in nrs
    counts = event_counts(run)
    assert counts[("run_cancelled", "")] == 1
    assert counts[("node_completed", "slow")] == 0
    assert counts[("node_started", held)] == 0
    assert counts[("workflow_completed", "")] == counts[("workflow_failed", "")] == 0
    assert events(run)[-1].type == "run_cancelled"
    cancelled = events(run)[-1].data["cancelled_nodes"]
    assert sorted(cancelled) == sorted(["slow", held])


def test_cancelling_a_finished_run_is_a_conflict(engine, api):
    run = wait_for_run(submit(api, {"nodes": [transform("a", "1")], "edges": []}))
    assert run.status == "completed"
    response = api.post(f"/api/v1/runs/{run.pk}/cancel")
    assert response.status_code == 409
    assert response.json()["error"] == "run_finished"
    again = api.post(f"/api/v1/runs/{run.pk}/cancel")
    assert again.status_code == 409
    assert Run.objects.get(pk=run.pk).status == "completed"
    assert event_counts(run)[("run_cancelled", "")] == 0


def test_cancelling_twice_gives_one_run_cancelled_event(engine, api, remote):
    run_id = submit(api, {"nodes": [http("slow", f"{remote.base}/sleep/1")], "edges": []})
    assert api.post(f"/api/v1/runs/{run_id}/cancel").status_code == 200
    assert api.post(f"/api/v1/runs/{run_id}/cancel").status_code == 409
    assert event_counts(run_id)[("run_cancelled", "")] == 1
