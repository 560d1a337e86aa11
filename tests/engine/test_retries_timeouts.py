"""Semantics 7 and 8: retries with backoff for transient errors only, each attempt recorded;
`timeout_ms` fails a node with `error_type: "Timeout"`."""

from __future__ import annotations

import json

from tests.engine.flow import edge, event_counts, http, node_runs, submit, transform, unique, wait_all
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
