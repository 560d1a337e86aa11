"""A replay that goes on with its source's unsettled agent sends the agent's tool calls under the
source's ``Idempotency-Key``s, as it does the agent's model calls and an http node's request
(``Run.key_origins``; tests/engine/test_replay_keys.py).

The payee (``/effect/``) applies an effect at once, answers slowly and honours the key as Stripe
does. A tool call's key was named by its node run's row id, which a replay's node run never shares
with its source's: a replay re-sent the same call of the same turn under a new key, and the payee
applied the payment twice. The key is now the run (the source's, where the replay goes on with its
work), node, iteration, turn and call: one node run per node and iteration in a run, whose retries
are attempts of that node run, so a repeat is a repeat outside and nothing else is."""

from __future__ import annotations

import redis
from django.conf import settings

from tests.agents.flows import agent
from tests.conftest import wait_for_run
from tests.engine.flow import edge, http, node_runs, submit, unique, wait_until
from tests.support.remote import Reply

TEXT = {"content": "Done."}
HOOKS = redis.Redis.from_url(settings.REDIS_URL)  # tests/support/fault_points.py


def _pay(url: str) -> dict:
    return {"steps": [{"op": "http_request", "method": "POST", "url": url, "payload": {"amount": 10}}]}


def test_a_replay_does_not_pay_again_for_an_agent_s_tool_call_in_flight(engine, api, remote, fake_llm):
    """The agent's payment is at the payee when a sibling fails the run; the replay's agent, the
    same conversation, makes the same call at the same turn: the payee knows it for a repeat."""
    pay, hold, tell = unique("pay"), unique("hold"), unique("tell")
    remote.script(tell, [Reply(400, {"error": "bad"}), {"sent": True}])
    pipeline = _pay(f"{remote.base}/effect/{pay}/4")
    # the source's one call, then the replay's agent's (the same call), then its end
    fake_llm.reset([{"tool_calls": [("execute_pipeline", pipeline)]},
                    {"tool_calls": [("execute_pipeline", pipeline)]}, TEXT])
    definition = {"nodes": [agent("pay", tools=["execute_pipeline"]), http("wait", f"{remote.base}/hold/{hold}"),
                            http("tell", f"{remote.base}/seq/{tell}", config={"fail_on_status": True})],
                  "edges": [edge("wait", "tell")]}
    run_id = submit(api, definition)

    wait_until(lambda: remote.effects(pay) and remote.hits(f"/hold/{hold}"), timeout=30,
               what="the agent's payment sent and the hold")
    remote.release(hold)  # tell runs now, and fails, while the payment's answer is still seconds away
    source = wait_for_run(run_id)
    assert source.status == "failed" and source.error["node_id"] == "tell", source.error
    assert node_runs(source)["pay"].status != "completed"

    response = api.post(f"/api/v1/runs/{source.pk}/nodes/tell/replay")
    assert response.status_code == 201, response.json()
    replay = wait_for_run(response.json()["run_id"], timeout=40)
    assert replay.key_origins == {"pay/0": str(source.pk)}

    remote.applied_once(pay)


def test_a_replay_reusing_the_model_does_not_pay_again_for_a_failed_agent_s_payment(engine, api, remote, fake_llm):
    """The agent paid, then its next model call was refused and the node failed. With ``reuse_llm``
    the replay's agent makes the same call at the same turn, under the source's key."""
    pay = unique("pay")
    pipeline = _pay(f"{remote.base}/effect/{pay}/0")
    # the source: the call, then a refusal that fails the node; the replay: turn 0 reused, then its end
    fake_llm.reset([{"tool_calls": [("execute_pipeline", pipeline)]}, {"status": 400}, TEXT])
    definition = {"nodes": [agent("pay", tools=["execute_pipeline"]), http("wait", f"{remote.base}/echo/{pay}")],
                  "edges": []}
    source = wait_for_run(submit(api, definition))
    assert source.status == "failed" and source.error["node_id"] == "pay", source.error
    assert len(remote.effects(pay)) == 1

    response = api.post(f"/api/v1/runs/{source.pk}/nodes/wait/replay", {"reuse_llm": True}, format="json")
    assert response.status_code == 201, response.json()
    replay = wait_for_run(response.json()["run_id"], timeout=40)
    assert replay.key_origins == {"pay/0": str(source.pk)}
    assert replay.status == "completed", replay.error

    remote.applied_once(pay)


