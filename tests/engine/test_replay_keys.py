"""A replay goes on with its source's unsettled work under the source's ``Idempotency-Key``.

pay (a POST whose remote applies the effect at once, answers slowly and honours the key as Stripe
does) runs beside wait → tell; tell fails while pay's request is at the remote, so the run fails
and pay is stopped mid-request: its effect applied, its answer never came. A person replays tell.
pay did not settle in the source, so it runs in the replay again: under the replay's own run id
its key was new and the payee applied the payment twice. It now carries the source's key
(``Run.key_run``), down a chain of replays, and a sub-workflow's requests carry keys named by the
node that started it, so a child that goes on with the source's child's payment is known outside too.
A payment that runs again after a gate the replay asks again keeps the source's key while it sends
the same request, and gets a new one when the request changed (``idempotency.going_on``). A
sibling that goes on so is begun: no patch changes it in the replay (``RunState.started``), and one
whose request changed all the same is compared with its source's at its first attempt."""

from __future__ import annotations

import json

import pytest
import redis
from django.conf import settings

from approvals.models import Approval
from subflows.models import SubRun
from tests.approvals.runs import decide
from tests.conftest import again_after_a_deadlock, wait_for_run
from tests.engine.flow import edge, http, node_runs, submit, transform, unique, wait_until
from tests.support.remote import Reply
from vault.services import secret_delete, secret_set
from workflows.models import Artifact, NodeRun, Run, Workflow
from workflows.services.artifacts import artifact_store
from workflows.services.definitions import workflow_delete, workflow_save

HOOKS = redis.Redis.from_url(settings.REDIS_URL)  # tests/support/fault_points.py


def _beside(pay_node: dict, remote, hold: str, tell: str) -> dict:
    return {"nodes": [pay_node, http("wait", f"{remote.base}/hold/{hold}"),
                      http("tell", f"{remote.base}/seq/{tell}", config={"fail_on_status": True})],
            "edges": [edge("wait", "tell")]}


def _fail_then_replay(api, remote, run_id: str, paid, hold: str) -> tuple[Run, Run]:
    """tell fails while pay's request is held at the remote; then tell is replayed."""
    wait_until(lambda: paid() and remote.hits(f"/hold/{hold}"), what="the payment sent and the hold")
    remote.release(hold)  # tell runs now, and fails, while pay's answer is still seconds away
    source = wait_for_run(run_id)
    assert source.status == "failed" and source.error["node_id"] == "tell", source.error
    assert len(paid()) == 1  # the payee has it, and no answer came
    response = api.post(f"/api/v1/runs/{source.pk}/nodes/tell/replay")
    assert response.status_code == 201, response.json()
    return source, wait_for_run(response.json()["run_id"])


def test_a_replay_does_not_pay_again_for_a_payment_in_flight_when_the_source_failed(engine, api, remote):
    pay, hold, tell = unique("pay"), unique("hold"), unique("tell")
    remote.script(tell, [Reply(400, {"error": "bad"}), {"sent": True}])
    node = http("pay", f"{remote.base}/effect/{pay}/4", config={"method": "POST", "payload": {"amount": 10}})
    source, replay = _fail_then_replay(api, remote, submit(api, _beside(node, remote, hold, tell)),
                                       lambda: remote.effects(pay), hold)
    assert node_runs(source)["pay"].status != "completed"

    assert replay.status == "completed", replay.error
    effects = remote.effects(pay)
    assert len(effects) == 1, effects  # the repeat is known at the payee: the same key, one payment
    assert replay.key_origins == {"pay/0": str(source.pk)}
    assert node_runs(replay)["pay"].output["body"]["key"] == effects[0]["key"]  # the first request's answer

    # a replay of the replay goes on under the first run's key, down the chain
    again = api.post(f"/api/v1/runs/{replay.pk}/nodes/tell/replay")
    assert again.status_code == 201, again.json()
    assert wait_for_run(again.json()["run_id"]).status == "completed"
    assert len(remote.effects(pay)) == 1


def _paying_child(user, remote, pay: str) -> dict:
    """A ``workflow`` node starting the owner's saved workflow ``pay``, whose one step charges 10 (``/effect``)."""
    workflow_save(owner=user, tag=pay, definition={"nodes": [
        http("charge", f"{remote.base}/effect/{pay}/4", config={"method": "POST", "payload": {"amount": 10}})],
        "edges": []})
    return {"id": "pay", "type": "workflow", "config": {"tag": pay}}


