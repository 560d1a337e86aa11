"""A model call cut off before its answer arrived was still made: the provider received it, ran it
and bills it. agents/budget.py says "Every call made is charged"; a call the node's own
``timeout_ms`` cuts off (``SoftTimeLimitExceeded`` inside ``llm.chat``) is released with no usage
(``agents/loop.py`` ``_call``: ``except BaseException: budget.release(reservation)``), so it is
charged nothing, to the run or to the owner's day. A workflow's author chooses ``timeout_ms`` and
``retry``: every attempt's call then went uncharged, past the run's and the owner's ceilings. Now
a call that may have reached the provider (``llm.made``) is charged at its worst case."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import httpx2
import openai
import pytest
from celery.exceptions import SoftTimeLimitExceeded

from agents import budget, llm
from agents.exceptions import ModelNotPriced
from agents.llm import cost
from agents.models import OwnerSpend
from tests.agents.flows import agent, finish, node, start
from tests.conftest import wait_for_run
from tests.engine.flow import submit, wait_until
from tests.support.fake_llm import FakeLLM

MODEL = "gpt-4o-mini"
USAGE = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120, "prompt_tokens_details": {"cached_tokens": 64}}
ATTEMPTS = 3


def test_model_calls_cut_off_by_the_nodes_timeout_are_charged(engine: Any, fake_llm: FakeLLM, api: Any,
                                                             user: Any) -> None:
    answered = threading.Event()  # the provider answers once the run has given up on it
    fake_llm.reset([{"content": "too late", "usage": USAGE, "until": answered} for _ in range(ATTEMPTS)])
    run_id = submit(api, {"nodes": [{"id": "slow", "type": "agent", "timeout_ms": 1000,
                                     "retry": {"max_attempts": ATTEMPTS, "backoff_ms": 100},
                                     "config": {"task": "answer"}}], "edges": []})

    run = wait_for_run(run_id, timeout=60)
    answered.set()
    assert run.status == "failed", run.status
    wait_until(lambda: len(fake_llm.requests) == ATTEMPTS, timeout=10, what="every attempt's call at the provider")

    one_call = cost(MODEL, USAGE["prompt_tokens"], USAGE["prompt_tokens_details"]["cached_tokens"],
                    USAGE["completion_tokens"])
    usage = run.usage or {}
    spent_today = sum(OwnerSpend.objects.filter(owner=user).values_list("cost_usd", flat=True))
    assert usage.get("cost_usd", 0.0) >= ATTEMPTS * one_call - 1e-9, (
        f"{ATTEMPTS} model calls were made (the provider received and answered each), the run is charged "
        f"${usage.get('cost_usd', 0.0)} for {usage.get('calls', 0)} call(s)")
    assert spent_today >= ATTEMPTS * one_call - 1e-9, f"the owner's day counts ${spent_today}"


def _connection_error(cause: BaseException) -> openai.APIConnectionError:
    request = httpx.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    try:
        raise openai.APIConnectionError(request=request) from cause
    except openai.APIConnectionError as exc:
        return exc


@pytest.mark.parametrize(("exc", "charged"), [
    (openai.InternalServerError("boom", response=httpx.Response(500, request=httpx.Request("POST", "http://x")),
                                body=None), False),  # the provider answered: it refused the call
    (openai.InternalServerError("gateway timeout", response=httpx.Response(504, request=httpx.Request("POST", "http://x")),
                                body=None), True),  # a gateway's: the call may have been passed on
    (_connection_error(httpx2.ConnectError("refused")), False),  # never sent (the SDK's client is httpx2)
    (_connection_error(httpx2.ReadTimeout("no answer")), True),  # sent, no answer: billed as far as we know
    (_connection_error(httpx2.RemoteProtocolError("cut mid-answer")), True),
    (SoftTimeLimitExceeded(), True),  # the node's timeout_ms cut it off
    (ModelNotPriced("no price"), False),  # refused before sending
])
def test_a_failed_request_is_charged_when_it_may_have_reached_the_provider(exc, charged):
    assert llm.made(exc) is charged


@pytest.mark.parametrize("usage", [None, {"prompt_tokens": -1_000_000, "completion_tokens": -1_000_000,
                                          "total_tokens": -2_000_000}], ids=["none", "negative"])
def test_a_call_whose_answer_counts_no_usage_is_charged_its_worst_case(engine: Any, fake_llm: FakeLLM, api: Any,
                                                                     user: Any, usage: Any) -> None:
    """``llm.chat`` took an answer without ``usage`` as no usage, and counts as they came: a provider
    (or a gateway before it) that reports none made every call free, and one that reports negative
    counts took spend off the run's and the owner's day, past every ceiling. Such a call is charged
    its reservation's worst case, as the provider may bill it (``AOB_LLM_MAX_TOKENS`` of completion)."""
    fake_llm.reset([{"content": "done", "usage": usage}])
    run_id = submit(api, {"nodes": [{"id": "a", "type": "agent", "config": {"task": "answer"}}], "edges": []})
    run = wait_for_run(run_id, timeout=30)
    assert run.status == "completed", (run.status, list(run.node_runs.values_list("error", flat=True)))
    worst = cost(MODEL, 0, 0, 4096)  # its completion alone, at AOB_LLM_MAX_TOKENS
    spent_today = sum(OwnerSpend.objects.filter(owner=user).values_list("cost_usd", flat=True))
    assert (run.usage or {}).get("cost_usd", 0.0) >= worst and spent_today >= worst, (run.usage, spent_today)


