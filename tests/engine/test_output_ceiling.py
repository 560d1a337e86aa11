"""One node's output is bounded by one rule (``outputs.refuse_large_output``,
``AOB_MAX_NODE_OUTPUT_BYTES``): an output whose JSON as stored passes it fails its node with
``OutputTooLarge`` naming the rule, the limit and the size, is not retried, and nothing of it is
stored (no artifact, no output on the node run); its run fails as for any failed node. One at the
ceiling is stored. Through the real workers, on each path that stores an output: a worker's
completion (a transform, an http node's wrapped body), a pure node in the coordinator's decision,
and a waiting node resumed (a sub-workflow's outputs together)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from subflows.models import SubRun
from tests.conftest import wait_for_run
from tests.engine.flow import edge, event_counts, http, node_runs, run_to_end, transform, unique
from tests.security.conftest import swapped_worker
from tests.support import stack
from workflows.models import Artifact, Event, NodeRun, Run, canonical_json, size_of, text_id
from workflows.services.definitions import workflow_save

CEILING = 50_000
RETRY = {"max_attempts": 3, "backoff_ms": 100, "backoff_multiplier": 1}


@pytest.fixture(scope="module")
def ceiling_worker(workers: dict[str, stack.Proc], stack_env: dict[str, str]) -> Iterator[stack.Proc]:
    """The stack's worker (executors and coordinator alike) with a ceiling of ``CEILING`` bytes for
    the module's tests (a swap costs seconds: once), and a decision budget a loaded machine's
    evaluation of a 50 kB template stays within, so a pure node is evaluated in the decision."""
    with swapped_worker(workers, stack_env, "ceiling", AOB_MAX_NODE_OUTPUT_BYTES=str(CEILING),
                        AOB_DECISION_MAX_MS="5000") as proc:
        yield proc


def padded(node_id: str, *, pure: bool) -> dict[str, Any]:
    """A transform whose output is ``{"pad": inputs.pad}``: ``len(pad) + 10`` bytes as stored."""
    config: dict[str, Any] = {"template": {"pad": "$inputs.pad"}}
    if not pure:
        config["dispatch"] = "queue"
    return {"id": node_id, "type": "transform", "config": config, "retry": RETRY}


def after_a_worker_node(node: dict[str, Any]) -> dict[str, Any]:
    """``node`` behind one a worker runs: a run's start evaluates nothing in place, so a pure node
    is evaluated in a coordinator's decision only when one reaches it."""
    return {"nodes": [transform("lead", "1"), node], "edges": [edge("lead", node["id"])]}


def assert_refused(run: Run, node_id: str, size: int) -> NodeRun:
    """``node_id`` failed once with OutputTooLarge for an output of ``size`` bytes, its run with it,
    and no artifact holds an output past the ceiling."""
    assert run.status == Run.Status.FAILED, (run.status, run.error)
    node = node_runs(run)[node_id]
    assert node.status == NodeRun.Status.FAILED and node.attempts == 1  # not transient: not retried
    error = node.error
    assert {k: error[k] for k in ("error_type", "rule", "limit", "bytes", "transient")} == {
        "error_type": "OutputTooLarge", "rule": "max_output_bytes", "limit": CEILING, "bytes": size,
        "transient": False}
    assert "AOB_MAX_NODE_OUTPUT_BYTES" in error["message"]
    assert node.output is None and node.output_artifact_id is None
    [failed] = Event.objects.filter(run=run, type="node_failed", node_id=node_id)
    assert failed.data["error"] == error
    assert event_counts(run)[("node_completed", node_id)] == 0 and event_counts(run)[("node_retrying", node_id)] == 0
    assert run.error["error_type"] == "OutputTooLarge" and run.error["bytes"] == size
    assert not Artifact.objects.filter(size_bytes__gt=CEILING).exists()
    assert (run.usage or {}).get("output_bytes", 0) <= CEILING  # nothing of it counted as stored
    return node