def test_a_replayed_parent_does_not_pay_again_for_its_child_s_payment_in_flight(engine, api, remote, user):
    pay, hold, tell = unique("pay"), unique("hold"), unique("tell")
    remote.script(tell, [Reply(400, {"error": "bad"}), {"sent": True}])
    node = _paying_child(user, remote, pay)
    source, replay = _fail_then_replay(api, remote, submit(api, _beside(node, remote, hold, tell)),
                                       lambda: remote.effects(pay), hold)
    first = SubRun.objects.get(parent_run=source).child_run

    assert replay.status == "completed", replay.error
    effects = remote.effects(pay)
    assert len(effects) == 1, effects  # the second child's charge is known for the first's
    second = SubRun.objects.get(parent_run=replay).child_run
    assert second.pk != first.pk and second.key_origins == first.key_origins


def _charge_failed_beside_wait(api, remote, replies: list, *, sent: int = 1, **charge) -> tuple[str, Run]:
    """A source run whose charge (a POST failing on its status) the remote answers with ``replies``
    while wait is held, let go once ``sent`` attempts of the charge reached it: the run fails at charge."""
    name, hold = unique("charge"), unique("hold")
    remote.script(name, replies)
    definition = {
        "nodes": [
            http("charge", f"{remote.base}/seq/{name}",
                 config={"method": "POST", "payload": {"amount": 10}, "fail_on_status": True}, **charge),
            http("wait", f"{remote.base}/hold/{hold}"),
            transform("after", "1"),
        ],
        "edges": [edge("wait", "after")],
    }
    run_id = submit(api, definition)
    # (up to the 60 s a worker process may still be held by an earlier test's stall or remote hold:
    # a fresh clone's CI once waited past 15 s here for the charge and the hold to go out)
    wait_until(lambda: remote.hits(f"/hold/{hold}") and len(remote.hits(f"/seq/{name}")) == sent,
               timeout=75, what="every charge attempt sent and the hold")
    remote.release(hold)
    source = wait_for_run(run_id)
    assert source.status == "failed" and source.error["node_id"] == "charge", source.error
    return name, source


def test_a_replay_sends_a_sibling_its_remote_answered_a_failure_under_a_new_key(engine, api, remote):
    """charge's remote answered it 402 (card declined) in the source: it settled. Run again beside
    the replayed wait it is a new attempt, under a new key; under the source's, a remote that keeps
    its answers by key (failures too, as Stripe does) declined it again, however often it was
    replayed from anywhere but charge."""
    charge, source = _charge_failed_beside_wait(api, remote, [Reply(402, {"error": "card_declined"}), {"paid": True}])
    assert node_runs(source)["charge"].error["answered"] is True
    first = remote.hits(f"/seq/{charge}")
    assert len(first) == 1 and _key(first[0])

    response = api.post(f"/api/v1/runs/{source.pk}/nodes/wait/replay")
    assert response.status_code == 201, response.json()
    replay = wait_for_run(response.json()["run_id"])

    hits = remote.hits(f"/seq/{charge}")
    assert len(hits) == 2, hits
    assert _key(hits[1]) != _key(hits[0]), replay.key_origins  # the decline was an answer: a new attempt
    assert not replay.key_origins
    assert replay.status == "completed", replay.error


def _key(hit: dict) -> str:
    return next((v for k, v in hit["headers"].items() if k.lower() == "idempotency-key"), "")


@pytest.mark.parametrize("answers", [(409,), (503, 409), (503, 402), (524,), (520,), (599,)],
                         ids=["in-use", "503-then-in-use", "503-then-402", "cdn-timeout", "cdn-unknown", "proxy-599"])
def test_a_replay_sends_a_sibling_whose_outcome_stays_unknown_under_its_source_s_key(engine, api, remote, answers):
    """A 409 to a keyed request is the Idempotency-Key draft's (and Stripe's) "a request with this
    key is still being processed", and an answer after a 503 (a gateway's: the first attempt may
    have reached the payee) speaks for the retry only: what came of the charge is unknown, as after
    a lost worker. So is any 5xx, not only 500/502/503/504: a CDN's 524 ("the origin took it and did
    not answer in time"), its 520, a proxy's 599 are no more the remote's word than a 504 is. Read as
    answered, a replay from wait sent charge under a new key, and a payee that went on to apply the
    first attempt applied a second charge."""
    charge, source = _charge_failed_beside_wait(
        api, remote, [*(Reply(status, {"error": "declined_or_busy"}) for status in answers), {"paid": True}],
        sent=len(answers), retry={"max_attempts": 2, "backoff_ms": 100})
    error = node_runs(source)["charge"].error
    assert error["status_code"] == answers[-1] and "answered" not in error, error
    first = remote.hits(f"/seq/{charge}")
    assert len(first) == len(answers) and len({_key(hit) for hit in first}) == 1, first  # retried under its key

    response = api.post(f"/api/v1/runs/{source.pk}/nodes/wait/replay")
    assert response.status_code == 201, response.json()
    replay = wait_for_run(response.json()["run_id"])
    hits = remote.hits(f"/seq/{charge}")
    assert len(hits) == len(answers) + 1, hits
    assert _key(hits[-1]) == _key(hits[0]), error  # unknown: it goes on under the source's key
    assert replay.status == "completed", replay.error


