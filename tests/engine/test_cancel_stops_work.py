"""Cancel stops work: a running HTTP request is aborted within seconds (the heartbeat finds the
lease gone and stops its executor), queued messages are revoked, an agent checks between turns and
makes no further model call, nor any tool call of an answer that came after, nor a pipeline's next
step, and an approval of a cancelled run cannot be decided (409)."""

from __future__ import annotations

import threading
import uuid

import pytest
import redis
from django.conf import settings

from approvals.models import Approval
from tests.agents.flows import agent
from tests.conftest import client_for, wait_for_run
from tests.engine.flow import http, statuses, submit, wait_until
from tests.engine.victim import http_victim, logged
from workflows.engine.dispatch import task_id
from workflows.models import NodeRun

HOOKS = redis.Redis.from_url(settings.REDIS_URL)


def cancel(api, run_id: str) -> None:
    response = api.post(f"/api/v1/runs/{run_id}/cancel")
    assert response.status_code == 200, response.json()


def held_run(api, remote) -> tuple[str, str]:
    key = uuid.uuid4().hex
    run_id = submit(api, {"nodes": [http("held", f"{remote.base}/hold/{key}")], "edges": []})
    wait_until(lambda: remote.hits(f"/hold/{key}"), what="the request reaching the remote")
    return run_id, key


def test_cancel_aborts_a_running_request_and_frees_the_worker(engine, stack_env, api, remote):
    with http_victim(engine, stack_env) as victim:
        run_id, key = held_run(api, remote)
        cancel(api, run_id)
        wait_until(lambda: remote.outcomes(key), timeout=10, what="the request ending")
        assert remote.outcomes(key) == ["aborted"]  # not answered: the remote still held it
        assert NodeRun.objects.get(run_id=run_id, node_id="held").status == "cancelled"
        held = NodeRun.objects.get(run_id=run_id, node_id="held")
        wait_until(lambda: logged(victim, "node_run.lease_lost", node_run_id=held.pk), what="the executor stopping")
        # the victim (one process, the only http consumer) is free again before the remote answers
        after = wait_for_run(submit(api, {"nodes": [http("next", f"{remote.base}/echo")], "edges": []}))
        assert after.status == "completed"
        assert remote.outcomes(key) == ["aborted"]
    remote.release(key)
    assert wait_for_run(run_id).status == "cancelled"


@pytest.mark.faults_full  # a slow fault or its control: `make test-faults` only (tests/conftest.py)
def test_negative_control_without_the_stop_the_cancelled_request_runs_on(engine, stack_env, api, remote):
    HOOKS.set("aob:test:lease_stop_off", 1)
    try:
        with http_victim(engine, stack_env) as victim:
            run_id, key = held_run(api, remote)
            cancel(api, run_id)
            wait_until(lambda: logged(victim, "lease.lost"), what="the heartbeat finding the lease gone")
            other = submit(api, {"nodes": [http("next", f"{remote.base}/echo")], "edges": []})
            assert remote.outcomes(key) == []  # still in flight: the check above detects it
            assert statuses(other) == {"next": "queued"}  # and the worker is still taken
            remote.release(key)
            assert wait_for_run(other).status == "completed"
    finally:
        HOOKS.delete("aob:test:lease_stop_off")
    assert remote.outcomes(key) == ["answered"]
    assert NodeRun.objects.get(run_id=run_id, node_id="held").status == "cancelled"  # its result discarded


def test_cancel_revokes_queued_messages(engine, stack_env, api, remote):
    with http_victim(engine, stack_env) as victim:
        busy, key = held_run(api, remote)  # the victim's one process is taken
        waiting = submit(api, {"nodes": [http("queued", f"{remote.base}/echo/never")], "edges": []})
        nr = NodeRun.objects.get(run_id=waiting, node_id="queued")
        cancel(api, waiting)
        cancel(api, busy)  # its request is aborted: the victim takes the next message, the revoked one

        def discarded() -> bool:
            return any("Discarding revoked task" in line and task_id(waiting, nr.pk) in line
                       for line in victim.log.read_text(errors="replace").splitlines())

        wait_until(discarded, timeout=15, what="the victim discarding the revoked message")
    remote.release(key)
    assert not remote.hits("/echo/never")
    assert NodeRun.objects.get(pk=nr.pk).attempts == 0  # never claimed


def _cancelled_in_flight(engine, api, tool: str, in_flight, let_go) -> NodeRun:
    """An agent given ``tool``, cancelled once ``in_flight()`` holds, then ``let_go()``, with the
    heartbeat's interrupt off (the checks in its loop alone stop it): its node run, once it stopped."""
    HOOKS.set("aob:test:lease_stop_off", 1)
    try:
        run_id = submit(api, {"nodes": [agent(tools=[tool])], "edges": []})
        wait_until(in_flight, what="the agent's call in flight")
        cancel(api, run_id)
        let_go()
        plan = NodeRun.objects.get(run_id=run_id, node_id="plan")
        wait_until(lambda: logged(engine["worker"], "node_run.lease_lost", node_run_id=plan.pk),
                   what="the agent stopping")
    finally:
        HOOKS.delete("aob:test:lease_stop_off")
    return plan


