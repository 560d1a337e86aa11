"""Cancelling a run with many child runs: the request (or the decision that failed the parent)
cancels none of them itself; bounded tasks on the maintenance queue cancel the whole tree."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from approvals.models import Approval
from subflows.models import SubRun
from subflows.services import CANCEL_BATCH
from tests.approvals.runs import decide
from tests.approvals.test_notifications import not_consuming
from tests.conftest import stored_run
from tests.engine.flow import wait_until
from tests.faults.harness import hooks
from tests.subflows.test_subflows import parent, start
from workflows.models import Event, NodeRun, Run
from workflows.registry import MAINTENANCE_QUEUE
from workflows.services.definitions import workflow_save

CHILDREN = CANCEL_BATCH + 2  # one task's batch, and the task again for the rest


def _children(parent: Run, count: int, depth: int = 1) -> list[Run]:
    """``count`` child runs of ``parent``, each started by a ``workflow`` node run that waits for it."""
    children = []
    for i in range(count):
        node = NodeRun.objects.create(run=parent, node_id=f"w{i}", node_type="workflow", status="waiting",
                                      wait_reason="workflow")
        child = stored_run(parent.owner)
        SubRun.objects.create(parent_run=parent, parent_node_run=node, child_run=child, depth=depth)
        children.append(child)
    return children


def test_cancelling_a_parent_of_many_children_answers_in_a_bounded_number_of_queries(engine, api, user):
    """The tasks alone cancel the tree: the sweep, their backstop, is off."""
    hooks().set("aob:test:subflows_sweep_off", 1)
    try:
        parent = stored_run(user)
        children = _children(parent, CHILDREN)
        grandchildren = _children(children[0], 3, depth=2)

        with CaptureQueriesContext(connection) as queries:
            assert api.post(f"/api/v1/runs/{parent.pk}/cancel").status_code == 200

        # a cancel of a run without children is about 15 statements; each child cancelled in the
        # request added about 20 (300 children: 6,000 statements, 4 s of a web process)
        assert len(queries) < 30, len(queries)
        tree = [c.pk for c in children + grandchildren]
        wait_until(lambda: not Run.objects.filter(pk__in=tree).exclude(status="cancelled").exists(),
                   what="every child and grandchild cancelled")
    finally:
        hooks().delete("aob:test:subflows_sweep_off")


def test_the_timeout_sweep_takes_the_owners_in_turn(engine, make_user, monkeypatch):
    """The sweep fails at most ``SWEEP_TIMEOUTS`` waiting nodes past their ``timeout_ms`` a pass. It
    took the oldest deadlines of every owner together: one owner's thousands of due timeouts took
    every pass, and another's waited behind them (a red team's reading). The owners in turn now.
    The workers' own sweep is off meanwhile: a pass of theirs between the deadlines' setting and
    this one took what this one was to take."""
    from datetime import timedelta

    from django.utils import timezone

    from subflows import services

    alice, bob = make_user("alice"), make_user("bob")
    many, one = stored_run(alice), stored_run(bob)
    children = [*_children(many, 3), *_children(one, 1)]
    hooks().set("aob:test:subflows_sweep_off", 1)
    try:
        SubRun.objects.filter(parent_run=many).update(deadline=timezone.now() - timedelta(hours=1))
        SubRun.objects.filter(parent_run=one).update(deadline=timezone.now() - timedelta(minutes=1))  # due last
        monkeypatch.setattr(services, "SWEEP_TIMEOUTS", 2)
        timed_out = services.subflows_sweep()["timed_out"]
    finally:
        hooks().delete("aob:test:subflows_sweep_off")

    assert timed_out == 2

    assert SubRun.objects.get(parent_run=one).settled_at is not None
    assert SubRun.objects.filter(parent_run=many, settled_at__isnull=False).count() == 1
    assert NodeRun.objects.get(run=one, node_id="w0").error["error_type"] == "SubWorkflowTimeout"
    # each parent's decision ends it, and its children are cancelled: the workers are done with them
    wait_until(lambda: not Run.objects.filter(pk__in=[many.pk, one.pk]).exclude(status__in=Run.FINISHED).exists()
               and set(Run.objects.filter(pk__in=[c.pk for c in children]).values_list("status", flat=True))
               == {"cancelled"}, what="both parents ended and every child cancelled")


def test_a_gate_below_a_cancelled_run_is_not_decided_while_its_cancel_waits_on_the_maintenance_queue(
        engine, api, user, make_user, remote):
    """A parent's cancel cancels its children later, on the maintenance queue: until then a child's
    own status is unchanged, and a decision judged by it alone approved a grandchild's gate after
    the whole tree was cancelled, and its ``pay`` sent 5000. Refused, by the run above that ended."""
    bob = make_user("bob")
    gated = {"nodes": [{"id": "gate", "type": "hitl", "config": {"message": "pay?", "approvers": ["bob"]}},
                       {"id": "pay", "type": "http", "config": {"url": f"{remote.base}/echo", "method": "POST",
                                                                "payload": {"amount": 5000}}}],
             "edges": [{"from": "gate", "to": "pay", "condition": "$.approved == true"}]}
    workflow_save(owner=user, tag="gated-pay", definition=gated)
    workflow_save(owner=user, tag="middle", definition={
        "nodes": [{"id": "inner", "type": "workflow", "config": {"tag": "gated-pay"}}], "edges": []})
    run = start(api, parent("middle"), {"n": 1})
    child = wait_until(lambda: SubRun.objects.filter(parent_run=run).first(), what="the child run").child_run
    grandchild = wait_until(lambda: SubRun.objects.filter(parent_run=child).first(), what="the grandchild").child_run
    approval = wait_until(lambda: Approval.objects.filter(run=grandchild, status="pending").first(),
                          what="the grandchild waiting at its gate")
    # each run's decision after its waiting node made (a later one would end it: its tree has ended)
    wait_until(lambda: set(Run.objects.filter(pk__in=[child.pk, grandchild.pk]).values_list("status", flat=True))
               == {"waiting_for_approval"}, what="the middle run and the grandchild decided, waiting")

    with not_consuming(engine["worker"], MAINTENANCE_QUEUE):  # the children's cancel not yet taken
        assert api.post(f"/api/v1/runs/{run.pk}/cancel").status_code == 200
        assert Run.objects.get(pk=child.pk).status not in Run.FINISHED  # its cancel is still to come

        late = decide(bob, approval)
        assert late.status_code == 409, late.json()
        assert late.json()["error"] == "run_finished" and late.json()["details"]["above"] == "cancelled"
        assert str(run.pk) not in late.json()["message"]  # bob may not see the run above
        assert Approval.objects.get(pk=approval.pk).status == "pending" and not approval.decisions.exists()

    # the tree's cancel, once taken, ends the grandchild and its gate: nothing was sent
    assert wait_until(lambda: Run.objects.get(pk=grandchild.pk).status == "cancelled", timeout=30,
                      what="the grandchild cancelled")
    assert Approval.objects.get(pk=approval.pk).status == "cancelled"
    assert not NodeRun.objects.filter(run=grandchild, node_id="pay").exists() and not remote.hits("/echo")


def _run_cancelled(run: Run) -> dict:
    """The run's ``run_cancelled`` event's data: who and why."""
    return Event.objects.get(run=run, type="run_cancelled").data


def test_a_child_takes_no_next_step_once_its_tree_is_cancelled_whatever_its_cancel_waits_on(
        engine, api, user, remote):
    """A parent's cancel reaches its children later, on the maintenance queue. Until then a child's
    node in flight finished and the next one ran: ``pay`` sent 5000 after the whole tree was
    cancelled (200). The child's next decision ends it instead, cancelled, saying why: ``pay`` is not
    queued (a step already queued, its claim would end it so)."""
    workflow_save(owner=user, tag="page-then-pay", definition={"nodes": [
        {"id": "page", "type": "http", "config": {"url": f"{remote.base}/hold/page-then-pay", "method": "GET"}},
        {"id": "pay", "type": "http", "config": {"url": f"{remote.base}/echo", "method": "POST",
                                                 "payload": {"amount": 5000}}}],
        "edges": [{"from": "page", "to": "pay"}]})
    run = start(api, parent("page-then-pay"), {"n": 1})
    child = wait_until(lambda: SubRun.objects.filter(parent_run=run).first(), what="the child run").child_run
    wait_until(lambda: remote.hits("/hold/page-then-pay"), what="the child's page in flight")

    with not_consuming(engine["worker"], MAINTENANCE_QUEUE):  # the children's cancel not yet taken
        assert api.post(f"/api/v1/runs/{run.pk}/cancel").status_code == 200
        remote.release("page-then-pay")  # the node in flight answers: the child's next step is due
        wait_until(lambda: Run.objects.get(pk=child.pk).status in Run.FINISHED, timeout=30,
                   what="the child ended by its own next step, its tree's cancel still queued")

        assert Run.objects.get(pk=child.pk).status == "cancelled"
        assert _run_cancelled(child)["reason"] == "a run above it ended (cancelled)"
        assert NodeRun.objects.get(run=child, node_id="page").status == "completed"  # it was in flight
        assert not NodeRun.objects.filter(run=child, node_id="pay").exists() and not remote.hits("/echo")


def test_a_childs_gate_past_its_deadline_approves_nothing_once_its_tree_is_cancelled(engine, api, user, remote):
    """The deadlines' sweep applied a child's gate's ``on_timeout: approve`` after the whole tree was
    cancelled (its cancel still on the maintenance queue), and what the gate guarded ran. The sweep
    cancels the child instead, the gate with it."""
    from approvals.services import approvals_expire_due

    workflow_save(owner=user, tag="timed-pay", definition={"nodes": [
        {"id": "gate", "type": "hitl", "config": {"message": "pay?", "timeout_ms": 600000, "on_timeout": "approve"}},
        {"id": "pay", "type": "http", "config": {"url": f"{remote.base}/echo", "method": "POST",
                                                 "payload": {"amount": 5000}}}],
        "edges": [{"from": "gate", "to": "pay", "condition": "$.approved == true"}]})
    run = start(api, parent("timed-pay"), {"n": 1})
    child = wait_until(lambda: SubRun.objects.filter(parent_run=run).first(), what="the child run").child_run
    approval = wait_until(lambda: Approval.objects.filter(run=child, status="pending").first(),
                          what="the child waiting at its gate")

    with not_consuming(engine["worker"], MAINTENANCE_QUEUE):  # the children's cancel not yet taken
        assert api.post(f"/api/v1/runs/{run.pk}/cancel").status_code == 200
        Approval.objects.filter(pk=approval.pk).update(deadline=timezone.now() - timedelta(seconds=1))
        approvals_expire_due()  # the sweep's pass, as beat sends it

        assert Run.objects.get(pk=child.pk).status == "cancelled"
        assert _run_cancelled(child)["reason"] == "a run above it ended (cancelled)"
        assert Approval.objects.get(pk=approval.pk).status == "cancelled"
        assert NodeRun.objects.get(run=child, node_id="gate").status == "cancelled"
        assert not NodeRun.objects.filter(run=child, node_id="pay").exists() and not remote.hits("/echo")


@contextmanager
def _cancelled_before_its_tree(engine, api, remote, run: Run, held: str, below: Run) -> Iterator[Run]:
    """``run`` cancelled while the maintenance queue (its tree's cancel) is not consumed, then the
    request ``held`` let answer: ``below`` as it ended by that, the queue still not consumed."""
    with not_consuming(engine["worker"], MAINTENANCE_QUEUE):
        assert api.post(f"/api/v1/runs/{run.pk}/cancel").status_code == 200
        remote.release(held)
        wait_until(lambda: Run.objects.get(pk=below.pk).status in Run.FINISHED, timeout=30,
                   what=f"run {below.pk} ended, its tree's cancel still queued")
        yield Run.objects.get(pk=below.pk)


def test_the_middle_run_of_a_cancelled_tree_ends_cancelled_not_failed(engine, api, user, remote):
    """Three levels, the top cancelled while the tree's cancel waits on the maintenance queue: the
    grandchild's next claim cancels it, and its end resumes the middle run's ``workflow`` node with
    ``SubWorkflowCancelled``. The middle run's own decision failed it ("child run ... cancelled"):
    its tree was cancelled, so its decision cancels it instead, saying why."""
    workflow_save(owner=user, tag="held-page-then-pay", definition={"nodes": [
        {"id": "page", "type": "http", "config": {"url": f"{remote.base}/hold/held-ptp", "method": "GET"}},
        {"id": "pay", "type": "http", "config": {"url": f"{remote.base}/echo", "method": "POST",
                                                 "payload": {"amount": 5000}}}],
        "edges": [{"from": "page", "to": "pay"}]})
    workflow_save(owner=user, tag="middle", definition={
        "nodes": [{"id": "inner", "type": "workflow", "config": {"tag": "held-page-then-pay"}}], "edges": []})
    run = start(api, parent("middle"), {"n": 1})
    middle = wait_until(lambda: SubRun.objects.filter(parent_run=run).first(), what="the child run").child_run
    grandchild = wait_until(lambda: SubRun.objects.filter(parent_run=middle).first(), what="the grandchild").child_run
    wait_until(lambda: remote.hits("/hold/held-ptp"), what="the grandchild's page in flight")

    with _cancelled_before_its_tree(engine, api, remote, run, "held-ptp", middle) as middle:  # by the grandchild's end
        assert Run.objects.get(pk=grandchild.pk).status == "cancelled"
        assert middle.status == "cancelled", (middle.status, middle.error)
        assert _run_cancelled(middle)["reason"] == "a run above it ended (cancelled)"
        assert not remote.hits("/echo")


def test_a_child_whose_tree_was_cancelled_does_not_end_completed_by_its_pure_steps(engine, api, user, remote):
    """The child's page in flight answers after its tree was cancelled (its own cancel still on the
    maintenance queue); what follows is a transform the coordinator evaluates in the decision, no
    claim: the child ended ``completed`` under a cancelled tree. Its decision cancels it instead."""
    workflow_save(owner=user, tag="held-page-then-sum", definition={"nodes": [
        {"id": "page", "type": "http", "config": {"url": f"{remote.base}/hold/held-pts", "method": "GET"}},
        {"id": "sum", "type": "transform", "config": {"expression": "{'label': 'done'}"}}],
        "edges": [{"from": "page", "to": "sum"}]})
    run = start(api, parent("held-page-then-sum"), {"n": 1})
    child = wait_until(lambda: SubRun.objects.filter(parent_run=run).first(), what="the child run").child_run
    wait_until(lambda: remote.hits("/hold/held-pts"), what="the child's page in flight")

    with _cancelled_before_its_tree(engine, api, remote, run, "held-pts", child) as child:
        assert child.status == "cancelled"
        assert _run_cancelled(child)["reason"] == "a run above it ended (cancelled)"
        assert NodeRun.objects.get(run=child, node_id="page").status == "completed"  # it was in flight
        assert not NodeRun.objects.filter(run=child, node_id="sum").exists()