def test_an_answer_to_a_replay_going_on_with_its_source_s_unknown_attempt_is_not_answered(engine, api, remote):
    """The source's charge answered 503 (unknown: the replay goes on with it under the source's
    key), the replay's charge, under that key, 402. That 402 follows an attempt whose outcome is
    unknown, a replay apart: it speaks for the repeat only. Read as answered (its own node run's
    log has no attempt before it), a replay of the replay sent the charge under a new key, while
    the 503's attempt may yet have taken effect."""
    charge, source = _charge_failed_beside_wait(
        api, remote, [Reply(503, {"error": "busy"}), Reply(402, {"error": "declined"}), {"paid": True}])
    assert "answered" not in node_runs(source)["charge"].error

    first = api.post(f"/api/v1/runs/{source.pk}/nodes/wait/replay")
    assert first.status_code == 201, first.json()
    replay = wait_for_run(first.json()["run_id"])
    assert replay.key_origins == {"charge/0": str(source.pk)}
    hits = remote.hits(f"/seq/{charge}")
    assert len(hits) == 2 and _key(hits[1]) == _key(hits[0])  # went on under the 503's key, answered 402
    assert replay.status == "failed", replay.error
    error = node_runs(replay)["charge"].error
    assert error["status_code"] == 402 and "answered" not in error, error

    second = api.post(f"/api/v1/runs/{replay.pk}/nodes/wait/replay")
    assert second.status_code == 201, second.json()
    assert wait_for_run(second.json()["run_id"]).status == "completed"
    hits = remote.hits(f"/seq/{charge}")
    assert len(hits) == 3, hits
    assert _key(hits[2]) == _key(hits[0]), error  # still unknown: under the first attempt's key


def _gate_before_pay(remote, pay: str, hold: str, tell: str, amount) -> dict:
    """review (a gate whose form says the amount) → pay, beside wait → tell."""
    form = {"type": "object", "properties": {"amount": {"type": "integer"}}}
    return {"nodes": [{"id": "review", "type": "hitl", "config": {"message": "pay?", "form": form}},
                      http("pay", f"{remote.base}/effect/{pay}/4", config={"method": "POST",
                                                                           "payload": {"amount": amount}}),
                      http("wait", f"{remote.base}/hold/{hold}"),
                      http("tell", f"{remote.base}/seq/{tell}", config={"fail_on_status": True})],
            "edges": [edge("review", "pay"), edge("wait", "tell")]}


def _gate_paid_then_failed(api, remote, user, definition: dict, pay: str, hold: str, amount: int) -> Run:
    """The gate approved (``amount``), pay stopped mid-request when tell fails: the source, failed."""
    run_id = submit(api, definition)
    approval = wait_until(lambda: Approval.objects.filter(run_id=run_id).first(), what="the approval")
    assert decide(user, approval, data={"amount": amount}).status_code == 200
    wait_until(lambda: remote.effects(pay) and remote.hits(f"/hold/{hold}"), what="the payment sent and the hold")
    remote.release(hold)
    source = wait_for_run(run_id)
    assert source.status == "failed" and node_runs(source)["pay"].status != "completed"
    assert len(remote.effects(pay)) == 1
    return source


def _gate_asked_again(api, remote, user, definition: dict, pay: str, hold: str, amounts: tuple[int, int]) -> Run:
    """The gate approved (amount first), pay stopped mid-request when tell fails, tell replayed,
    the gate asked again and approved (amount second); the replay, finished."""
    source = _gate_paid_then_failed(api, remote, user, definition, pay, hold, amounts[0])
    response = api.post(f"/api/v1/runs/{source.pk}/nodes/tell/replay")
    assert response.status_code == 201, response.json()
    replay_id = response.json()["run_id"]
    again = wait_until(lambda: Approval.objects.filter(run_id=replay_id).first(), what="the gate asked again")
    assert decide(user, again, data={"amount": amounts[1]}).status_code == 200
    return wait_for_run(replay_id)


