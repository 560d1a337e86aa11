"""A join in a loop's pass reads each parent's node run of that pass, in the decision the coordinator
makes (``coordinator.read_state``), not only in the planner's simulation: a decision reads the latest
node run of each node, and the loop may have gone round since the pass the join belongs to."""

from __future__ import annotations

import pytest

from tests.conftest import stored_run
from workflows.definition.ir import compile_definition
from workflows.engine import coordinator, planner
from workflows.models import NodeRun, Run

pytestmark = pytest.mark.django_db

# Each pass fetches an invoice and checks it; the gate hangs off the body (the loop goes on while
# it waits), and pay joins the pass's invoice and its decision.
INVOICES = {
    "nodes": [{"id": "fetch", "type": "http", "config": {"url": "https://api.example.com/invoice"}},
              {"id": "check", "type": "transform", "config": {"expression": "1"}},
              {"id": "again", "type": "loop", "config": {"max_iterations": 3, "loop_back_to": "fetch"}},
              {"id": "review", "type": "hitl", "config": {"message": "pay it?"}},
              {"id": "pay", "type": "http", "config": {"url": "https://api.example.com/pay", "method": "POST"}}],
    "edges": [{"from": "fetch", "to": "check"}, {"from": "check", "to": "again"}, {"from": "check", "to": "review"},
              {"from": "review", "to": "pay", "condition": "$.approved == true"}, {"from": "fetch", "to": "pay"}],
}


def test_an_approval_decided_after_the_loop_went_round_pays_its_own_pass(user):
    """review(0) is approved while fetch's next pass is still running: the decision read fetch(1)
    (the latest) for pay(0)'s other parent, found it undecided, and pay(0) waited for an edge that
    would never be routed again: the approved invoice was never paid, and the run went on as if."""
    run = stored_run(user, INVOICES)
    Run.objects.filter(pk=run.pk).update(status=Run.Status.RUNNING)
    done = {"status": "completed", "consumed": True, "attempts": 1}
    NodeRun.objects.create(run=run, node_id="fetch", node_type="http", iteration=0, taken=["check", "pay"],
                           output={"status": 200}, **done)
    NodeRun.objects.create(run=run, node_id="check", node_type="transform", iteration=0, taken=["again", "review"],
                           output=1, **done)
    NodeRun.objects.create(run=run, node_id="again", node_type="loop", iteration=0, taken=None,
                           output={"iteration": 0, "iterations": 1, "condition": True, "decision": "again"}, **done)
    NodeRun.objects.create(run=run, node_id="fetch", node_type="http", iteration=1, status="running", attempts=1)
    review = NodeRun.objects.create(run=run, node_id="review", node_type="hitl", iteration=0, status="completed",
                                    attempts=1, output={"approved": True, "decision": "approved"})
    run.refresh_from_db()
    ir = compile_definition(INVOICES)

    plan = planner.plan(ir, coordinator.read_state(run, ir), review.pk)

    assert [(t.node_id, t.iteration, t.status) for t in plan.inserts] == [("pay", 0, "queued")]


# Each pass fetches an invoice; its gate hangs off the body, and the payment reads the pass's amount.
PAY_THE_PASS = {
    "nodes": [{"id": "fetch", "type": "http", "config": {"url": "https://api.example.com/invoice"}},
              {"id": "again", "type": "loop", "config": {"max_iterations": 3, "loop_back_to": "fetch"}},
              {"id": "review", "type": "hitl", "config": {"message": "pay it?"}},
              {"id": "pay", "type": "http", "config": {"url": "https://api.example.com/pay", "method": "POST",
                                                       "payload": {"amount": "$nodes.fetch.body.amount"}}},
              {"id": "after", "type": "transform", "config": {"expression": "nodes.fetch.body.amount"}}],
    "edges": [{"from": "fetch", "to": "again"}, {"from": "fetch", "to": "review"},
              {"from": "review", "to": "pay", "condition": "$.approved == true"}, {"from": "again", "to": "after"}],
}


def test_a_step_of_a_loop_s_pass_reads_that_pass_s_outputs(user):
    """review(0) was approved for invoice 0 (5) after the loop had fetched invoice 1 (5,000): pay(0)
    read each referenced node's latest node run, whatever its pass, and paid 5,000 on the approval
    of 5. A step after the loop (its exit) reads the last pass's, as before."""
    from workflows.engine import execution

    run = stored_run(user, PAY_THE_PASS)
    done = {"status": "completed", "consumed": True, "attempts": 1}
    for iteration, amount in ((0, 5), (1, 5000)):
        NodeRun.objects.create(run=run, node_id="fetch", node_type="http", iteration=iteration,
                               taken=["again", "review"], output={"status": 200, "body": {"amount": amount}}, **done)
    NodeRun.objects.create(run=run, node_id="again", node_type="loop", iteration=0, taken=None,
                           output={"iteration": 0, "iterations": 1, "condition": True, "decision": "again"}, **done)
    NodeRun.objects.create(run=run, node_id="again", node_type="loop", iteration=1, taken=["after"],
                           output={"iteration": 1, "iterations": 2, "condition": False, "decision": "break"}, **done)
    NodeRun.objects.create(run=run, node_id="review", node_type="hitl", iteration=0, taken=["pay"],
                           output={"approved": True, "decision": "approved"}, **done)
    pay = NodeRun.objects.create(run=run, node_id="pay", node_type="http", iteration=0, status="queued")
    after = NodeRun.objects.create(run=run, node_id="after", node_type="transform", iteration=0, status="queued")

    assert execution.claim(pay.pk).outputs["fetch"]["body"] == {"amount": 5}
    assert execution.claim(after.pk).outputs["fetch"]["body"] == {"amount": 5000}
