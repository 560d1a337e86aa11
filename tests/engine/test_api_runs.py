"""The runs API on real workers: execute by tag, list filters and pagination, one run, a tag's
runs, details (per-node status, input, output, error, attempts, iterations, timings) whose status
is the run's stored status, and events after a sequence number."""

from __future__ import annotations

from datetime import datetime

from tests.conftest import client_for, wait_for_run
from tests.engine.flow import edge, http, submit, transform, wait_all
from workflows.models import Event, Run


def small() -> dict:
    return {"nodes": [transform("a", "{'v': inputs.v}"), transform("b", "nodes.a.v * 3")], "edges": [edge("a", "b")]}


def failing() -> dict:
    return {"nodes": [transform("a", "inputs.missing.x"), transform("b", "1")], "edges": [edge("a", "b")]}


def save(api, tag: str, definition: dict) -> None:
    response = api.post("/api/v1/workflows", {"tag_name": tag, "workflow": definition}, format="json")
    assert response.status_code in (200, 201), response.json()


def execute(api, tag: str, inputs: dict) -> str:
    response = api.post(f"/api/v1/workflows/{tag}/execute", {"inputs": inputs}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "queued" and body["tag"] == tag and body["artifact_id"].startswith("sha256:")
    return body["run_id"]


def test_execute_by_tag_list_filters_pagination_and_a_tags_runs(engine, api, make_user):
    save(api, "triple", small())
    save(api, "broken", failing())
    triple = [execute(api, "triple", {"v": v}) for v in range(3)]
    broken = execute(api, "broken", {})
    by_tag = api.post("/api/v1/runs", {"tag": "triple", "inputs": {"v": 9}}, format="json")
    assert by_tag.status_code == 201
    triple.append(by_tag.json()["run_id"])
    wait_all([*triple, broken])

    listed = api.get("/api/v1/runs").json()
    assert len(listed["results"]) == 5 and listed["next"] is None
    created = [datetime.fromisoformat(r["created_at"]) for r in listed["results"]]
    assert created == sorted(created, reverse=True)  # newest first

    done = api.get("/api/v1/runs", {"status": "completed"}).json()
    assert {r["run_id"] for r in done["results"]} == set(triple)
    failed = api.get("/api/v1/runs", {"status": "failed"}).json()
    assert [r["run_id"] for r in failed["results"]] == [broken]
    assert api.get("/api/v1/runs", {"status": "nonsense"}).status_code == 400
    tagged = api.get("/api/v1/runs", {"tag": "broken"}).json()
    assert [r["run_id"] for r in tagged["results"]] == [broken]
    both = api.get("/api/v1/runs", {"tag": "triple", "status": "failed"}).json()
    assert both["results"] == []

    # keyset pages: each next link carries a cursor; a run started meanwhile shifts nothing
    first = api.get("/api/v1/runs", {"limit": 2}).json()
    second = api.get(first["next"]).json()
    third = api.get(second["next"]).json()
    pages = [r["run_id"] for page in (first, second, third) for r in page["results"]]
    assert len(pages) == 5 and set(pages) == {*triple, broken}
    assert first["next"] and third["next"] is None
    assert [r["run_id"] for r in api.get(second["previous"]).json()["results"]] == pages[:2]
    assert [r["run_id"] for r in listed["results"]] == pages

    recent = api.get("/api/v1/workflows/triple/runs", {"limit": 2}).json()
    assert len(recent) == 2
    assert [r["run_id"] for r in recent] == [r["run_id"] for r in listed["results"] if r["tag"] == "triple"][:2]
    assert all(r["tag"] == "triple" for r in recent)
    assert len(api.get("/api/v1/workflows/triple/runs").json()) == 4

    one = api.get(f"/api/v1/runs/{triple[0]}").json()
    assert one["run_id"] == triple[0]
    assert one["status"] == "completed" and one["tag"] == "triple" and one["inputs"] == {"v": 0}
    assert one["started_at"] and one["finished_at"]

    other = client_for(make_user("bob"))  # owner-scoped
    assert other.get("/api/v1/runs").json()["results"] == []
    assert other.get(f"/api/v1/runs/{triple[0]}").status_code == 404
    assert other.get(f"/api/v1/runs/{triple[0]}/details").status_code == 404
    assert api.get("/api/v1/runs/not-a-uuid").status_code == 404


def test_an_invalid_version_is_refused_with_no_run_row(engine, api):
    cyclic = {"nodes": [transform("a", "1"), transform("b", "2")], "edges": [edge("a", "b"), edge("b", "a")]}
    response = api.post("/api/v1/runs", {"workflow": cyclic, "inputs": {}}, format="json")
    assert response.status_code == 400
    assert Run.objects.count() == 0


def test_details_of_a_completed_run(engine, api, remote):
    definition = {
        "nodes": [
            http("call", f"{remote.base}/sleep/0.3", config={"query": {"who": "$inputs.who"}}),
            transform("shape", "{'code': nodes.call.status_code}"),
            {"id": "gate", "type": "conditional", "config": {}},
            transform("never", "1"),
        ],
        "edges": [edge("call", "shape"), edge("shape", "gate"), edge("gate", "never", "$.code == 500")],
    }
    run = wait_for_run(submit(api, definition, {"who": "ada"}))
    assert run.status == "completed"
    details = api.get(f"/api/v1/runs/{run.pk}/details").json()
    assert details["run"]["status"] == run.status == Run.objects.get(pk=run.pk).status
    assert details["base_definition"] == details["current_definition"] == definition
    assert details["patches"] == []
    nodes = {n["node_id"]: n for n in details["nodes"]}
    assert list(nodes) == ["call", "shape", "gate", "never"]

    call = nodes["call"]
    assert call["status"] == "completed" and call["type"] == "http"
    assert call["input"]["query"] == {"who": "ada"}  # the resolved config
    assert call["output"]["status_code"] == 200 and call["output"]["body"] == {"slept": 0.3}
    assert call["error"] is None
    assert call["attempts"] == 1 and call["iterations"] == 1
    assert call["attempt_log"][0]["status"] == "completed"
    assert call["execution_time_ms"] >= 300
    assert call["queue_time_ms"] >= 0
    assert call["total_duration_ms"] >= call["execution_time_ms"]
    assert abs(call["total_duration_ms"] - call["queue_time_ms"] - call["execution_time_ms"]) <= 2
    assert nodes["shape"]["output"] == {"code": 200}
    assert nodes["gate"]["status"] == "completed" and nodes["gate"]["output"] == {"code": 200}
    assert nodes["never"]["status"] == "skipped"


def test_details_of_a_failed_run_show_the_error_and_nodes_never_reached(engine, api):
    run = wait_for_run(submit(api, failing()))
    assert run.status == "failed"
    details = api.get(f"/api/v1/runs/{run.pk}/details").json()
    assert details["run"]["status"] == "failed" == Run.objects.get(pk=run.pk).status
    assert details["run"]["error"]["node_id"] == "a"
    nodes = {n["node_id"]: n for n in details["nodes"]}
    assert nodes["a"]["status"] == "failed"
    assert nodes["a"]["error"]["error_type"] == "ExpressionError"
    assert nodes["a"]["output"] is None
    assert nodes["b"]["status"] == "not_executed"
    assert nodes["b"]["attempts"] == 0 and nodes["b"]["iterations"] == 0
    assert nodes["b"]["queue_time_ms"] is None and nodes["b"]["total_duration_ms"] is None


def test_details_count_loop_iterations(engine, api):
    definition = {
        "nodes": [
            transform("body", "{'i': iteration}"),
            {"id": "again", "type": "loop", "config": {"max_iterations": 3, "loop_back_to": "body",
                                                       "condition": "true", "timeout_path": "end"}},
            transform("end", "nodes.body.i"),
        ],
        "edges": [edge("body", "again")],
    }
    run = wait_for_run(submit(api, definition))
    assert run.status == "completed"
    nodes = {n["node_id"]: n for n in api.get(f"/api/v1/runs/{run.pk}/details").json()["nodes"]}
    assert nodes["body"]["iterations"] == 3
    assert nodes["body"]["output"] == {"i": 2}  # the latest iteration
    assert nodes["again"]["iterations"] == 3
    assert nodes["end"]["output"] == 2


def test_details_status_is_the_stored_status_while_running(engine, api, remote):
    run_id = submit(api, {"nodes": [http("slow", f"{remote.base}/sleep/1")], "edges": []})
    seen = set()
    while True:
        stored = Run.objects.get(pk=run_id).status
        shown = api.get(f"/api/v1/runs/{run_id}/details").json()["run"]["status"]
        after = Run.objects.get(pk=run_id).status
        if stored == after:  # no transition in between: they must agree
            assert shown == stored
            seen.add(shown)
        if after == "completed":
            break
    assert "running" in seen
    assert api.get(f"/api/v1/runs/{run_id}/details").json()["run"]["status"] == "completed"


def test_events_after_a_sequence_number(engine, api):
    run = wait_for_run(submit(api, small(), {"v": 1}))
    every = api.get(f"/api/v1/runs/{run.pk}/events").json()
    assert [e["seq"] for e in every] == list(range(1, len(every) + 1))
    assert [e["type"] for e in every][0] == "workflow_started"
    assert [e["type"] for e in every][-1] == "workflow_completed"
    assert len(every) == Event.objects.filter(run=run).count() == 6
    later = api.get(f"/api/v1/runs/{run.pk}/events", {"after": 3}).json()
    assert later == every[3:]
    assert api.get(f"/api/v1/runs/{run.pk}/events", {"after": 6}).json() == []
    assert every[1]["node_id"] == "a" and every[1]["type"] == "node_started"
    assert api.get(f"/api/v1/runs/{run.pk}/events", {"after": "x"}).status_code == 400


def test_a_start_runs_the_version_its_client_read_however_many_were_saved_since(engine, api):
    """The workflow page's Run started whatever version was current at the click: one tab showing
    version 0 ran the version another tab saved meanwhile. A start may name the version it read."""
    save(api, "tabs", small())
    first = api.get("/api/v1/workflows/tabs").json()
    changed = small()
    changed["nodes"][1]["config"]["expression"] = "nodes.a.v * 5"
    save(api, "tabs", changed)  # the other tab

    shown = api.post("/api/v1/workflows/tabs/execute", {"inputs": {"v": 2}, "version": first["version"]},
                     format="json").json()
    by_tag = api.post("/api/v1/runs", {"tag": "tabs", "version": first["version"], "inputs": {"v": 2}},
                      format="json").json()
    current = execute(api, "tabs", {"v": 2})

    outputs = [wait_for_run(run_id).node_runs.get(node_id="b").output for run_id in
               (shown["run_id"], by_tag["run_id"], current)]
    assert outputs == [6, 6, 10], outputs
    missing = api.post("/api/v1/workflows/tabs/execute", {"version": 7}, format="json")
    assert missing.status_code == 404 and "no version 7" in missing.json()["message"]
    loose = api.post("/api/v1/runs", {"workflow": small(), "version": 0}, format="json")
    assert loose.status_code == 400 and loose.json()["details"]["field"] == "version"