def test_a_payment_in_flight_behind_a_gate_asked_again_keeps_its_key_when_the_request_is_the_same(
        engine, api, remote, user):
    """The gate a replay asks again leads to pay, whose request was in flight when the source
    failed: approved again, pay ran again under the replay's new key and the payee applied it
    twice. The same request goes on under the source's key (``idempotency.going_on``)."""
    pay, hold, tell = unique("pay"), unique("hold"), unique("tell")
    remote.script(tell, [Reply(400, {"error": "bad"}), {"sent": True}])
    replay = _gate_asked_again(api, remote, user, _gate_before_pay(remote, pay, hold, tell, 10), pay, hold, (1, 2))
    assert replay.status == "completed", replay.error
    effects = remote.effects(pay)
    assert len(effects) == 1, effects  # the same payment: known by its key
    assert node_runs(replay)["pay"].output["body"]["key"] == effects[0]["key"]
    assert replay.key_origins == {"pay/0": str(replay.replay_of_id)}  # its retries and replays keep it


def test_a_changed_payment_behind_a_gate_asked_again_goes_under_a_new_key(engine, api, remote, user):
    """The amount is the gate's form data, changed by the second approval: another request, which a
    remote keeping the first under its key refuses or answers with the first's answer: a new key."""
    pay, hold, tell = unique("pay"), unique("hold"), unique("tell")
    remote.script(tell, [Reply(400, {"error": "bad"}), {"sent": True}])
    definition = _gate_before_pay(remote, pay, hold, tell, "$nodes.review.data.amount")
    replay = _gate_asked_again(api, remote, user, definition, pay, hold, (10, 12))
    assert replay.status == "completed", replay.error
    effects = remote.effects(pay)
    assert len(effects) == 2 and effects[0]["key"] != effects[1]["key"], effects
    assert not replay.key_origins


def test_a_payment_in_flight_keeps_its_key_past_a_replay_cancelled_while_its_gate_waited(engine, api, remote, user):
    """The replay (S1) asks the gate again and is cancelled while it waits: pay never runs in S1. A
    replay of S1 (S2), approved again with the same request, found no node run of pay in its source
    and sent it under its own new key: the payee applied the source's payment, whose outcome was never
    known, twice. The request last sent is the nearest run's of the chain that ran pay (S0)."""
    pay, hold, tell = unique("pay"), unique("hold"), unique("tell")
    remote.script(tell, [Reply(400, {"error": "bad"}), {"sent": True}, {"sent": True}])
    source = _gate_paid_then_failed(api, remote, user, _gate_before_pay(remote, pay, hold, tell, 10), pay, hold, 1)
    response = api.post(f"/api/v1/runs/{source.pk}/nodes/tell/replay")
    assert response.status_code == 201, response.json()
    s1_id = response.json()["run_id"]
    wait_until(lambda: Approval.objects.filter(run_id=s1_id).first(), what="the gate asked again in S1")
    assert api.post(f"/api/v1/runs/{s1_id}/cancel").status_code in (200, 202)
    s1 = wait_for_run(s1_id)
    assert s1.status == "cancelled" and "pay" not in node_runs(s1), s1.status

    response = api.post(f"/api/v1/runs/{s1_id}/nodes/review/replay")
    assert response.status_code == 201, response.json()
    s2_id = response.json()["run_id"]
    again = wait_until(lambda: Approval.objects.filter(run_id=s2_id).first(), what="the gate asked again in S2")
    assert decide(user, again, data={"amount": 1}).status_code == 200
    s2 = wait_for_run(s2_id)
    assert s2.status == "completed", s2.error
    remote.applied_once(pay)
    # (tell, replayed in S1, may still be on its way when S1 is cancelled: it then goes on in S2
    # under S1's key, by the rule for what began beside and did not settle; pay's is S0's either way)
    assert (s2.key_origins or {}).get("pay/0") == str(source.pk), s2.key_origins
    assert set(s2.key_origins) <= {"pay/0", "tell/0"}, s2.key_origins


def _secret_charge_failed(api, remote, user, pay: str) -> Run:
    """S0: pay, a charge of 10 sent with the secret PAY_TOKEN, left mid-request when tell beside it
    fails (a 400): its outcome unknown."""
    hold, tell = unique("hold"), unique("tell")
    secret_set(owner=user, name="PAY_TOKEN", value="tok-000001")
    remote.script(tell, [Reply(400, {"error": "bad"}), {"sent": True}])
    node = http("pay", f"{remote.base}/effect/{pay}/4", config={
        "method": "POST", "payload": {"amount": 10}, "headers": {"Authorization": "$secrets.PAY_TOKEN"}})
    run_id = submit(api, _beside(node, remote, hold, tell))
    wait_until(lambda: remote.effects(pay) and remote.hits(f"/hold/{hold}"), what="the charge sent and the hold")
    remote.release(hold)
    s0 = wait_for_run(run_id)
    assert s0.status == "failed" and node_runs(s0)["pay"].status != "completed", s0.error
    return s0


