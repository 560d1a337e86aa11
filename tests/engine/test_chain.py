"""A→B→C on real workers: order of events, resolution of references."""

from __future__ import annotations

from tests.conftest import wait_for_run
from workflows.models import Event, NodeRun


def chain() -> dict:
    return {
        "nodes": [
            {"id": "a", "type": "transform", "config": {"expression": "{'x': inputs.n + 1, 'body': {'id': 7}}"}},
            {"id": "b", "type": "transform", "config": {"template": {"typed": "$nodes.a.body.id",
                                                                      "text": "id=${$nodes.a.body.id}",
                                                                      "inp": "$inputs.n"}}},
            {"id": "c", "type": "transform", "config": {"expression": "nodes.b.typed * 2"}},
        ],
        "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}],
    }


def test_chain_completes_with_events_in_order(engine, api):
    response = api.post("/api/v1/runs", {"workflow": chain(), "inputs": {"n": 41}}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["status"] == "queued"
    run = wait_for_run(response.json()["run_id"])
    assert run.status == "completed"
    types = [(e.type, e.node_id) for e in Event.objects.filter(run=run).order_by("seq")]
    assert types == [
        ("workflow_started", ""),
        ("node_started", "a"), ("node_completed", "a"),
        ("node_started", "b"), ("node_completed", "b"),
        ("node_started", "c"), ("node_completed", "c"),
        ("workflow_completed", ""),
    ]
    outputs = {nr.node_id: nr.output for nr in NodeRun.objects.filter(run=run)}
    assert outputs["b"] == {"typed": 7, "text": "id=7", "inp": 41}
    assert outputs["c"] == 14
