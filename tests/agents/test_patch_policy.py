"""A workflow's ``patch_policy`` gates its agents' patches: ``require_approval`` turns a patch into
an Approval of kind ``patch`` that a person decides; ``deny`` refuses it outright."""

from __future__ import annotations

from approvals.models import Approval
from tests.agents.flows import WAITING, add_after, agent, finish, http, node, start, tool_messages
from tests.conftest import wait_for_run
from workflows.models import Event, NodeRun, RunPatch

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


def test_deny_refuses_the_agents_patch(engine, api, fake_llm, remote):
    run = finish(propose_notify(api, fake_llm, remote, "deny"))

    assert run.status == "completed", run.error
    refusal = tool_messages(fake_llm.requests[1])[0]
    assert refusal["status"] == "error" and refusal["error"] == "patch_denied"
    assert not RunPatch.objects.filter(run=run).exists() and not Approval.objects.filter(run=run).exists()
    assert list(run.node_runs.values_list("node_id", flat=True)) == ["plan"]
    assert run.current_artifact_id == run.base_artifact_id