def test_a_payment_whose_replay_stopped_before_it_sent_keeps_its_source_s_key_in_the_next_replay(
        engine, api, remote, user):
    """pay replayed itself (S1) fails before it sends: its secret was removed meanwhile. It sent
    nothing, yet counted as unsettled: a replay of S1 (S2) sent the same charge under S1's key,
    which the payee never saw, while S0's was the one in flight. A failure before anything was
    sent (``sent``: false) did not act (``NodeRun.acted``): S2 goes on under S0's key."""
    pay = unique("pay")
    s0 = _secret_charge_failed(api, remote, user, pay)

    secret_delete(owner=user, name="PAY_TOKEN")
    response = api.post(f"/api/v1/runs/{s0.pk}/nodes/pay/replay")
    assert response.status_code == 201, response.json()
    s1 = wait_for_run(response.json()["run_id"])
    error = node_runs(s1)["pay"].error
    assert s1.status == "failed" and error["error_type"] == "SecretMissing", error
    assert len(remote.hits(f"/effect/{pay}/")) == 1

    secret_set(owner=user, name="PAY_TOKEN", value="tok-000001")
    response = api.post(f"/api/v1/runs/{s1.pk}/nodes/pay/replay")
    assert response.status_code == 201, response.json()
    s2 = wait_for_run(response.json()["run_id"])
    assert s2.status == "completed", s2.error
    remote.applied_once(pay)
    assert s2.key_origins["pay/0"] == str(s0.pk)  # (tell may have been stopped beside pay in S1: its own entry)
    assert error["sent"] is False


def _going_on_held(api, remote, pay: str) -> tuple[Run, str]:
    """pay (10) stopped mid-request when tell fails; tell replayed, the replay's pay (which goes on
    under the source's key) held queued before its first attempt: (the source, the replay's id)."""
    hold, tell = unique("hold"), unique("tell")
    remote.script(tell, [Reply(400, {"error": "bad"}), {"sent": True}])
    node = http("pay", f"{remote.base}/effect/{pay}/4", config={"method": "POST", "payload": {"amount": 10}})
    run_id = submit(api, _beside(node, remote, hold, tell))
    wait_until(lambda: remote.effects(pay) and remote.hits(f"/hold/{hold}"), what="the payment sent and the hold")
    remote.release(hold)
    source = wait_for_run(run_id)
    assert source.status == "failed" and node_runs(source)["pay"].status != "completed"
    HOOKS.set("aob:test:stall:execution:pay", 1)
    response = api.post(f"/api/v1/runs/{source.pk}/nodes/tell/replay")
    assert response.status_code == 201, response.json()
    replay_id = response.json()["run_id"]
    wait_until(lambda: HOOKS.exists("aob:test:stalled:execution:pay"), timeout=30, what="the replay's pay held")
    assert Run.objects.get(pk=replay_id).key_origins == {"pay/0": str(source.pk)}
    return source, replay_id


def test_a_payment_going_on_with_its_source_s_work_cannot_be_patched_in_the_replay(engine, api, remote):
    """The replay's pay, queued and not yet begun there, goes on with the source's payment (10,
    taken by the payee, no answer) under the source's key. A patch made it 1000 (accepted): sent
    under that key, the payee answered the 10's answer, and the replay completed reporting it as the
    1000's. It has begun, as a node queued for its retry has: history_immutable refuses the patch."""
    pay = unique("pay")
    source, replay_id = _going_on_held(api, remote, pay)
    try:
        response = api.post(f"/api/v1/runs/{replay_id}/patches", {"operations": [
            {"op": "replace", "path": "/nodes/0/config/payload", "value": {"amount": 1000}}]}, format="json")
    finally:
        HOOKS.set("aob:test:stall_release:execution:pay", 1)
    assert response.status_code == 400, response.json()
    body = response.json()
    assert body["details"]["rule"] == "history_immutable" and "replay source" in body["message"], body
    replay = wait_for_run(replay_id)
    assert replay.status == "completed", replay.error
    hits = remote.hits(f"/effect/{pay}")
    assert [json.loads(hit["body"]) for hit in hits] == [{"amount": 10}] * 2
    assert len(remote.effects(pay)) == 1 and _key(hits[1]) == _key(hits[0])  # the same payment, known by its key