PAST_THE_WORST_CASE = {
    "completion_past_max_tokens": {"prompt_tokens": 10, "completion_tokens": 10**9, "total_tokens": 10**9 + 10},
    "prompt_past_its_bytes": {"prompt_tokens": 10**19, "completion_tokens": 5, "total_tokens": 10**19 + 5},
    "past_a_float": {"prompt_tokens": 2 * 10**308, "completion_tokens": 5, "total_tokens": 5},
    "cached_past_the_prompt": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
                               "prompt_tokens_details": {"cached_tokens": 10**9}},
}


@pytest.mark.parametrize("case", list(PAST_THE_WORST_CASE))
def test_a_call_is_charged_no_more_than_its_worst_case_whatever_the_answer_counts(engine: Any, fake_llm: FakeLLM,
                                                                                 api: Any, user: Any,
                                                                                 case: str) -> None:
    """A count past what the call can use (``budget.worst_case``: the prompt at a token a byte, the
    ``max_tokens`` asked for; cached tokens past the prompt's) is no more believable than a negative
    one: a provider's (or a gateway's) ``completion_tokens: 10**9`` on a 100-token call charged the
    run and the owner's day $600 (the day's ceiling is $20), ``prompt_tokens: 10**19`` $1.5e12, and a
    count past a float's range failed the node with ``OverflowError`` after the call was made. Such a
    call is charged its reservation's worst case, saying why."""
    fake_llm.reset([{"content": "Done.", "usage": PAST_THE_WORST_CASE[case]}])

    run = finish(start(api, [agent(tools=[], max_tokens=100)]))

    plan = node(run, "plan")
    assert run.status == "completed", (run.error, plan.error)
    assert len(fake_llm.requests) == 1
    call = plan.usage["calls"][0]
    assert call["completion_tokens"] == 100 and budget.USAGE_UNKNOWN in call["errors"], call  # its worst case
    assert 0 < call["prompt_tokens"] < 10**5, call  # the prompt's worst case: a few KB at a token a byte
    assert run.usage["tokens"] == call["prompt_tokens"] + 100, run.usage
    spent_today = sum(OwnerSpend.objects.filter(owner=user).values_list("cost_usd", flat=True))
    assert spent_today == pytest.approx(call["cost_usd"]) and 0 < spent_today < 0.01, (spent_today, call)


def test_a_dense_prompt_is_charged_what_the_provider_counts(engine: Any, fake_llm: FakeLLM, api: Any,
                                                            user: Any) -> None:
    """A list of small numbers ("0,1,2,...", a tool's or an input's everyday text) is a token a byte
    in cl100k and o200k. The prompt's worst case was its JSON's bytes / 3: such a call's true count
    was taken as past it (``USAGE_UNKNOWN``) and the run and the owner's day charged a third of what
    the provider bills, an agent's way past the ceilings. A token is at least a byte."""
    digits = ",".join(str(i % 10) for i in range(24000))  # 47999 bytes, 47999 tokens in cl100k/o200k
    billed = len(digits) + 20  # the task's tokens, and the few the prompt's frame adds
    fake_llm.reset([{"content": "Done.", "usage": {"prompt_tokens": billed, "completion_tokens": 5,
                                                   "total_tokens": billed + 5}}])

    run = finish(start(api, [agent(task=f"Sum these: {digits}", tools=[], max_tokens=100)]))

    plan = node(run, "plan")
    assert run.status == "completed", (run.error, plan.error)
    call = plan.usage["calls"][0]
    assert budget.USAGE_UNKNOWN not in call["errors"], call
    assert (call["prompt_tokens"], call["completion_tokens"]) == (billed, 5), call  # what the provider bills
    assert run.usage["tokens"] == billed + 5, run.usage
    spent_today = sum(OwnerSpend.objects.filter(owner=user).values_list("cost_usd", flat=True))
    assert spent_today == pytest.approx(cost(call["model"], billed, 0, 5)), (spent_today, call)
