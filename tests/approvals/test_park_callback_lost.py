"""A ``hitl`` executor's worker killed whole after the park committed, before Celery published the
linked coordinator message that decides the run's next status: the node run waits, its approval
exists, and nothing would move the run from ``running`` to ``waiting_for_approval``. The sweeper
finds the park still undecided (``NodeRun.undecided_since``) and asks the coordinator for that
same decision; approving then completes the run, its gate routed once. The control switches off
only that pass of the sweeper (``aob:test:undecided_parks_off``) and the run stays ``running``.

The worker is killed whole (main process and pool, as a deploy's SIGKILL does): a pool process
killed alone has its executor message put back by Celery, whose second delivery finds the node
run waiting and its link still sends the coordinator message."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psutil
import pytest
from django.contrib.auth.models import User

from approvals.models import Approval
from tests.approvals.runs import WAITING, decide, events, finished, statuses, submit, wait_until
from tests.conftest import wait_for_run
from tests.engine.flow import unique
from tests.faults.harness import Victim, hooks, mark_stall, wait_stalled
from workflows.models import Event, NodeRun, Run
from workflows.registry import queue_for

pytestmark = pytest.mark.fault


def gated_flow(gate: str) -> dict[str, Any]:
    """prepare → gate (hitl) → refund when approved."""
    return {"nodes": [{"id": "prepare", "type": "transform", "config": {"expression": "{'amount': inputs.amount}"}},
                      {"id": gate, "type": "hitl", "config": {"message": "Refund ${$nodes.prepare.amount}?"}},
                      {"id": "refund", "type": "transform",
                       "config": {"expression": "{'refunded': nodes.prepare.amount}"}}],
            "edges": [{"from": "prepare", "to": gate}, {"from": gate, "to": "refund", "condition": "$.approved == true"}]}


@pytest.fixture
def hitl_worker(engine: dict[str, Any], stack_env: dict[str, str]) -> Iterator[Victim]:
    """The only consumer of the hitl queue for one test: a worker of its own, which the test kills."""
    victim = Victim(engine, stack_env, [queue_for("hitl")], concurrency=1)
    yield victim
    victim.close()


def park_and_kill(owner: User, worker: Victim) -> tuple[str, str]:
    """Submit a gated run; once its gate's park has committed and its executor is about to publish
    the linked coordinator message, kill that executor's worker whole. Returns (run id, gate)."""
    gate = unique("gate")
    mark_stall("callback", gate)
    run_id = submit(owner, gated_flow(gate), {"amount": 42})
    pid = wait_stalled("callback", gate)
    assert worker.pid in {p.pid for p in psutil.Process(pid).parents()}
    worker.kill_all()
    parked = NodeRun.objects.get(run_id=run_id, node_id=gate)
    assert (parked.status, parked.wait_reason) == ("waiting", "approval")
    assert parked.undecided_since is not None  # marked in the park's transaction
    assert Approval.objects.filter(run_id=run_id, node_id=gate, status=Approval.Status.PENDING).exists()
    assert Run.objects.get(pk=run_id).status == "running"  # the decision that settles it died unsent
    return run_id, gate


def test_a_park_whose_callback_died_is_decided_by_the_sweeper_and_its_approval_routed_once(engine, hitl_worker,
                                                                                           user):
    run_id, gate = park_and_kill(user, hitl_worker)

    run = wait_for_run(run_id, timeout=20, statuses=WAITING)
    assert run.status == "waiting_for_approval", (run.status, run.error)
    assert NodeRun.objects.get(run_id=run_id, node_id=gate).undecided_since is None  # decided once, by its rule

    assert decide(user, Approval.objects.get(run_id=run_id, node_id=gate), True).status_code == 200
    run = finished(run_id)
    assert run.status == "completed", run.error
    assert statuses(run_id) == {"prepare": "completed", gate: "completed", "refund": "completed"}
    refund = NodeRun.objects.get(run_id=run_id, node_id="refund")
    assert (refund.attempts, refund.output) == (1, {"refunded": 42})
    routed = Event.objects.filter(run_id=run_id, node_id__in=[gate, "refund"], type="node_completed")
    assert sorted(routed.values_list("node_id", flat=True)) == sorted([gate, "refund"])  # the resume routed once
    assert len(events(run_id, "workflow_completed")) == 1


@pytest.mark.faults_full  # a slow fault or its control: `make test-faults` only (tests/conftest.py)
def test_control_without_the_undecided_parks_pass_the_run_stays_running(engine, hitl_worker, user):
    """Every other pass of the sweeper still runs; only the one that finds undecided parks is off."""
    hooks().set("aob:test:undecided_parks_off", 1)
    try:
        run_id, gate = park_and_kill(user, hitl_worker)
        with pytest.raises(AssertionError, match="still running"):
            wait_for_run(run_id, timeout=6, statuses=WAITING)  # the sweeper would have asked after 3 s
        parked = NodeRun.objects.get(run_id=run_id, node_id=gate)
        assert parked.status == "waiting" and parked.undecided_since is not None
    finally:
        hooks().delete("aob:test:undecided_parks_off")
    wait_until(lambda: Run.objects.get(pk=run_id).status == "waiting_for_approval", timeout=20,
               what="the run waiting for approval once the pass is back")