@pytest.mark.parametrize("case", ["changed", "source-kept-nothing"])
def test_a_payment_going_on_with_its_source_s_work_is_compared_with_its_source_s_request(engine, api, remote, case):
    """A replay patched before the rule above (its definition written here as that patch left it)
    sent pay's 1000 under the source's key: ``going_on`` took ``run_replay``'s decision as its own
    and compared nothing. Compared at its first attempt, the changed request is new work under a
    new key, its ``key_origins`` entry dropped so its retries and replays follow. Where the
    source kept no request to compare (an attempt of an older release) ``run_replay``'s decision
    stands: the same definition on the same outputs is the same payment, under the source's key."""
    pay = unique("pay")
    source, replay_id = _going_on_held(api, remote, pay)
    try:
        if case == "changed":
            run = Run.objects.get(pk=replay_id)
            definition = Artifact.objects.get(pk=run.current_artifact_id).content
            definition["nodes"][0]["config"]["payload"] = {"amount": 1000}
            Run.objects.filter(pk=replay_id).update(
                current_artifact=artifact_store(kind=Artifact.Kind.DAG_VERSION, content=definition))
        else:
            NodeRun.objects.filter(run=source, node_id="pay").update(input=None)
    finally:
        HOOKS.set("aob:test:stall_release:execution:pay", 1)
    replay = wait_for_run(replay_id)
    assert replay.status == "completed", replay.error
    hits = remote.hits(f"/effect/{pay}")
    assert len(hits) == 2, hits
    answer = node_runs(replay)["pay"].output["body"]
    if case == "changed":
        assert json.loads(hits[1]["body"]) == {"amount": 1000}
        assert _key(hits[1]) != _key(hits[0]), replay.key_origins  # another request: new work
        assert answer["key"] == _key(hits[1]) and len(remote.effects(pay)) == 2, answer
        assert not replay.key_origins
    else:
        assert _key(hits[1]) == _key(hits[0]) and len(remote.effects(pay)) == 1, replay.key_origins
        assert replay.key_origins == {"pay/0": str(source.pk)}


def test_a_replayed_subworkflow_node_starts_its_child_under_its_source_s_key_when_it_starts_the_same_one(
        engine, api, remote, user):
    """A ``workflow`` node replayed itself, whose source's child had a payment in flight when the
    source failed, started its child under the replay's new key: the child's payment went out again
    under another key and the payee applied it twice. A node of every type that acts outside follows
    the http node's rule (``idempotency.decided_before_acting``): the same child goes on under the
    source's key."""
    pay, hold, tell = unique("pay"), unique("hold"), unique("tell")
    remote.script(tell, [Reply(400, {"error": "bad"}), {"sent": True}])
    node = _paying_child(user, remote, pay)
    run_id = submit(api, _beside(node, remote, hold, tell))
    wait_until(lambda: remote.effects(pay) and remote.hits(f"/hold/{hold}"), what="the charge sent and the hold")
    remote.release(hold)  # tell fails while the child's charge is still at the payee
    source = wait_for_run(run_id)
    assert source.status == "failed" and node_runs(source)["pay"].status != "completed"
    assert len(remote.effects(pay)) == 1

    # the person replays pay itself: the same child, the same inputs, the same charge
    response = api.post(f"/api/v1/runs/{source.pk}/nodes/pay/replay")
    assert response.status_code == 201, response.json()
    replay = wait_for_run(response.json()["run_id"])

    assert replay.status == "completed", replay.error
    first = SubRun.objects.get(parent_run=source).child_run
    second = SubRun.objects.get(parent_run=replay).child_run
    assert second.key_origins == first.key_origins
    assert len(remote.effects(pay)) == 1, remote.effects(pay)


def test_a_replayed_unpinned_subworkflow_node_whose_tag_was_saved_since_starts_its_new_child_under_a_new_key(
        engine, api, remote, user):
    """An unpinned tag's child is the version current at the start: one saved between the source
    and the replay is another child (another charge). It went on under the source's child's key, its
    config (the tag alone) being the same, so a key-only payee answered the 1000 with the 10's answer.
    The version that runs, resolved before the decision, is part of what the node sends."""
    pay, hold, tell = unique("pay"), unique("hold"), unique("tell")
    remote.script(tell, [Reply(400, {"error": "bad"}), {"sent": True}])

    def child(amount: int) -> dict:
        return {"nodes": [http("charge", f"{remote.base}/effect/{pay}/4",
                               config={"method": "POST", "payload": {"amount": amount}})], "edges": []}

    workflow_save(owner=user, tag=pay, definition=child(10))
    run_id = submit(api, _beside({"id": "pay", "type": "workflow", "config": {"tag": pay}}, remote, hold, tell))
    wait_until(lambda: remote.effects(pay) and remote.hits(f"/hold/{hold}"), what="the charge sent and the hold")
    remote.release(hold)
    source = wait_for_run(run_id)
    assert source.status == "failed" and node_runs(source)["pay"].status != "completed"

    workflow_save(owner=user, tag=pay, definition=child(1000))  # the owner changes the child

    response = api.post(f"/api/v1/runs/{source.pk}/nodes/pay/replay")
    assert response.status_code == 201, response.json()
    replay = wait_for_run(response.json()["run_id"])
    assert replay.status == "completed", replay.error

    bodies: dict[str, set[str]] = {}
    for hit in remote.hits(f"/effect/{pay}/4"):
        key = next((v for k, v in hit["headers"].items() if k.lower() == "idempotency-key"), "")
        bodies.setdefault(key, set()).add(json.dumps(json.loads(hit["body"]), sort_keys=True))
    assert len(bodies) == 2 and all(len(b) == 1 for b in bodies.values()), bodies
    first = SubRun.objects.get(parent_run=source).child_run
    second = SubRun.objects.get(parent_run=replay).child_run
    assert second.key_origins != first.key_origins


