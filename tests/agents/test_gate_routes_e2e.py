"""End to end on real workers, through the fake OpenAI server: an agent's patch that would make a
gated payment go out whatever the approver decides is refused, and the payment waits on the gate.
Each patch was accepted before (a red-team helper's findings): the gates' rules read the edges
alone, not the loop exits the engine follows (``validation.control_edges``), and did not see the
declined branch wired into the approved action (``gates.crossed``)."""

from __future__ import annotations

from typing import Any

from approvals.models import Approval
from tests.agents.flows import WAITING, agent, edge, finish, http, node, start
from tests.conftest import wait_for_run
from workflows.models import PatchRefusal, RunPatch

APPROVED = "$.approved == true"
DECLINED = "$.approved == false"


def patching(fake_llm: Any, operations: list[dict[str, Any]]) -> None:
    fake_llm.reset([{"tool_calls": [("patch_workflow", {"operations": operations, "description": "tidy up"})]},
                    {"content": "done"}])


def refused(run_id: str, rule: str) -> None:
    assert not RunPatch.objects.filter(run_id=run_id, status="applied").exists()
    assert list(PatchRefusal.objects.filter(run_id=run_id).values_list("rule", flat=True)) == [rule]


def decline(api: Any, run_id: str) -> None:
    approval = Approval.objects.get(run_id=run_id, node_id="review")
    answer = api.post(f"/api/v1/approvals/{approval.pk}/decide", {"approve": False}, format="json")
    assert answer.status_code == 200, answer.json()


def test_an_edge_around_the_gate_into_a_loop_exit_target_is_refused(engine, api, user, fake_llm, remote):
    """pay is reached only through the author's loop's break_path; the agent adds plan → pay (the
    policy takes pay for an entry already, ``gates.entries``). Bob declines; pay runs."""
    patching(fake_llm, [{"op": "add", "path": "/edges/-", "value": edge("plan", "pay")}])
    run_id = start(api, [agent(tools=["patch_workflow"]),
                         {"id": "review", "type": "hitl", "config": {"message": "Pay?", "approvers": [user.username]}},
                         {"id": "prep", "type": "transform", "config": {"expression": "1"}},
                         {"id": "again", "type": "loop", "config": {"max_iterations": 2, "loop_back_to": "prep",
                                                                    "condition": "false", "break_path": "pay",
                                                                    "timeout_path": "pay"}},
                         http("pay", f"{remote.base}/echo/pay", method="POST", payload={"amount": 100})],
                   [edge("plan", "review"), {**edge("review", "prep"), "condition": APPROVED}, edge("prep", "again")])
    run = wait_for_run(run_id, statuses=WAITING)
    assert node(run, "review").status == "waiting", run.status
    refused(run_id, "gate_bypass")

    decline(api, run_id)
    run = finish(run_id)

    assert remote.hits("/echo/pay") == [], f"declined, and the payment went out (run {run.status})"


def test_the_declined_branch_wired_into_the_action_is_refused(engine, api, user, fake_llm,
                                                                                   remote):
    """The agent adds notify → pay (the gate's own edges untouched). Bob declines: review → notify
    delivers, notify runs, and pay, a join of review (dead) and notify (delivered), runs too."""
    patching(fake_llm, [{"op": "add", "path": "/edges/-", "value": edge("notify", "pay")}])
    run_id = start(api, [agent(tools=["patch_workflow"]),
                         {"id": "review", "type": "hitl", "config": {"message": "Pay?", "approvers": [user.username]}},
                         http("pay", f"{remote.base}/echo/pay", method="POST", payload={"amount": 100}),
                         http("notify", f"{remote.base}/echo/declined", method="POST")],
                   [edge("plan", "review"), {**edge("review", "pay"), "condition": APPROVED},
                    {**edge("review", "notify"), "condition": DECLINED}])
    run = wait_for_run(run_id, statuses=WAITING)
    assert node(run, "review").status == "waiting", run.status
    refused(run_id, "gate_bypass")

    decline(api, run_id)
    run = finish(run_id)

    assert len(remote.hits("/echo/declined")) == 1
    assert remote.hits("/echo/pay") == [], f"declined, and the payment went out (run {run.status})"


