"""kill -9 of an agent's worker while its model call is in flight (the provider holds the request,
then answers it: the call was made and is billed). The lease lapses, the sweeper queues the node
again and the resumed attempt asks the model again: the journal had nothing to replay.

The outside-effects bar (docs/DESIGN.md "Effects outside": "every outbound request carries an
``Idempotency-Key`` stable across retries of one node run"; agents/budget.py: "Every call made is
charged") asks two things of that repeat, and these tests hold it to each:

- the repeated request is recognisable as a repeat at the provider: both carry the same key;
- the call the kill cut off was made and billed, so the run's and the owner's spend count it.

Each has its negative control (``aob:test:llm_key_off``, ``aob:test:lapsed_uncharged``), run by
``make test-faults``.
"""

from __future__ import annotations

import threading
from typing import Any

import psutil
import pytest

from agents.llm import cost
from agents.models import OwnerSpend
from tests.engine.flow import submit
from tests.support.fake_llm import FakeLLM
from workflows.models import NodeRun, Run
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