@pytest.mark.parametrize("pure", [False, True], ids=["worker", "decision"])
def test_an_output_past_the_ceiling_fails_its_node_and_one_at_it_is_stored(
        engine: Any, ceiling_worker: stack.Proc, api: Any, pure: bool) -> None:
    at, past = "p" * (CEILING - 10), "p" * (CEILING - 9)
    assert size_of(canonical_json({"pad": at})) == CEILING

    stored_id, refused_id = unique("at"), unique("past")
    stored = run_to_end(api, after_a_worker_node(padded(stored_id, pure=pure)), {"pad": at})
    refused = run_to_end(api, after_a_worker_node(padded(refused_id, pure=pure)), {"pad": past})

    assert stored.status == Run.Status.COMPLETED, stored.error
    kept = node_runs(stored)[stored_id]
    assert kept.output == {"pad": at} and Artifact.objects.get(pk=kept.output_artifact_id).size_bytes == CEILING
    node = assert_refused(refused, refused_id, CEILING + 1)
    assert not Artifact.objects.filter(pk=text_id(canonical_json({"pad": past}))).exists()
    for ran in (kept, node):  # where it ran: a worker dispatched it, the decision did not
        assert (ran.dispatched_at is None) == pure, ran.dispatched_at


def test_an_http_nodes_wrapped_body_past_the_ceiling_fails_the_node(engine: Any, ceiling_worker: stack.Proc,
                                                                     api: Any, remote: Any) -> None:
    """A body within the request's cap (``AOB_HTTP_MAX_RESPONSE_BYTES``) whose output, wrapped with
    the status, headers and URL, passes the ceiling."""
    fetch = unique("fetch")
    run = run_to_end(api, {"nodes": [http(fetch, f"{remote.base}/big/{CEILING}", retry=RETRY)], "edges": []})

    error = node_runs(run)[fetch].error or {}
    assert error.get("bytes", 0) > CEILING, (run.status, error)
    assert_refused(run, fetch, error["bytes"])


def test_a_resumed_node_past_the_ceiling_fails(engine: Any, ceiling_worker: stack.Proc, api: Any, user: Any) -> None:
    """A sub-workflow node's output is its child's terminal outputs together: each fits the
    ceiling, their sum does not (``execution.resume``)."""
    half = "h" * (CEILING // 2)
    workflow_save(owner=user, tag="halves", definition={
        "nodes": [{"id": "a", "type": "transform", "config": {"template": {"pad": "$inputs.pad"}}},
                  {"id": "b", "type": "transform", "config": {"template": {"pad": "$inputs.pad"}}}],
        "edges": []})
    response = api.post("/api/v1/runs", {"workflow": {"nodes": [
        {"id": "child", "type": "workflow", "config": {"tag": "halves", "inputs": {"pad": "$inputs.pad"}}}],
        "edges": []}, "inputs": {"pad": half}}, format="json")
    assert response.status_code == 201, response.json()

    run = wait_for_run(response.json()["run_id"])

    assert SubRun.objects.get(parent_run=run).child_run.status == Run.Status.COMPLETED
    error = node_runs(run)["child"].error or {}
    assert error.get("bytes", 0) > CEILING, (run.status, error)
    assert_refused(run, "child", error["bytes"])


def test_a_metadata_output_past_the_ceiling_is_an_output_error_not_a_stored_artifact(
        engine: Any, ceiling_worker: stack.Proc, api: Any) -> None:
    """``metadata.output`` is stored as a node's output is, under the same ceiling: past it the run
    stays completed and answers ``output_error`` naming the rule, with nothing stored."""
    node_id = unique("pad")
    past = "p" * CEILING
    definition = {"nodes": [padded(node_id, pure=False)], "edges": [],
                  "metadata": {"output": {"expression": f"{{'twice': [nodes.{node_id}.pad, nodes.{node_id}.pad]}}"}}}
    run = run_to_end(api, definition, {"pad": past[: CEILING // 2]})

    assert run.status == Run.Status.COMPLETED and run.output_artifact_id is None
    assert {k: run.output_error[k] for k in ("error_type", "rule", "limit")} == {
        "error_type": "OutputTooLarge", "rule": "max_output_bytes", "limit": CEILING}
    answer = api.get(f"/api/v1/runs/{run.pk}").json()
    assert answer["output"] is None and answer["output_error"]["rule"] == "max_output_bytes"
