"""Semantics 7 and 8: retries with backoff for transient errors only, each attempt recorded;
`timeout_ms` fails a node with `error_type: "Timeout"`."""

from __future__ import annotations

import json
import time

import pytest
import redis
from django.conf import settings

from tests.engine.flow import (
    edge,
    event_counts,
    http,
    node_runs,
    submit,
    transform,
    unique,
    wait_all,
    wait_until,
)
from workflows.definition.ir import MAX_BACKOFF_MS, backoff_ms_of
from workflows.definition.validation import SCHEMA_PATH

RETRY = {"max_attempts": 3, "backoff_ms": 100, "backoff_multiplier": 2}


def test_transient_failures_are_retried_with_backoff_and_every_attempt_recorded(engine, api, remote):
    key = unique("flaky")
    definition = {
        "nodes": [http("call", f"{remote.base}/flaky/{key}/2", retry=RETRY),
                  transform("after", "nodes.call.body.attempt")],
        "edges": [edge("call", "after")],
    }
    run = wait_all([submit(api, definition)])[0]
    assert run.status == "completed", run.error
    call = node_runs(run)["call"]
    assert call.status == "completed"
    assert call.attempts == 3
    assert [entry["status"] for entry in call.attempt_log] == ["failed", "failed", "completed"]
    assert [entry["attempt"] for entry in call.attempt_log] == [1, 2, 3]
    assert all(entry["error"]["transient"] for entry in call.attempt_log[:2])
    assert node_runs(run)["after"].output == 3
    hits = remote.hits(f"/flaky/{key}/")
    assert len(hits) == 3
    assert hits[1]["at"] - hits[0]["at"] >= 0.05   # backoff_ms (claim accepts 50 ms early)
    assert hits[2]["at"] - hits[1]["at"] >= 0.15   # backoff_ms * multiplier
    counts = event_counts(run)
    assert counts[("node_retrying", "call")] == 2
    assert counts[("node_started", "call")] == 3
    assert counts[("node_completed", "call")] == 1
    assert counts[("node_failed", "call")] == 0


def test_transient_failures_past_max_attempts_fail_the_node(engine, api, remote):
    key = unique("flaky")
    definition = {"nodes": [http("call", f"{remote.base}/flaky/{key}/5",
                                 retry={"max_attempts": 2, "backoff_ms": 50})], "edges": []}
    run = wait_all([submit(api, definition)])[0]
    assert run.status == "failed"
    call = node_runs(run)["call"]
    assert call.status == "failed"
    assert call.attempts == 2
    assert [entry["status"] for entry in call.attempt_log] == ["failed", "failed"]
    assert len(remote.hits(f"/flaky/{key}/")) == 2


def test_non_transient_errors_are_not_retried(engine, api, remote):
    status = {"nodes": [http("node", f"{remote.base}/status/400", config={"fail_on_status": True}, retry=RETRY)],
              "edges": []}
    expression = {"nodes": [transform("node", "inputs.missing.field", retry=RETRY)], "edges": []}
    runs = wait_all([submit(api, status), submit(api, expression)])
    for run in runs:
        assert run.status == "failed"
        node = node_runs(run)["node"]
        assert node.status == "failed"
        assert node.attempts == 1
        assert [entry["status"] for entry in node.attempt_log] == ["failed"]
        assert node.error["error_type"] in {"HTTPStatusError", "ExpressionError"}
        assert not node.error.get("transient")
        assert event_counts(run)[("node_retrying", "node")] == 0
    assert len(remote.hits("/status/400")) == 1


def test_timeout_ms_fails_the_node_with_error_type_timeout(engine, api, remote):
    definition = {
        "nodes": [http("slow", f"{remote.base}/sleep/3", timeout_ms=800), transform("after", "1")],
        "edges": [edge("slow", "after")],
    }
    run = wait_all([submit(api, definition)], timeout=20)[0]
    assert run.status == "failed"
    slow = node_runs(run)["slow"]
    assert slow.status == "failed"
    assert slow.error["error_type"] == "Timeout"
    assert slow.attempts == 1
    assert (slow.finished_at - slow.started_at).total_seconds() < 2.5  # cut short, not waited out
    assert "after" not in node_runs(run)
    assert run.error["node_id"] == "slow"
    assert run.error["error_type"] == "Timeout"