def test_an_agent_replayed_itself_reusing_the_model_does_not_pay_again(engine, api, remote, fake_llm):
    """The agent replayed itself: with ``reuse_llm`` its turn 0 is the source's answer, the same call
    the unsettled source made. It went out under the replay's own key and the payee applied it twice.
    A call of a reused answer goes on under the source's key, kept in ``key_origins`` first."""
    pay = unique("pay")
    fake_llm.reset([{"tool_calls": [("execute_pipeline", _pay(f"{remote.base}/effect/{pay}/0"))]}, {"status": 400},
                    TEXT])
    definition = {"nodes": [agent("pay", tools=["execute_pipeline"]), http("wait", f"{remote.base}/echo/{pay}")],
                  "edges": []}
    source = wait_for_run(submit(api, definition))
    assert source.status == "failed" and source.error["node_id"] == "pay", source.error

    response = api.post(f"/api/v1/runs/{source.pk}/nodes/pay/replay", {"reuse_llm": True}, format="json")
    assert response.status_code == 201, response.json()
    replay = wait_for_run(response.json()["run_id"], timeout=40)
    assert replay.status == "completed", replay.error
    remote.applied_once(pay)
    assert replay.key_origins == {"pay/0": str(source.pk)}  # its retries and replays keep it


def test_an_agent_reusing_the_model_keeps_its_key_past_a_replay_cancelled_before_its_claim(
        engine, api, remote, fake_llm):
    """S1 replayed the agent with ``reuse_llm`` and was cancelled before its agent was claimed: it
    journaled nothing and sent nothing. The agent followed only its direct source (S1): S2 reused
    nothing, and the same call went out under S2's own key. It follows the replay chain as an http
    node's request does (``idempotency.last_acted``): S2 reuses S0's answer and goes on under its key."""
    pay = unique("pay")
    fake_llm.reset([{"tool_calls": [("execute_pipeline", _pay(f"{remote.base}/effect/{pay}/0"))]}, {"status": 400}])
    definition = {"nodes": [agent("pay", tools=["execute_pipeline"]), http("wait", f"{remote.base}/echo/{pay}")],
                  "edges": []}
    s0 = wait_for_run(submit(api, definition))
    assert s0.status == "failed" and s0.error["node_id"] == "pay", s0.error
    assert len(remote.effects(pay)) == 1

    HOOKS.set("aob:test:stall:execution:pay", 1)
    try:
        response = api.post(f"/api/v1/runs/{s0.pk}/nodes/pay/replay", {"reuse_llm": True}, format="json")
        assert response.status_code == 201, response.json()
        s1_id = response.json()["run_id"]
        wait_until(lambda: HOOKS.exists("aob:test:stalled:execution:pay"), timeout=30, what="S1's agent held")
        assert api.post(f"/api/v1/runs/{s1_id}/cancel").status_code in (200, 202)
    finally:
        HOOKS.set("aob:test:stall_release:execution:pay", 1)
    s1 = wait_for_run(s1_id)
    assert s1.status == "cancelled" and node_runs(s1)["pay"].attempts == 0, node_runs(s1)["pay"].status
    HOOKS.delete(*(f"aob:test:{k}:execution:pay" for k in ("stalled", "stall_release")))

    fake_llm.reset([TEXT])  # S0's answer reused for turn 0; the model ends at turn 1
    response = api.post(f"/api/v1/runs/{s1_id}/nodes/pay/replay", {"reuse_llm": True}, format="json")
    assert response.status_code == 201, response.json()
    s2 = wait_for_run(response.json()["run_id"], timeout=40)
    assert s2.status == "completed", s2.error
    remote.applied_once(pay)
    assert s2.key_origins == {"pay/0": str(s0.pk)}