def test_a_sibling_going_on_keeps_its_source_s_key_past_a_replay_cancelled_before_its_claim(engine, api, remote):
    """The replay's pay goes on under the source's key (S1's ``key_origins``) and S1 is cancelled
    while pay's message waits, before its claim: pay never began in S1, neither completed nor
    unsettled there. A replay of S1 (S2) dropped the entry and sent the payment under its own new
    key. A node run that went on and never acted passes its entry on (``run_replay``)."""
    pay = unique("pay")
    source, s1_id = _going_on_held(api, remote, pay)
    try:
        assert api.post(f"/api/v1/runs/{s1_id}/cancel").status_code in (200, 202)
    finally:
        HOOKS.set("aob:test:stall_release:execution:pay", 1)
    s1 = wait_for_run(s1_id)
    assert s1.status == "cancelled" and node_runs(s1)["pay"].attempts == 0, node_runs(s1)["pay"].status

    response = api.post(f"/api/v1/runs/{s1_id}/nodes/tell/replay")
    assert response.status_code == 201, response.json()
    # carried from its start, as a sibling going on is (no patch changes it: ``RunState.started``)
    assert Run.objects.get(pk=response.json()["run_id"]).key_origins == {"pay/0": str(source.pk)}
    s2 = wait_for_run(response.json()["run_id"])
    assert s2.status == "completed", s2.error
    remote.applied_once(pay)
    assert s2.key_origins == {"pay/0": str(source.pk)}


def test_a_payment_whose_replay_stopped_before_it_sent_after_a_claim_given_back_keeps_its_source_s_key(
        engine, api, remote, user):
    """S1's pay was claimed, given back unrun (its ``timeout_ms`` patched while its message waited:
    ``send_again``), then its one try failed before it sent (its secret removed: ``sent``: false).
    ``NodeRun.acted`` read its two claims as two tries, so S1 counted as having acted and S2 sent the
    charge under S1's key, which the payee never saw. A claim given back unrun is no try
    (``execution.given_back``): S2 goes on under S0's key."""
    pay = unique("pay")
    s0 = _secret_charge_failed(api, remote, user, pay)

    HOOKS.set("aob:test:stall:execution:pay", 1)
    try:
        response = api.post(f"/api/v1/runs/{s0.pk}/nodes/pay/replay")
        assert response.status_code == 201, response.json()
        s1_id = response.json()["run_id"]
        wait_until(lambda: HOOKS.exists("aob:test:stalled:execution:pay"), timeout=30, what="S1's pay held, queued")
        patched = api.post(f"/api/v1/runs/{s1_id}/patches", {"operations": [
            {"op": "add", "path": "/nodes/0/timeout_ms", "value": 25000}]}, format="json")
        assert patched.status_code == 201, patched.json()
        secret_delete(owner=user, name="PAY_TOKEN")
    finally:
        HOOKS.set("aob:test:stall_release:execution:pay", 1)
    s1 = wait_for_run(s1_id)
    step = node_runs(s1)["pay"]
    assert step.error["error_type"] == "SecretMissing" and step.error["sent"] is False, step.error
    assert step.attempts == 2 and "sent_again" in [e.get("status") for e in step.attempt_log], step.attempt_log
    assert len(remote.hits(f"/effect/{pay}/")) == 1  # S1 sent nothing
    HOOKS.delete(*(f"aob:test:{k}:execution:pay" for k in ("stalled", "stall_release")))

    secret_set(owner=user, name="PAY_TOKEN", value="tok-000001")
    response = api.post(f"/api/v1/runs/{s1.pk}/nodes/pay/replay")
    assert response.status_code == 201, response.json()
    s2 = wait_for_run(response.json()["run_id"])
    assert s2.status == "completed", s2.error
    hits = remote.hits(f"/effect/{pay}/")
    assert len(hits) == 2 and _key(hits[1]) == _key(hits[0]), [_key(h) for h in hits]
    assert len(remote.effects(pay)) == 1, remote.effects(pay)  # the payee charged once
    assert s2.key_origins.get("pay/0") == str(s0.pk), s2.key_origins


