"""An owner deactivated while their run runs: no run starts as them (``run_start``), and nothing of
a running one starts as them either. The run is theirs alone to cancel (``run_owner_check``, staff
included), and they can no longer sign in: what it would still do (send their secrets, call the
model on their budget, ask their approvers) nobody could stop. The node that would start fails
saying why (``owner_inactive``), which fails the run; an agent already working makes no further
model call, nor any tool call of an answer that came after, nor a pipeline's next step."""

from __future__ import annotations

import threading
import uuid

from django.contrib.auth.models import User

from tests.agents.flows import agent, edge, finish, http, node, start
from tests.engine.flow import wait_until

TOKEN = "owner-token-7c1e"


def test_a_node_queued_after_its_owner_is_deactivated_does_not_send_their_secret(engine, api, user, remote):
    assert api.put("/api/v1/secrets/CRM_TOKEN", {"value": TOKEN}, format="json").status_code == 201
    key = uuid.uuid4().hex
    nodes = [http("first", f"{remote.base}/hold/{key}"),
             http("second", f"{remote.base}/echo/second", headers={"Authorization": "Bearer ${secrets.CRM_TOKEN}"})]
    run_id = start(api, nodes, [edge("first", "second")])
    wait_until(lambda: len(remote.hits(f"/hold/{key}")) == 1, what="the first node in flight")

    User.objects.filter(pk=user.pk).update(is_active=False)  # the owner leaves while the run runs
    remote.release(key)

    run = finish(run_id)
    sent = remote.hits("/echo/second")
    assert not sent, f"the deactivated owner's secret was sent after they left: {sent[0]['headers']['Authorization']}"
    second = node(run, "second")
    assert (run.status, second.status) == ("failed", "failed"), (run.status, second.status, second.error)
    assert second.error["error_type"] == "owner_inactive" and "deactivated" in second.error["message"], second.error


def test_an_agent_makes_no_model_call_after_its_owner_is_deactivated(engine, api, user, fake_llm, remote):
    key = uuid.uuid4().hex
    held = {"steps": [{"op": "http_request", "url": f"{remote.base}/hold/{key}"}]}
    again = {"steps": [{"op": "http_request", "url": f"{remote.base}/echo/again"}]}
    fake_llm.reset([{"tool_calls": [("execute_pipeline", held)]}, {"tool_calls": [("execute_pipeline", again)]},
                    {"content": "Done."}])
    run_id = start(api, [agent()])
    wait_until(lambda: len(remote.hits(f"/hold/{key}")) == 1, what="the first call's tool call in flight")

    User.objects.filter(pk=user.pk).update(is_active=False)
    remote.release(key)

    run = finish(run_id)
    plan = node(run, "plan")
    assert len(fake_llm.requests) == 1, f"{len(fake_llm.requests)} model calls for an owner deactivated after the first"
    assert not remote.hits("/echo/again")
    assert (run.status, plan.status) == ("failed", "failed"), (run.status, plan.status, plan.error)
    assert plan.error["error_type"] == "owner_inactive" and "deactivated" in plan.error["message"], plan.error


def test_an_answer_received_after_the_owner_is_deactivated_runs_none_of_its_tool_calls(
        engine, api, user, fake_llm, remote):
    """The model call was made while the owner was active; its answer comes after. Each of its
    calls would be a request as the owner, with their secret: none goes out, and the node fails
    as at a claim, not only at the next model call."""
    assert api.put("/api/v1/secrets/API_TOKEN", {"value": TOKEN}, format="json").status_code == 201
    answered = threading.Event()
    calls = [("openapi_action", {"api": "remote", "operation_id": "getItem", "parameters": {"item_id": str(k)}})
             for k in range(5)]
    fake_llm.reset([{"tool_calls": calls, "until": answered}, {"content": "Done."}])
    run_id = start(api, [agent(tools=["openapi_action"],
                               auth={"remote": {"headers": {"X-Api-Key": "$secrets.API_TOKEN"}}})])
    wait_until(lambda: len(fake_llm.requests) == 1, what="the model call in flight")

    User.objects.filter(pk=user.pk).update(is_active=False)
    answered.set()

    run = finish(run_id)
    plan = node(run, "plan")
    sent = remote.hits("/echo/items/")
    assert not sent, f"{len(sent)} requests with the deactivated owner's secret: {sent[0]['headers']}"
    assert (run.status, plan.status) == ("failed", "failed"), (run.status, plan.status, plan.error)
    assert plan.error["error_type"] == "owner_inactive" and "tool call" in plan.error["message"], plan.error
    assert len(fake_llm.requests) == 1


def test_a_pipeline_sends_no_step_after_its_owner_is_deactivated(engine, api, user, fake_llm, remote):
    """One ``execute_pipeline`` call sends many requests as the owner: a deactivation while one is in
    flight stops the rest (the heartbeat never interrupts for it), and the node fails as at a claim."""
    key, tag = uuid.uuid4().hex, f"after-owner-{uuid.uuid4().hex[:8]}"
    steps = [{"op": "http_request", "url": f"{remote.base}/hold/{key}"},
             *({"op": "http_request", "url": f"{remote.base}/echo/{tag}/{k}"} for k in range(3))]
    fake_llm.reset([{"tool_calls": [("execute_pipeline", {"steps": steps})]}, {"content": "Done."}])
    run_id = start(api, [agent(tools=["execute_pipeline"])])
    wait_until(lambda: len(remote.hits(f"/hold/{key}")) == 1, what="the pipeline's first step in flight")

    User.objects.filter(pk=user.pk).update(is_active=False)
    remote.release(key)

    run = finish(run_id)
    plan = node(run, "plan")
    sent = remote.hits(f"/echo/{tag}/")
    assert not sent, f"{len(sent)} pipeline steps sent as an owner deactivated before them"
    assert plan.error["error_type"] == "owner_inactive" and "pipeline step" in plan.error["message"], plan.error
    assert len(fake_llm.requests) == 1


def test_a_step_the_decision_evaluates_itself_does_not_start_for_a_deactivated_owner(engine, api, user, remote):
    """A transform the coordinator evaluates in its decision (``pure``) starts as one on a worker
    would (``execution.prepared``): before, the chain went on in the decision and the run completed
    for an owner who had left, where the same step sent to a worker failed it."""
    key = uuid.uuid4().hex
    nodes = [http("first", f"{remote.base}/hold/{key}"),
             {"id": "shape", "type": "transform", "config": {"expression": "{'n': 1}"}},
             {"id": "more", "type": "transform", "config": {"expression": "nodes.shape.n + 1"}}]
    run_id = start(api, nodes, [edge("first", "shape"), edge("shape", "more")])
    wait_until(lambda: len(remote.hits(f"/hold/{key}")) == 1, what="the first node in flight")

    User.objects.filter(pk=user.pk).update(is_active=False)
    remote.release(key)

    run = finish(run_id)
    shape = node(run, "shape")
    assert (run.status, shape.status) == ("failed", "failed"), (run.status, shape.status, shape.output)
    assert shape.error["error_type"] == "owner_inactive", shape.error
    assert not run.node_runs.filter(node_id="more").exclude(status="skipped").exists()
