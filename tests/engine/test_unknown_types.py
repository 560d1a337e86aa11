"""A type with no executor does not hang a run: it is completed as `skipped` with a
`node_skipped` warning event, as an entry node too, and the run carries on."""

from __future__ import annotations

from tests.engine.flow import edge, event_counts, events, node_runs, submit, transform, wait_all


def test_unknown_types_are_skipped_with_a_warning_and_the_run_continues(engine, api):
    definition = {
        "nodes": [
            {"id": "entry", "type": "future_feature", "config": {"anything": True}},
            transform("a", "{'n': 1}"),
            {"id": "middle", "type": "aggregate", "config": {}},
            {"id": "fn", "type": "function", "config": {}},
            transform("last", "'reached'"),
        ],
        "edges": [edge("entry", "a"), edge("a", "middle"), edge("middle", "fn"), edge("fn", "last")],
    }
    response = api.post("/api/v1/workflows/validate", {"workflow": definition}, format="json")
    assert response.json()["valid"] is True
    assert {w["rule"] for w in response.json()["warnings"]} == {"unknown_type"}

    run = wait_all([submit(api, definition)])[0]
    assert run.status == "completed", run.error
    nrs = node_runs(run)
    assert {n: nrs[n].status for n in nrs} == {"entry": "skipped", "a": "completed", "middle": "skipped",
                                               "fn": "skipped", "last": "completed"}
    skipped = [e for e in events(run) if e.type == "node_skipped"]
    assert [e.node_id for e in skipped] == ["entry", "middle", "fn"]
    for event in skipped:
        assert event.data["reason"] == "no_executor"
        assert "no executor" in event.data["warning"]
    counts = event_counts(run)
    assert counts[("node_started", "middle")] == 0
    assert counts[("workflow_completed", "")] == 1

    details = api.get(f"/api/v1/runs/{run.pk}/details").json()
    by_id = {n["node_id"]: n for n in details["nodes"]}
    assert by_id["middle"]["status"] == "skipped"
    assert by_id["middle"]["output"] is None


def test_a_run_of_only_unknown_types_completes(engine, api):
    definition = {"nodes": [{"id": "x", "type": "parallel", "config": {}},
                            {"id": "y", "type": "filter", "config": {}}],
                  "edges": [edge("x", "y")]}
    run = wait_all([submit(api, definition)])[0]
    assert run.status == "completed"
    assert {nr.status for nr in node_runs(run).values()} == {"skipped"}
    assert [e.type for e in events(run)] == ["workflow_started", "node_skipped", "node_skipped",
                                             "workflow_completed"]