@pytest.mark.parametrize(("sent_ms", "patched_ms", "sleep_s", "log"), [
    # lowered: cut at 1 s, twice (its two tries), not let run its 8 s under the old 60 s
    (60000, 1000, 8, ["sent_again", "failed", "failed"]),
    # raised by the owner: not killed at the 1 s its message was sent with
    (1000, 20000, 3, ["sent_again", "completed"]),
])
def test_a_timeout_ms_patched_while_the_step_is_queued_holds_for_its_first_attempt(
        engine, api, remote, sent_ms, patched_ms, sleep_s, log):
    """The limit a Celery message enforces is set when it is published; the claim reads the
    definition as patched since, and gives back a claim whose message enforces another limit: the
    step is sent again with the claimed limit, unrun, its log saying why, and that counts no try."""
    node_id = unique("queued")
    hooks = redis.Redis.from_url(settings.REDIS_URL)
    hooks.set(f"aob:test:stall:execution:{node_id}", 1)  # its executor holds before the claim: queued
    try:
        run_id = submit(api, {"nodes": [http(node_id, f"{remote.base}/sleep/{sleep_s}", timeout_ms=sent_ms,
                                               retry={"max_attempts": 2, "backoff_ms": 100})],
                              "edges": []})
        wait_until(lambda: hooks.exists(f"aob:test:stalled:execution:{node_id}"), timeout=20, what="held, queued")
        assert node_runs(run_id)[node_id].status == "queued"
        patched = api.post(f"/api/v1/runs/{run_id}/patches", {"operations": [
            {"op": "replace", "path": "/nodes/0/timeout_ms", "value": patched_ms}]}, format="json")
        assert patched.status_code == 201, patched.json()
    finally:
        hooks.set(f"aob:test:stall_release:execution:{node_id}", 1)
    started = time.monotonic()
    run = wait_all([run_id], timeout=40)[0]
    took = time.monotonic() - started
    step, ends = node_runs(run)[node_id], log[-1]
    assert (step.status, run.status) == (ends, ends), (step.error, took)
    assert [entry["status"] for entry in step.attempt_log] == log
    again = step.attempt_log[0]
    assert (again["reason"], again["sent_ms"], again["timeout_ms"]) == ("timeout_changed", sent_ms, patched_ms)
    retrying = [e.data for e in run.events.filter(type="node_retrying").order_by("seq")]
    assert len(retrying) == len(log) - 1  # the claim given back, and a retry's
    assert (retrying[0].get("reason"), retrying[0].get("timeout_ms")) == ("timeout_changed", patched_ms)
    if ends == "failed":
        assert step.error["error_type"] == "Timeout"
        assert took < 6, took  # two tries of 1 s, and the backoff
    else:
        assert step.output["body"]["slept"] == sleep_s
    hooks.delete(*(f"aob:test:{key}:execution:{node_id}" for key in ("stalled", "stall_release")))


def test_each_wait_between_attempts_is_at_most_an_hour_the_schemas_largest_backoff():
    schema = json.loads(SCHEMA_PATH.read_text())
    retry_schema = schema["$defs"]["node"]["properties"]["retry"]["properties"]
    assert MAX_BACKOFF_MS == retry_schema["backoff_ms"]["maximum"]
    largest = {"max_attempts": retry_schema["max_attempts"]["maximum"], "backoff_ms": 1000,
               "backoff_multiplier": retry_schema["backoff_multiplier"]["maximum"]}
    waits = [backoff_ms_of(largest, attempt) for attempt in range(1, largest["max_attempts"])]
    assert waits[:4] == [1000, 10_000, 100_000, 1_000_000]
    assert waits[4:] == [MAX_BACKOFF_MS] * (len(waits) - 4)  # uncapped, attempt 15 overflowed a date
    assert backoff_ms_of({"backoff_ms": 100, "backoff_multiplier": 2}, 3) == 400
    assert backoff_ms_of(None, 1) == 1000
