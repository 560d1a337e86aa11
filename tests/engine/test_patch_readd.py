"""A node a patch removed is not added back under its id: the node run it had (cancelled while
queued, or skipped) is its record for good, and the planner and a join read a node's latest row. Added
back, it found that row standing for it: it never ran, and a join after it ran without it."""

from __future__ import annotations

from tests.api.factories import assert_error
from tests.conftest import client_for, wait_for_run
from tests.engine import test_plain_step
from tests.engine.test_plain_step import T, consumed, node_runs, until
from workflows.models import NodeRun, Run, RunPatch
from workflows.services.runs import run_start

workers_ = test_plain_step.workers_  # the session's workers, a node's execution held until released


def step(node_id: str) -> dict:
    return {"id": node_id, "type": "transform", "config": T}


def queued(run: Run, node_id: str) -> None:
    until(lambda: NodeRun.objects.filter(run=run, node_id=node_id, status="queued").exists(), f"{node_id} queued",
          timeout=30)


def test_a_node_removed_while_queued_is_not_added_back_under_its_id(workers_, user):
    workers_.hold_execution("b", "c")  # b stays queued; c keeps the run going
    run = run_start(owner=user, definition={"nodes": [step("a"), step("b"), step("c")],
                                            "edges": [{"from": "a", "to": "b"}]})
    queued(run, "b")
    api, url = client_for(user), f"/api/v1/runs/{run.pk}/patches"
    removed = api.post(url, {"operations": [{"op": "remove", "path": "/edges/0"},
                                            {"op": "remove", "path": "/nodes/1"}]}, format="json")
    assert removed.status_code == 201, removed.json()
    assert node_runs(run)["b"].status == "cancelled"

    again = [{"op": "add", "path": "/nodes/-", "value": step("b")},
             {"op": "add", "path": "/edges/-", "value": {"from": "a", "to": "b"}}]
    body = assert_error(api.post(url, {"operations": again}, format="json"), 400, "patch_rejected")
    assert {k: body["details"][k] for k in ("rule", "node_id", "op", "path")} == {
        "rule": "node_id_used", "node_id": "b", "op": 0, "path": "/nodes/-"}, body
    assert "new id" in body["message"]
    assert RunPatch.objects.filter(run=run).count() == 1

    renamed = [{"op": "add", "path": "/nodes/-", "value": step("b2")},
               {"op": "add", "path": "/edges/-", "value": {"from": "a", "to": "b2"}}]
    assert api.post(url, {"operations": renamed}, format="json").status_code == 201
    workers_.release_execution("c")
    run = wait_for_run(run.pk)
    assert run.status == Run.Status.COMPLETED, run.error
    rows = node_runs(run)
    assert rows["b2"].status == "completed" and rows["b"].status == "cancelled"


def test_a_join_waits_for_the_step_added_in_place_of_one_removed_while_queued(workers_, user):
    """pay joins check and g; check, removed while queued, cannot come back as ``check`` (its
    cancelled row read as a dead parent and pay ran without it); as ``check2`` pay waits for it."""
    workers_.hold_execution("check", "g", "check2")
    run = run_start(owner=user, definition={"nodes": [step(n) for n in ("a", "check", "g", "pay")],
                                            "edges": [{"from": "a", "to": "check"}, {"from": "check", "to": "pay"},
                                                      {"from": "g", "to": "pay"}]})
    queued(run, "check")
    api, url = client_for(user), f"/api/v1/runs/{run.pk}/patches"
    removed = api.post(url, {"operations": [{"op": "remove", "path": "/edges/1"}, {"op": "remove", "path": "/edges/0"},
                                            {"op": "remove", "path": "/nodes/1"}]}, format="json")
    assert removed.status_code == 201, removed.json()

    def back(node_id: str) -> list[dict]:
        return [{"op": "add", "path": "/nodes/-", "value": step(node_id)},
                {"op": "add", "path": "/edges/-", "value": {"from": "a", "to": node_id}},
                {"op": "add", "path": "/edges/-", "value": {"from": node_id, "to": "pay"}}]

    body = assert_error(api.post(url, {"operations": back("check")}, format="json"), 400, "patch_rejected")
    assert (body["details"]["rule"], body["details"]["node_id"]) == ("node_id_used", "check"), body
    assert api.post(url, {"operations": back("check2")}, format="json").status_code == 201
    queued(run, "check2")
    workers_.release_execution("g")
    consumed(run, "g")  # g's decision is made: pay waits for check2
    assert not NodeRun.objects.filter(run=run, node_id="pay").exists(), node_runs(run)
    workers_.release_execution("check2")
    run = wait_for_run(run.pk)
    assert run.status == Run.Status.COMPLETED, run.error
    rows = node_runs(run)
    assert rows["check2"].status == rows["pay"].status == "completed"
    assert rows["pay"].started_at >= rows["check2"].finished_at
