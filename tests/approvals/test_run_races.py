"""People (and the engine) acting on one run at the same moment, through the API, on the real
workers: exactly one of two conflicting actions wins, the other is a 409 naming why, the events
tell it in order, and the run ends."""

from __future__ import annotations

from approvals.models import Approval
from tests.approvals.runs import decide, events, finished, parked, statuses
from tests.conftest import client_for, wait_for_run
from tests.support.races import asked_while_held, together
from workflows.models import Event, NodeRun, Run


def test_two_of_two_approvers_at_the_same_instant_both_count_and_it_settles_once(engine, user, bob, carol):
    run_id, approval = parked(user, {"approvers": ["bob", "carol"], "required_approvals": 2})

    answers = together(2, lambda i: decide([bob, carol][i], approval, True, f"yes {i}"))

    assert sorted(a.status_code for a in answers) == [200, 200], [a.json() for a in answers]
    assert sorted(a.json()["status"] for a in answers) == ["approved", "pending"]
    assert finished(run_id).status == "completed"
    decided = events(run_id, "approval_decided")
    assert [(d["approvals"], d["settled"]) for d in decided] == [(1, None), (2, "approved")]
    assert NodeRun.objects.filter(run_id=run_id, node_id="refund").count() == 1
    assert Event.objects.filter(run_id=run_id, node_id="refund", type="node_completed").count() == 1


def test_a_decision_that_waited_on_a_cancel_is_a_409_and_the_gate_leaves_with_the_run(engine, user, bob):
    from workflows.services.runs import run_cancel

    run_id, approval = parked(user, {"approvers": ["bob"]})
    held, answers = asked_while_held(lambda: run_cancel(run=Run.objects.get(pk=run_id), user=user),
                                      lambda: decide(bob, approval, True))
    assert not isinstance(held[0], Exception), held
    response = answers[0]
    assert response.status_code == 409, (response.status_code, response.content[:300])
    assert response.json()["error"] in ("run_finished", "approval_settled")
    assert finished(run_id).status == "cancelled"
    assert Approval.objects.get(pk=approval.pk).status == "cancelled"
    assert events(run_id, "approval_decided") == []
    assert "refund" not in statuses(run_id)
    assert not NodeRun.objects.filter(run_id=run_id, status__in=NodeRun.ACTIVE).exists()


def test_a_cancel_that_waited_on_a_decision_cancels_what_the_decision_began(engine, user, bob):
    from approvals.services import approval_decide

    run_id, approval = parked(user, {"approvers": ["bob"]})
    held, answers = asked_while_held(
        lambda: approval_decide(approval=Approval.objects.get(pk=approval.pk), user=bob, approve=True),
        lambda: client_for(user).post(f"/api/v1/runs/{run_id}/cancel", {}, format="json"))
    assert not isinstance(held[0], Exception), held
    response = answers[0]
    assert response.status_code == 200, (response.status_code, response.content[:300])
    assert finished(run_id).status == "cancelled"
    assert Approval.objects.get(pk=approval.pk).status == "approved"
    assert not NodeRun.objects.filter(run_id=run_id, status__in=NodeRun.ACTIVE).exists()
    types = list(Event.objects.filter(run_id=run_id).order_by("seq").values_list("type", flat=True))
    assert types.index("approval_decided") < types.index("run_cancelled")
    assert "workflow_completed" not in types


def test_one_replay_sent_four_times_at_once_with_one_key_starts_one_run(engine, api, user, remote):
    from tests.engine.flow import edge, http, submit, transform

    definition = {"nodes": [http("fetch", f"{remote.base}/echo", config={"method": "POST", "payload": {"n": 1}}),
                            transform("shape", "nodes.fetch.body.json.n + 1")],
                  "edges": [edge("fetch", "shape")]}
    source = wait_for_run(submit(api, definition))
    assert source.status == "completed"
    path = f"/api/v1/runs/{source.pk}/nodes/shape/replay"

    answers = together(4, lambda i: client_for(user).post(path, {}, format="json",
                                                           HTTP_IDEMPOTENCY_KEY="replay-once"))

    assert sorted(a.status_code for a in answers) == [200, 200, 200, 201], [a.content[:200] for a in answers]
    assert len({a.json()["run_id"] for a in answers}) == 1
    assert Run.objects.filter(replay_of=source).count() == 1
    assert wait_for_run(answers[0].json()["run_id"]).status == "completed"
