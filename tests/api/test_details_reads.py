"""``GET /runs/{id}/details`` reads a fixed, small number of statements, however many nodes and
iterations the run has (the latest iteration of each node with its count in one statement, the
inline fields in one), and its counts and fields are those of the stored node runs."""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.conftest import client_for, wait_for_run
from workflows.services.runs import run_start

ONE = {"nodes": [{"id": "t", "type": "transform", "config": {"expression": "1", "dispatch": "queue"}}], "edges": []}
LOOP = {"nodes": [{"id": "body", "type": "transform", "config": {"expression": "iteration", "dispatch": "queue"}},
                  {"id": "again", "type": "loop", "config": {"max_iterations": 4, "loop_back_to": "body",
                                                             "condition": "true"}},
                  {"id": "after", "type": "transform", "config": {"expression": "2", "dispatch": "queue"}}],
        "edges": [{"from": "body", "to": "again"}, {"from": "again", "to": "after"}]}


def details(api: Any, run_id: Any) -> tuple[dict[str, Any], list[str]]:
    with CaptureQueriesContext(connection) as reads:
        response = api.get(f"/api/v1/runs/{run_id}/details")
    assert response.status_code == 200, response.content
    return response.json(), [q["sql"][:80] for q in reads.captured_queries]


def test_details_reads_the_same_few_statements_for_one_node_or_many_iterations(engine: Any, user: Any) -> None:
    small = wait_for_run(run_start(owner=user, definition=ONE, inputs={}).pk)
    large = wait_for_run(run_start(owner=user, definition=LOOP, inputs={}).pk)
    assert small.status == large.status == "completed", (small.error, large.error)
    api = client_for(user)

    small_body, small_reads = details(api, small.pk)
    large_body, large_reads = details(api, large.pk)

    # token and user, run, definition, latest node runs with counts and field sizes, fields,
    # refusals, and the finished run's result (its terminal nodes' outputs, workflows/results.py)
    assert len(small_reads) == len(large_reads) == 7, "\n".join(small_reads + ["--"] + large_reads)
    nodes = {n["node_id"]: n for n in large_body["nodes"]}
    stored = {node_id: large.node_runs.filter(node_id=node_id) for node_id in nodes}
    for node_id, node in nodes.items():
        latest = stored[node_id].order_by("-iteration").first()
        assert node["iterations"] == stored[node_id].count()
        assert (node["status"], node["output"], node["input"]) == (latest.status, latest.output, latest.input)
        assert node["attempt_log"] == latest.attempt_log
    assert nodes["body"]["iterations"] == 4 and nodes["body"]["output"] == 3
    assert small_body["nodes"][0]["output"] == 1 and small_body["patches"] == []