def _child_paid_then_failed(api, remote, user, pay: str, **node) -> Run:
    """S0: a ``workflow`` node (``node``: more of its definition) whose child charged, its answer
    held while a sibling fails the run: the child did not settle."""
    hold, tell = unique("hold"), unique("tell")
    remote.script(tell, [Reply(400, {"error": "bad"}), {"sent": True}])
    run_id = submit(api, _beside({**_paying_child(user, remote, pay), **node}, remote, hold, tell))
    wait_until(lambda: remote.effects(pay) and remote.hits(f"/hold/{hold}"), what="the charge sent and the hold")
    remote.release(hold)
    s0 = wait_for_run(run_id)
    assert s0.status == "failed" and node_runs(s0)["pay"].status != "completed", s0.error
    return s0


def _child_refused_in_a_replay(api, remote, user, pay: str) -> tuple[Run, Run]:
    """S0 (``_child_paid_then_failed``) and S1, its pay replayed after the child's tag was deleted:
    the ``workflow`` node failed before it started a child (SubWorkflowNotFound)."""
    s0 = _child_paid_then_failed(api, remote, user, pay)
    # S0's child may still be ending as its tag goes: a fresh clone's CI saw the delete made the
    # victim of a deadlock with that worker's transaction (a user's DELETE answers 503
    # database_busy), so it is tried again
    again_after_a_deadlock(lambda: workflow_delete(workflow=Workflow.objects.get(owner=user, tag=pay), force=True))
    response = api.post(f"/api/v1/runs/{s0.pk}/nodes/pay/replay")
    assert response.status_code == 201, response.json()
    s1 = wait_for_run(response.json()["run_id"])
    error = node_runs(s1)["pay"].error
    assert error["error_type"] == "SubWorkflowNotFound" and error["sent"] is False, error
    return s0, s1


def _child_saved_again_and_replayed(api, remote, user, pay: str, s1: Run) -> Run:
    """S2: the same child saved again, S1's pay replayed: completed, its charge sent under one key and
    applied once."""
    _paying_child(user, remote, pay)
    response = api.post(f"/api/v1/runs/{s1.pk}/nodes/pay/replay")
    assert response.status_code == 201, response.json()
    s2 = wait_for_run(response.json()["run_id"], timeout=40)
    assert s2.status == "completed", s2.error
    remote.applied_once(pay)
    return s2


def test_a_child_s_payment_keeps_its_key_past_a_replay_whose_workflow_node_failed_before_starting_its_child(
        engine, api, remote, user):
    """S1's ``workflow`` node failed before it started a child (its tag deleted meanwhile:
    SubWorkflowNotFound) with no ``sent: false``: ``NodeRun.acted`` counted it as having acted and
    S2, the same child saved again, started it under S1's never-used key; the child's payee charged
    twice. What fails before the child starts says so: S2 goes on under S0's key."""
    pay = unique("pay")
    s0, s1 = _child_refused_in_a_replay(api, remote, user, pay)
    s2 = _child_saved_again_and_replayed(api, remote, user, pay, s1)
    assert s2.key_origins["pay/0"] == str(s0.pk), s2.key_origins


def test_a_child_s_payment_keeps_its_key_past_a_replay_whose_every_try_failed_before_starting_its_child(
        engine, api, remote, user):
    """S1's ``workflow`` node tried twice and started no child either time (each try ``sent: false``:
    run limits refusing the child, say, whose transaction rolls back). ``NodeRun.acted`` read
    ``sent: false`` only at a first try, so S2 started the child under S1's never-used key and its
    payee charged twice. A node run all of whose tries sent nothing did not act (``execution.unsent``).
    S1's one real try (its tag deleted: SubWorkflowNotFound) is logged twice, as two such tries leave
    it: a refusal by the limits retries only after their Retry-After, a minute."""
    pay = unique("pay")
    s0, s1 = _child_refused_in_a_replay(api, remote, user, pay)
    step = node_runs(s1)["pay"]
    assert step.attempts == 1 and len(step.attempt_log) == 1, step.attempt_log
    NodeRun.objects.filter(pk=step.pk).update(attempts=2, attempt_log=[step.attempt_log[0], step.attempt_log[0]])
    s2 = _child_saved_again_and_replayed(api, remote, user, pay, s1)
    assert s2.key_origins["pay/0"] == str(s0.pk), s2.key_origins
