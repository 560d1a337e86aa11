"""kill -9 of an agent's worker while its model call is in flight (the provider holds the request,
then answers it: the call was made and is billed). The lease lapses, the sweeper queues the node
again and the resumed attempt asks the model again: the journal had nothing to replay.

The outside-effects bar (docs/DESIGN.md "Effects outside": "every outbound request carries an
``Idempotency-Key`` stable across retries of one node run"; agents/budget.py: "Every call made is
charged") asks two things of that repeat, and these tests hold it to each:

- the repeated request is recognisable as a repeat at the provider: both carry the same key;
- the call the kill cut off was made and billed, so the run's and the owner's spend count it.

Each has its negative control (``aob:test:llm_key_off``, ``aob:test:lapsed_uncharged``), run by
``make test-faults``. And near the run's ceiling, the call cut off counts as spent where the
resumed attempt's pause is judged: it is a raise that can make room, not a release that never
comes (``aob:test:lapsed_held``).
"""

from __future__ import annotations

import threading
from typing import Any

import psutil
import pytest

from agents.llm import cost
from agents.models import OwnerSpend
from tests.conftest import PRICEY_MODEL, TEST_PRICES
from tests.engine.flow import submit
from tests.support.fake_llm import FakeLLM
from workflows.models import Event, NodeRun, Run
from workflows.registry import queue_for

from .harness import Victim, hooks, kill9, wait_for

pytestmark = [pytest.mark.fault]

MODEL = "gpt-4o-mini"
USAGE = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120, "prompt_tokens_details": {"cached_tokens": 64}}


@pytest.fixture(scope="module")
def agent_worker(workers, stack_env):
    """The only consumer of the agent queue while this module runs, with one pool process."""
    victim = Victim(workers, stack_env, [queue_for("agent")], concurrency=1)
    yield victim
    victim.close()


def kill_mid_call(api: Any, agent_worker: Victim, fake_llm: FakeLLM, tag: str) -> tuple[str, list[dict[str, Any]]]:
    held = threading.Event()
    fake_llm.reset([{"content": "first answer, never read", "usage": USAGE, "until": held},
                    {"content": "Done.", "usage": USAGE}])
    node = f"plan_{tag}"
    run_id = submit(api, {"nodes": [{"id": node, "type": "agent", "config": {"task": f"say done ({tag})"}}],
                          "edges": []})
    wait_for(lambda: len(fake_llm.requests) == 1, 60, "the model call in flight")
    assert NodeRun.objects.get(run_id=run_id, node_id=node).status == "running"
    [pool] = psutil.Process(agent_worker.pid).children()
    kill9(pool.pid, inside=[agent_worker.pid])
    held.set()  # the provider answers (and bills) the call whose client is gone
    run = wait_for(lambda: (r := Run.objects.get(pk=run_id)).status in ("completed", "failed") and r, 60,
                   "the run's end")
    assert run.status == "completed", run.error
    assert len(fake_llm.requests) == 2, "the resumed attempt asked the model again (nothing to replay)"
    return run_id, list(fake_llm.requests)


def test_the_model_call_repeated_after_a_kill_carries_the_same_idempotency_key(engine, agent_worker, fake_llm,
                                                                                api):
    _, requests = kill_mid_call(api, agent_worker, fake_llm, "key")
    keys = [r["headers"].get("idempotency-key") for r in requests]
    assert keys[0] is not None and keys[0] == keys[1], (
        f"the same model call, sent again after the worker died, carries no marker the provider could "
        f"recognise it by: Idempotency-Key {keys[0]!r} then {keys[1]!r}")


def test_the_model_call_a_kill_cut_off_is_charged(engine, agent_worker, fake_llm, api, user):
    run_id, _ = kill_mid_call(api, agent_worker, fake_llm, "charge")
    one_call = cost(MODEL, USAGE["prompt_tokens"], USAGE["prompt_tokens_details"]["cached_tokens"],
                    USAGE["completion_tokens"])
    usage = Run.objects.get(pk=run_id).usage or {}
    spent_today = sum(OwnerSpend.objects.filter(owner=user).values_list("cost_usd", flat=True))
    # two calls were made and billed: the run's and the owner's spend must count at least both
    assert usage.get("cost_usd", 0.0) >= 2 * one_call - 1e-9, (
        f"the run is charged ${usage.get('cost_usd')} ({usage.get('calls')} call(s)) for two billed calls "
        f"(${2 * one_call:.8f}): the call in flight when its worker died was never charged")
    assert spent_today >= 2 * one_call - 1e-9, f"the owner's day counts ${spent_today} for ${2 * one_call:.8f}"


@pytest.mark.faults_full  # a control: `make test-faults` only
def test_control_without_the_key_the_repeat_is_not_recognisable(engine, agent_worker, fake_llm, api):
    hooks().set("aob:test:llm_key_off", 1)
    try:
        with pytest.raises(AssertionError, match="carries no marker"):
            test_the_model_call_repeated_after_a_kill_carries_the_same_idempotency_key(engine, agent_worker,
                                                                                       fake_llm, api)
    finally:
        hooks().delete("aob:test:llm_key_off")


@pytest.mark.faults_full  # a control: `make test-faults` only
def test_control_a_lapsed_reservation_dropped_uncharged_misses_the_call(engine, agent_worker, fake_llm, api, user):
    hooks().set("aob:test:lapsed_uncharged", 1)
    try:
        with pytest.raises(AssertionError, match="never charged"):
            test_the_model_call_a_kill_cut_off_is_charged(engine, agent_worker, fake_llm, api, user)
    finally:
        hooks().delete("aob:test:lapsed_uncharged")