def test_removing_the_loop_that_alone_leads_to_the_payment_is_refused(
        engine, api, user, fake_llm, remote):
    """The agent removes the author's (unreached) loop, whose break_path alone led to pay: the policy
    took pay for an entry already and accepts it. Mid-run pay is skipped (dead path); the run's
    definition now starts pay on its own, so the owner's replay from the gate (which "asks again")
    pays at once, before anyone decides."""
    patching(fake_llm, [{"op": "remove", "path": "/edges/2"}, {"op": "remove", "path": "/nodes/3"}])
    run_id = start(api, [agent(tools=["patch_workflow"]),
                         {"id": "review", "type": "hitl", "config": {"message": "Pay?", "approvers": [user.username]}},
                         {"id": "prep", "type": "transform", "config": {"expression": "1"}},
                         {"id": "again", "type": "loop", "config": {"max_iterations": 2, "loop_back_to": "prep",
                                                                    "condition": "false", "break_path": "pay"}},
                         http("pay", f"{remote.base}/echo/pay", method="POST", payload={"amount": 100})],
                   [edge("plan", "review"), {**edge("review", "prep"), "condition": APPROVED}, edge("prep", "again")])
    wait_for_run(run_id, statuses=WAITING)
    refused(run_id, "gate_bypass")
    decline(api, run_id)
    assert finish(run_id).status == "completed"
    assert remote.hits("/echo/pay") == []

    replayed = api.post(f"/api/v1/runs/{run_id}/nodes/review/replay", {}, format="json")
    assert replayed.status_code == 201, replayed.json()
    again = wait_for_run(replayed.json()["run_id"], statuses=WAITING)

    assert node(again, "review").status == "waiting"
    assert remote.hits("/echo/pay") == [], "the replay paid before the gate it asks again decided"


def test_an_approved_agent_s_loop_exit_into_the_action_is_refused(engine, api, user, fake_llm, remote):
    """Bob approves an action in which ``pay`` runs for gold customers only (route's branch rule).
    The agent inside it adds a step and a loop whose break_path is pay: not an edge, so not part of
    the approved action's digest; the patch applies without asking again, and a silver customer is
    paid."""
    loop = {"id": "l", "type": "loop", "config": {"max_iterations": 2, "loop_back_to": "x", "condition": "false",
                                                   "break_path": "pay", "timeout_path": "pay"}}
    patching(fake_llm, [{"op": "add", "path": "/nodes/-", "value": {"id": "x", "type": "transform",
                                                                    "config": {"expression": "1"}}},
                        {"op": "add", "path": "/nodes/-", "value": loop},
                        {"op": "add", "path": "/edges/-", "value": edge("act", "x")},
                        {"op": "add", "path": "/edges/-", "value": edge("x", "l")}])
    run_id = start(api, [http("fetch", f"{remote.base}/echo/invoice"),
                         {"id": "review", "type": "hitl", "config": {"message": "Pay gold?", "approvers": [user.username]}},
                         agent("act", tools=["patch_workflow"]),
                         {"id": "route", "type": "conditional", "config": {}},
                         http("pay", f"{remote.base}/echo/pay", method="POST", payload={"amount": 100}),
                         http("mail", f"{remote.base}/echo/mail")],
                   [edge("fetch", "review"), {**edge("review", "act"), "condition": APPROVED}, edge("act", "route"),
                    {**edge("route", "pay"), "condition": "inputs.tier == 'gold'"}, edge("route", "mail")],
                   inputs={"tier": "silver"})
    wait_for_run(run_id, statuses=WAITING)
    approval = Approval.objects.get(run_id=run_id, node_id="review")
    assert api.post(f"/api/v1/approvals/{approval.pk}/decide", {"approve": True}, format="json").status_code == 200
    run = finish(run_id)

    refused(run_id, "approved_action_started")
    assert len(remote.hits("/echo/mail")) == 1
    assert remote.hits("/echo/pay") == [], f"a silver customer was paid on a gold-only approval (run {run.status})"
