"""Every marker leads to a whole value: a node run's input, output or attempt log that passes the
byte budget of details and iterations (``AOB_DETAILS_MAX_BYTES``) is a marker whose ``href`` reads
it whole (``GET /runs/{id}/nodes/{node_id}/iterations/{iteration}/{field}``; an output with an
artifact, the artifact), to whoever may see the run, reading that one column of that one row."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from tests.api.factories import API, assert_error
from tests.conftest import client_for, stored_run, with_permissions
from workflows.models import Artifact, NodeRun, Run
from workflows.services.artifacts import artifact_store

# each past the budget below on its own
BIG = {"input": {"url": "https://example.com/items", "body": "i" * 200_000},
       "output": {"pad": "o" * 200_000},
       "attempt_log": [{"attempt": 1, "status": "failed", "error": {"message": "e" * 200_000}}]}
BUDGET = 100_000


def node_run(run: Run, field: str, **extra: Any) -> NodeRun:
    """Node ``a`` of ``run`` with ``field`` past the budget and its other fields small."""
    values = {"input": {}, "output": {"ok": True}, "attempt_log": [], field: BIG[field]}
    return NodeRun.objects.create(run=run, node_id="a", node_type="transform", status="completed", attempts=1,
                                  **values, **extra)


def whole(run: Run, field: str, node_id: str = "a", iteration: int = 0) -> str:
    return f"{API}/runs/{run.pk}/nodes/{node_id}/iterations/{iteration}/{field}"


@pytest.mark.parametrize("field", ["input", "attempt_log", "output"])
def test_a_field_past_the_budget_is_a_marker_whose_href_reads_it_whole(user: Any, settings: Any, field: str) -> None:
    """An input or attempt log links to the node run's field even when its output has an artifact;
    an output without an artifact links there too."""
    run = stored_run(user)
    artifact = None if field == "output" else artifact_store(kind=Artifact.Kind.NODE_IO, content={"ok": True})
    stored = node_run(run, field, output_artifact=artifact)
    settings.AOB_DETAILS_MAX_BYTES = BUDGET
    api = client_for(user)

    [node] = api.get(f"{API}/runs/{run.pk}/details").json()["nodes"]
    [listed] = api.get(f"{API}/runs/{run.pk}/nodes/a/iterations").json()["results"]

    marker = node[field]
    assert marker["truncated"] is True and marker["bytes"] > 200_000
    assert marker["href"] == whole(run, field) and listed[field] == marker
    response = api.get(marker["href"])
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert response.json() == {"run_id": str(run.pk), "node_id": "a", "iteration": 0, "field": field,
                               "value": getattr(NodeRun.objects.get(pk=stored.pk), field)}
    assert response.json()["value"] == BIG[field]


def test_the_whole_read_reads_that_one_column_of_that_one_row(user: Any) -> None:
    run = stored_run(user)
    node_run(run, "attempt_log")

    with CaptureQueriesContext(connection) as reads:
        response = client_for(user).get(whole(run, "attempt_log"))

    assert response.status_code == 200, response.content[:300]
    # its kept size first (a value past an answer's budget counts against the reader's whole reads),
    # then that one column
    [size, read] = [q["sql"] for q in reads.captured_queries if "workflows_noderun" in q["sql"]]
    assert size.split(" FROM ")[0].startswith('SELECT COALESCE("workflows_noderun"."attempt_log_bytes"'), size
    columns = read.split(" FROM ")[0]
    assert columns.startswith('SELECT ("workflows_noderun"."attempt_log")::text') and columns.count('"."') == 1, read


def test_a_passthrough_output_reads_null_as_details_show_it(user: Any) -> None:
    """A node skipped for want of an executor keeps a marker as its output, which is no output."""
    run = stored_run(user)
    NodeRun.objects.create(run=run, node_id="a", node_type="nothing", status="skipped", output={"_passthrough": True})
    api = client_for(user)

    [node] = api.get(f"{API}/runs/{run.pk}/details").json()["nodes"]

    assert node["output"] is None and api.get(whole(run, "output")).json()["value"] is None


def test_whoever_may_not_see_the_run_gets_what_its_other_endpoints_answer(user: Any, make_user: Any) -> None:
    run = stored_run(user)
    node_run(run, "input")
    carol = client_for(make_user("carol"))
    staff = client_for(with_permissions(make_user("root", is_staff=True), "workflows.view_run"))
    iterations = f"{API}/runs/{run.pk}/nodes/a/iterations"

    refused = carol.get(whole(run, "input"))

    assert_error(refused, 404, "not_found")
    assert refused.json() == carol.get(iterations).json()
    assert APIClient().get(whole(run, "input")).status_code == APIClient().get(iterations).status_code == 401
    assert staff.get(whole(run, "input")).json()["value"] == BIG["input"]


@pytest.mark.parametrize(("field", "node_id", "iteration", "named", "details"), [
    ("secrets", "a", 0, "'secrets'", {"field": "secrets"}),
    ("input", "a", 7, "iteration 7", {"node_id": "a", "iteration": 7}),
    ("input", "b", 0, "'b'", {"node_id": "b", "iteration": 0}),
])
def test_an_unknown_field_node_or_iteration_is_a_404_naming_it(user: Any, field: str, node_id: str, iteration: int,
                                                               named: str, details: dict[str, Any]) -> None:
    run = stored_run(user)
    node_run(run, "input")

    body = assert_error(client_for(user).get(whole(run, field, node_id, iteration)), 404, "not_found")

    assert named in body["message"] and body["details"] == details


def test_the_iterations_of_a_node_the_run_does_not_have_are_a_404_and_of_one_not_run_yet_an_empty_page(
        user: Any) -> None:
    """A misspelt node id was an empty page, read as "not run yet"; its field read and its replay
    were each a 404 naming it."""
    run = stored_run(user, {"nodes": [{"id": "a", "type": "transform", "config": {"expression": "1"}},
                                      {"id": "later", "type": "transform", "config": {"expression": "1"}}],
                            "edges": [{"from": "a", "to": "later"}]})
    node_run(run, "input")
    api = client_for(user)

    body = assert_error(api.get(f"{API}/runs/{run.pk}/nodes/lately/iterations"), 404, "not_found")
    assert "'lately'" in body["message"] and body["details"] == {"field": "node_id"}
    page = api.get(f"{API}/runs/{run.pk}/nodes/later/iterations")
    assert page.status_code == 200 and (page.json()["count"], page.json()["results"]) == (0, [])
    assert api.get(f"{API}/runs/{run.pk}/nodes/a/iterations").json()["count"] == 1