def test_a_call_a_kill_cut_off_is_charged_when_its_run_is_cancelled_before_it_reserves_again(
        engine, agent_worker, fake_llm, api, user):
    """The owner cancels a run that looks stuck while its agent's process lies dead mid-call: the call
    was made and billed, and only a later reservation of the run charged it. None came: the run ended
    with the call reserved, uncharged, for ever, the owner's day holding it too (a red-team helper's
    find). Its end charges it (``budget.settle_lapsed``)."""
    held = threading.Event()
    fake_llm.reset([{"content": "never read", "usage": USAGE, "until": held}, {"content": "Done.", "usage": USAGE}])
    run_id = submit(api, {"nodes": [{"id": "plan_cancel", "type": "agent", "config": {"task": "say done (cancel)"}}],
                          "edges": []})
    wait_for(lambda: len(fake_llm.requests) == 1, 60, "the model call in flight")
    reserved = dict((Run.objects.get(pk=run_id).usage or {})["reservations"])
    [pool] = psutil.Process(agent_worker.pid).children()
    kill9(pool.pid, inside=[agent_worker.pid])
    held.set()
    assert api.post(f"/api/v1/runs/{run_id}/cancel", {}, format="json").status_code == 200

    def settled() -> bool:
        usage = Run.objects.get(pk=run_id).usage or {}
        return not usage.get("reservations") and usage.get("cut_off_calls") == 1

    try:
        wait_for(settled, 20, "the cancelled run's cut-off call charged")
    except AssertionError:
        raise AssertionError(f"the call cut off was never charged: {Run.objects.get(pk=run_id).usage}") from None
    usage = Run.objects.get(pk=run_id).usage
    worst = sum(v["cost_usd"] for v in reserved.values())
    assert usage["cost_usd"] >= worst - 1e-12, usage
    day = OwnerSpend.objects.filter(owner=user).exclude(reserved={}).values_list("reserved", flat=True)
    assert not any(set(reserved) & set(held_then) for held_then in day), list(day)
    assert len(fake_llm.requests) == 1


@pytest.mark.faults_full  # a control: `make test-faults` only
def test_control_a_run_s_end_that_settles_nothing_leaves_the_cut_off_call_uncharged(engine, agent_worker, fake_llm,
                                                                                     api, user):
    hooks().set("aob:test:lapsed_end_off", 1)
    try:
        with pytest.raises(AssertionError, match="never charged"):
            test_a_call_a_kill_cut_off_is_charged_when_its_run_is_cancelled_before_it_reserves_again(
                engine, agent_worker, fake_llm, api, user)
    finally:
        hooks().delete("aob:test:lapsed_end_off")


def test_a_call_a_kill_cut_off_near_the_run_s_ceiling_is_spent_in_the_pause_it_causes(engine, agent_worker, fake_llm,
                                                                                      api, user, settings):
    """The killed attempt reserved $1.99 of the run's $2 (``AOB_RUN_MAX_COST_USD``); the resumed
    attempt's call cannot fit beside it. That reservation lapsed (its attempt died): it is a call
    made, charged at its worst case. It was counted as held by a call in flight: the pause said
    $0 spent, the call fitting, and waited for a release that never came; its owner deactivated,
    the node that only a raise could move waited for ever (a run nobody can end: the owner cannot
    sign in, staff cannot cancel another's run), where such a node fails saying why."""
    settings.AOB_LLM_PRICES = TEST_PRICES  # the web process validates models as the workers price them
    held = threading.Event()
    fake_llm.reset([{"content": "first answer, never read", "usage": USAGE, "until": held},
                    {"content": "Done.", "usage": USAGE}])
    run_id = submit(api, {"nodes": [{"id": "near", "type": "agent", "config": {
        "task": "say done (near the ceiling)", "model": PRICEY_MODEL, "max_tokens": 1000}}], "edges": []})
    wait_for(lambda: len(fake_llm.requests) == 1, 60, "the model call in flight")
    [pool] = psutil.Process(agent_worker.pid).children()
    kill9(pool.pid, inside=[agent_worker.pid])
    held.set()

    paused = wait_for(lambda: Event.objects.filter(run_id=run_id, node_id="near", type="node_paused").first(), 90,
                      "the resumed attempt's pause")
    assert paused.data["spent"]["cost_usd"] >= 1.99 - 1e-9, paused.data  # the cut-off call, at its worst case
    user.is_active = False
    user.save(update_fields=["is_active"])
    run = wait_for(lambda: (r := Run.objects.get(pk=run_id)).status == "failed" and r, 30,
                   "the run of a deactivated owner whose budget only a raise could move to fail")
    # woken as only a raise could move it (``budget._resume_fitting``), its claim refuses a deactivated owner
    assert (run.error["node_id"], run.error["error_type"]) == ("near", "owner_inactive"), run.error
    assert len(fake_llm.requests) == 1


@pytest.mark.faults_full  # a control: `make test-faults` only
def test_control_a_lapsed_reservation_held_leaves_the_pause_waiting_for_ever(engine, agent_worker, fake_llm, api,
                                                                             user, settings):
    hooks().set("aob:test:lapsed_held", 1)
    try:
        with pytest.raises(AssertionError):
            test_a_call_a_kill_cut_off_near_the_run_s_ceiling_is_spent_in_the_pause_it_causes(
                engine, agent_worker, fake_llm, api, user, settings)
    finally:
        hooks().delete("aob:test:lapsed_held")