def test_a_cancelled_agent_makes_no_further_model_call(engine, api, fake_llm, remote):
    key = uuid.uuid4().hex
    pipeline = {"steps": [{"op": "http_request", "url": f"{remote.base}/hold/{key}"}]}
    fake_llm.reset([{"tool_calls": [("execute_pipeline", pipeline)]}, {"content": "Done."}])
    # no interrupt: the check between turns alone stops it
    plan = _cancelled_in_flight(engine, api, "execute_pipeline", lambda: remote.hits(f"/hold/{key}"),
                                lambda: remote.release(key))
    assert len(fake_llm.requests) == 1  # the second turn's call never went out
    assert NodeRun.objects.get(pk=plan.pk).status == "cancelled"


def test_an_answer_received_after_the_run_is_cancelled_runs_none_of_its_tool_calls(engine, api, fake_llm, remote):
    """The model call was made before the cancel; its answer comes after. Each of its calls would be
    a request the owner cancelled (a payment): none goes out, not only no further model call. The
    heartbeat's interrupt is off: it would come at its next renewal, after quick calls had gone."""
    answered = threading.Event()
    calls = [("openapi_action", {"api": "remote", "operation_id": "getItem", "parameters": {"item_id": str(k)}})
             for k in range(5)]
    fake_llm.reset([{"tool_calls": calls, "until": answered}, {"content": "Done."}])
    plan = _cancelled_in_flight(engine, api, "openapi_action", lambda: len(fake_llm.requests) == 1, answered.set)
    sent = remote.hits("/echo/items/")
    assert not sent, f"{len(sent)} tool requests sent after the run was cancelled"
    assert NodeRun.objects.get(pk=plan.pk).status == "cancelled"
    assert len(fake_llm.requests) == 1


def test_a_cancelled_agent_is_interrupted_mid_tool_call(engine, api, fake_llm, remote):
    key = uuid.uuid4().hex
    pipeline = {"steps": [{"op": "http_request", "url": f"{remote.base}/hold/{key}"}]}
    fake_llm.reset([{"tool_calls": [("execute_pipeline", pipeline)]}, {"content": "Done."}])
    run_id = submit(api, {"nodes": [agent(tools=["execute_pipeline"])], "edges": []})
    wait_until(lambda: remote.hits(f"/hold/{key}"), what="the agent's tool call reaching the remote")
    cancel(api, run_id)
    wait_until(lambda: remote.outcomes(key), timeout=10, what="the tool's request ending")
    assert remote.outcomes(key) == ["aborted"]
    plan = NodeRun.objects.get(run_id=run_id, node_id="plan")
    wait_until(lambda: logged(engine["worker"], "node_run.lease_lost", node_run_id=plan.pk), what="the agent stopping")
    remote.release(key)
    assert len(fake_llm.requests) == 1


def test_a_cancelled_pipeline_sends_no_further_step(engine, api, fake_llm, remote):
    """One ``execute_pipeline`` call sends many requests: a cancel while one is in flight stops the
    rest, though quick ones would all go out before the heartbeat's next renewal (its interrupt is
    off here, as it would come then)."""
    key, tag = uuid.uuid4().hex, f"after-cancel-{uuid.uuid4().hex[:8]}"
    steps = [{"op": "http_request", "url": f"{remote.base}/hold/{key}"},
             *({"op": "http_request", "url": f"{remote.base}/echo/{tag}/{k}"} for k in range(3))]
    fake_llm.reset([{"tool_calls": [("execute_pipeline", {"steps": steps})]}, {"content": "Done."}])
    plan = _cancelled_in_flight(engine, api, "execute_pipeline", lambda: len(remote.hits(f"/hold/{key}")) == 1,
                                lambda: remote.release(key))
    sent = remote.hits(f"/echo/{tag}/")
    assert not sent, f"{len(sent)} pipeline steps sent after the run was cancelled"
    assert NodeRun.objects.get(pk=plan.pk).status == "cancelled"
    assert len(fake_llm.requests) == 1


def test_an_approval_of_a_cancelled_run_cannot_be_decided(engine, api, user):
    run_id = submit(api, {"nodes": [{"id": "review", "type": "hitl", "config": {"message": "ok?"}}], "edges": []})
    approval = wait_until(lambda: Approval.objects.filter(run_id=run_id).first(), what="the approval")
    cancel(api, run_id)
    response = client_for(user).post(f"/api/v1/approvals/{approval.pk}/decide", {"approve": True}, format="json")
    assert response.status_code == 409
    assert response.json()["error"] in ("approval_settled", "run_finished")
    assert wait_for_run(run_id).status == "cancelled"
