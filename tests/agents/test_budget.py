"""Spend is bounded for every run: each model call reserves its worst case first; a run that
reaches its ceiling pauses its agent (``waiting``, reason ``budget``) until the owner raises it,
and the agent then resumes from its journal with no model call lost or made twice."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.utils import timezone

from agents.models import AgentTurn
from tests.agents.flows import WAITING, agent, finish, node, start
from tests.conftest import PRICEY_MODEL, TEST_PRICES, wait_for_run
from workflows.models import Event

TEXT = {"content": "Done."}


@pytest.fixture(autouse=True)
def _prices(settings: Any) -> None:
    settings.AOB_LLM_PRICES = TEST_PRICES  # the web process validates models as the workers price them


def test_a_run_at_its_ceiling_waits_then_resumes_when_its_owner_raises_it(engine, api, user, fake_llm, remote):
    pipeline = {"steps": [{"op": "http_request", "url": f"{remote.base}/echo"}]}
    fake_llm.reset([{"tool_calls": [("execute_pipeline", pipeline)]}, TEXT])
    run_id = start(api, [agent(model=PRICEY_MODEL, max_tokens=1000)])

    run = wait_for_run(run_id, statuses=WAITING)

    plan = node(run, "plan")
    assert (run.status, plan.status, plan.wait_reason) == ("waiting_for_approval", "waiting", "budget")
    assert len(fake_llm.requests) == 1 and len(remote.hits("/echo")) == 1  # the first call and its tool ran
    paused = Event.objects.get(run=run, type="node_paused")
    assert paused.data["reason"] == "budget" and paused.data["budget"] == {"max_tokens": 500000, "max_cost_usd": 2.0}
    assert run.usage["reservations"] == {} and run.usage["calls"] == 1
    details = api.get(f"/api/v1/runs/{run_id}/details").json()
    assert [n["wait_reason"] for n in details["nodes"]] == ["budget"]

    raised = api.post(f"/api/v1/runs/{run_id}/budget", {"max_cost_usd": 5}, format="json")

    assert raised.status_code == 200, raised.json()
    assert raised.json()["budget"] == {"max_tokens": 500000, "max_cost_usd": 5}
    run = finish(run_id)
    assert run.status == "completed", run.error
    plan = node(run, "plan")
    assert plan.output["message"] == "Done." and plan.attempts == 2
    assert [c["name"] for c in plan.output["tool_calls"]] == ["execute_pipeline"]
    assert len(fake_llm.requests) == 2 and len(remote.hits("/echo")) == 1  # nothing repeated, nothing lost
    assert fake_llm.requests[1]["body"]["max_tokens"] == 1000
    assert run.usage["calls"] == 2 and run.usage["cost_usd"] == pytest.approx(2 * 20 * 1990 / 1e6)
    assert AgentTurn.objects.filter(node_run=plan, kind="response").count() == 2
    assert list(Event.objects.filter(run=run, type__in=["node_paused", "budget_raised"]).values_list(
        "type", flat=True)) == ["node_paused", "budget_raised"]


def test_only_the_owner_raises_a_budget_and_a_finished_run_has_none_to_raise(engine, api, make_user, fake_llm):
    fake_llm.reset([TEXT])
    run_id = start(api, [agent()])
    run = finish(run_id)
    assert run.status == "completed", run.error
    from tests.conftest import client_for

    stranger = client_for(make_user("mallory"))
    assert stranger.post(f"/api/v1/runs/{run_id}/budget", {"max_cost_usd": 5}, format="json").status_code == 404
    assert api.post(f"/api/v1/runs/{run_id}/budget", {}, format="json").status_code == 400
    assert api.post(f"/api/v1/runs/{run_id}/budget", {"max_cost_usd": -1}, format="json").status_code == 400
    late = api.post(f"/api/v1/runs/{run_id}/budget", {"max_cost_usd": 5}, format="json")
    assert late.status_code == 409 and late.json()["error"] == "run_finished"


def test_an_unpriced_model_is_refused_at_save_and_before_any_call(engine, api, fake_llm):
    fake_llm.reset([TEXT])
    saved = api.post("/api/v1/workflows", {"tag_name": "free", "workflow": {
        "nodes": [agent(model="free-lunch-1")], "edges": []}}, format="json")
    assert saved.status_code == 400
    assert [(e["path"], e["rule"]) for e in saved.json()["details"]["errors"]] == [
        ("/nodes/0/config/model", "model_unpriced")]

    run = finish(start(api, [agent(model="$inputs.model")], inputs={"model": "free-lunch-1"}))

    assert run.status == "failed"
    assert node(run, "plan").error["error_type"] == "ModelNotPriced" and fake_llm.requests == []

    # a reference may resolve to anything: a list names no model either, and the node says so
    run = finish(start(api, [agent(model="$inputs.model")], inputs={"model": ["gpt-4o-mini"]}))

    assert run.status == "failed"
    error = node(run, "plan").error
    assert (error["error_type"], error["message"]) == ("ModelNotPriced", "a model is named by a string, not a list")
    assert fake_llm.requests == []


def test_no_tools_means_no_tools(engine, api, fake_llm):
    fake_llm.reset([TEXT])

    run = finish(start(api, [agent(tools=[])]))

    assert run.status == "completed", run.error
    assert "tools" not in fake_llm.requests[0]["body"]


def test_a_missing_tools_list_gives_the_documented_default_set(engine, api, fake_llm):
    fake_llm.reset([{"tool_calls": [("delegate_to_agent", {"task": "x"})]}, TEXT])

    run = finish(start(api, [agent()]))

    assert run.status == "completed", run.error
    offered = [t["function"]["name"] for t in fake_llm.requests[0]["body"]["tools"]]
    assert offered == ["execute_pipeline", "patch_workflow", "search_tools"]
    assert node(run, "plan").output["tool_calls"][0]["result"]["error"] == "unknown_tool"


def test_a_refused_call_never_fits_by_the_figure_its_pause_recorded(api):
    """The wake judges a paused node by the worst case its ``node_paused`` event recorded: were that
    figure rounded, a ceiling between it and the exact cost would pause, wake, pause... for ever."""
    from agents import budget
    from agents.exceptions import BudgetPaused
    from workflows.models import NodeRun, Run

    run_id = start(api, [{"id": "gate", "type": "hitl", "config": {"message": "go?"}}])
    gate = NodeRun.objects.get(run_id=run_id, node_id="gate").pk
    between = 0
    for size in range(1, 3000, 7):
        messages = [{"role": "user", "content": "x" * size}]
        tokens, cost = budget.worst_case("gpt-4o-mini", messages, 1000)
        Run.objects.filter(pk=run_id).update(budget={"max_cost_usd": round(cost, 8)}, usage={})
        try:
            budget.reserve(run_id=run_id, node_run_id=gate, attempt=1, model="gpt-4o-mini", messages=messages,
                           max_tokens=1000, node_budget=None)
        except BudgetPaused as exc:
            between += 1
            following = exc.extra["next_call"]
            assert not budget.fits_now(run_id=run_id, tokens=following["tokens"], cost=following["cost_usd"]), size
    assert between  # some sizes cost a hair more than their rounded figure: the case that looped


def test_a_dead_reservation_is_charged_to_the_owners_day_once(api, user, settings):
    """A node run killed mid-call leaves its reservation in the owner's day: the call was made and
    the provider bills it. The next reservation charges it at its worst case, once (before, it was
    dropped and the call counted nothing)."""
    from django.utils import timezone

    from agents import budget
    from agents.models import OwnerSpend
    from workflows.models import NodeRun

    settings.AOB_OWNER_DAILY_COST_USD = 20.0  # whatever the environment says: the figures below assume it
    run_id = start(api, [{"id": "gate", "type": "hitl", "config": {"message": "go?"}},
                         {"id": "gone", "type": "hitl", "config": {"message": "go?"}}])
    gate, gone = (NodeRun.objects.get(run_id=run_id, node_id=n).pk for n in ("gate", "gone"))
    NodeRun.objects.filter(pk=gone).update(status=NodeRun.Status.FAILED)
    OwnerSpend.objects.create(owner=user, day=timezone.now().date(), reserved={f"{gone}/1": 5.0})
    messages = [{"role": "user", "content": "hi"}]

    first = budget.reserve(run_id=run_id, node_run_id=gate, attempt=1, model="gpt-4o-mini", messages=messages,
                           max_tokens=1000, node_budget=None)
    spend = OwnerSpend.objects.get(owner=user)
    assert (spend.cost_usd, set(spend.reserved)) == (5.0, {first.key})
    budget.release(first)
    budget.reserve(run_id=run_id, node_run_id=gate, attempt=1, model="gpt-4o-mini", messages=messages,
                   max_tokens=1000, node_budget=None)
    assert OwnerSpend.objects.get(owner=user).cost_usd == 5.0  # charged once

    OwnerSpend.objects.filter(owner=user).update(reserved={f"{gone}/1": 19.9999})
    with pytest.raises(budget.OwnerBudgetExceeded):  # the dead call's cost and this one pass the $20 day
        budget.reserve(run_id=run_id, node_run_id=gate, attempt=1, model="gpt-4o-mini", messages=messages,
                       max_tokens=1000, node_budget=None)


def _two_attempts(api: Any) -> tuple[str, int, Any, Any]:
    """A run whose agent node run lapsed at attempt 1 while its call was in flight (a worker frozen
    past its lease) and was claimed again by attempt 2, which reserved its own call: both calls in
    flight at once, as the sweeper's re-queue allows."""
    from agents import budget
    from workflows.models import NodeRun

    run_id = start(api, [{"id": "gate", "type": "hitl", "config": {"message": "go?"}}])
    pk = NodeRun.objects.get(run_id=run_id, node_id="gate").pk
    messages = [{"role": "user", "content": "hi"}]
    NodeRun.objects.filter(pk=pk).update(status=NodeRun.Status.RUNNING, attempts=1)
    first = budget.reserve(run_id=run_id, node_run_id=pk, attempt=1, model="gpt-4o-mini", messages=messages,
                           max_tokens=1000, node_budget=None)
    NodeRun.objects.filter(pk=pk).update(attempts=2)
    second = budget.reserve(run_id=run_id, node_run_id=pk, attempt=2, model="gpt-4o-mini", messages=messages,
                            max_tokens=1000, node_budget=None)
    return run_id, pk, first, second


def test_a_late_release_from_a_lapsed_attempt_leaves_the_next_attempts_reservation(api, user):
    """Attempt 1's release (its heartbeat aborted the call once the lease was gone) came after
    attempt 2 reserved: before, both shared the node run's key and the release freed attempt 2's
    call, so other calls could reserve into room that call still takes."""
    from agents import budget
    from agents.models import OwnerSpend
    from workflows.models import Run

    run_id, _, first, second = _two_attempts(api)
    # attempt 1's call is charged at its worst case (it lapsed): room for two calls, not three
    Run.objects.filter(pk=run_id).update(budget={"max_cost_usd": round(second.cost_usd * 2.5, 8)})

    budget.release(first)

    assert set(Run.objects.get(pk=run_id).usage["reservations"]) == {second.key}
    assert set(OwnerSpend.objects.get(owner=user).reserved) == {second.key}
    assert not budget.fits_now(run_id=run_id, tokens=second.tokens, cost=second.cost_usd)  # attempt 2's call holds
    budget.release(second)
    assert budget.fits_now(run_id=run_id, tokens=second.tokens, cost=second.cost_usd)


def test_a_call_whose_turn_another_attempt_journaled_first_is_still_charged(api, user):
    """Both attempts called the model for the same turn; the journal keeps the first answer, but
    the second call was made and paid for: before, it was never charged. Attempt 1 had lapsed when
    attempt 2 reserved, so its call was charged then, at its worst case, and its late answer adds
    nothing more."""
    from agents.journal import Journal
    from agents.llm import Call
    from agents.models import OwnerSpend
    from workflows.models import NodeRun, Run

    run_id, pk, first, second = _two_attempts(api)
    calls = [Call(model="gpt-4o-mini", prompt_tokens=10, completion_tokens=5, cost_usd=0.25),
             Call(model="gpt-4o-mini", prompt_tokens=20, completion_tokens=7, cost_usd=0.5)]

    kept = Journal(pk, 1).record_response(0, {"role": "assistant", "content": "one"}, calls[0], first)
    lost = Journal(pk, 2).record_response(0, {"role": "assistant", "content": "two"}, calls[1], second)

    assert lost == kept and kept["message"]["content"] == "one"  # attempt 2 goes on with the journaled answer
    usage = Run.objects.get(pk=run_id).usage
    assert (usage["calls"], usage["tokens"], usage["reservations"]) == (2, first.tokens + 27, {})
    assert usage["cost_usd"] == pytest.approx(first.cost_usd + 0.5)
    assert OwnerSpend.objects.get(owner=user).cost_usd == pytest.approx(first.cost_usd + 0.5)
    assert len(NodeRun.objects.get(pk=pk).usage["calls"]) == 2


def test_a_reservation_written_before_keys_named_attempts_is_replaced_by_its_node_runs_next(api, user):
    """During a rolling deploy an older worker's reservation (keyed by the node run alone) may be
    left when the node run's next attempt reserves on a newer one: it is replaced, not counted twice."""
    from agents import budget
    from agents.models import OwnerSpend
    from workflows.models import NodeRun, Run

    run_id = start(api, [{"id": "gate", "type": "hitl", "config": {"message": "go?"}}])
    pk = NodeRun.objects.get(run_id=run_id, node_id="gate").pk
    NodeRun.objects.filter(pk=pk).update(status=NodeRun.Status.RUNNING, attempts=2)
    Run.objects.filter(pk=run_id).update(usage={"reservations": {str(pk): {"tokens": 10, "cost_usd": 1.5}}})
    OwnerSpend.objects.create(owner=user, day=timezone.now().date(), reserved={str(pk): 1.5})

    reservation = budget.reserve(run_id=run_id, node_run_id=pk, attempt=2, model="gpt-4o-mini",
                                 messages=[{"role": "user", "content": "hi"}], max_tokens=1000, node_budget=None)

    assert set(Run.objects.get(pk=run_id).usage["reservations"]) == {reservation.key}
    assert set(OwnerSpend.objects.get(owner=user).reserved) == {reservation.key}


@pytest.mark.django_db
def test_a_node_s_budget_is_judged_with_the_call_s_worst_case_and_the_calls_in_flight(user):
    """A node's ``budget`` was compared with what the run had already spent, so the call that passed
    it was made, and K delegates copying it made K such calls at once (a red-team helper reserved
    14,108 tokens against a budget of 10). A call that cannot fit beside the spend fails the node;
    one that cannot fit beside the calls in flight waits for them, as a run's ceiling does, and fits
    once they end (their actual usage replaces their worst case). A call whose attempt died in flight
    was made: it counts as spent, not as a wait (nothing would end it)."""
    from agents import budget
    from agents.exceptions import BudgetExceeded, BudgetPaused
    from tests.conftest import stored_run
    from workflows.models import NodeRun

    run = stored_run(user)
    first, second = (NodeRun.objects.create(run=run, node_id=n, node_type="agent", status="running", attempts=1)
                     for n in ("a", "b"))
    messages = [{"role": "user", "content": "x" * 3000}]
    tokens, cost = budget.worst_case("gpt-4o-mini", messages, 1000)
    call = {"run_id": str(run.pk), "attempt": 1, "model": "gpt-4o-mini", "messages": messages, "max_tokens": 1000}

    with pytest.raises(BudgetExceeded) as refused:  # nothing spent yet, and the call alone could pass it
        budget.reserve(node_run_id=first.pk, node_budget={"max_tokens": tokens - 1}, **call)
    assert refused.value.extra["next_call"] == {"tokens": tokens, "cost_usd": cost}

    roomy = {"max_tokens": tokens * 2 - 1, "max_cost_usd": 1}  # room for one such call, not two
    held = budget.reserve(node_run_id=first.pk, node_budget=roomy, **call)  # a delegate's call, in flight
    with pytest.raises(BudgetPaused) as waits:
        budget.reserve(node_run_id=second.pk, node_budget=roomy, **call)
    assert waits.value.extra["held"]["tokens"] == tokens and waits.value.extra["node_budget"] == roomy
    assert "calls in flight" in str(waits.value)
    assert not budget.fits_now(run_id=str(run.pk), tokens=tokens, cost=cost, node_budget=roomy)  # wake's judgement

    NodeRun.objects.filter(pk=first.pk).update(status="failed")  # its worker died mid-call: the call was made
    with pytest.raises(BudgetExceeded) as spent:
        budget.reserve(node_run_id=second.pk, node_budget=roomy, **call)
    assert spent.value.extra["spent"]["tokens"] == tokens and spent.value.extra["held"]["tokens"] == 0
    assert budget.fits_now(run_id=str(run.pk), tokens=tokens, cost=cost, node_budget=roomy)  # woken, to fail so

    NodeRun.objects.filter(pk=first.pk).update(status="running")
    budget.release(held)  # it answered: its actual usage (none here) replaces its worst case
    assert budget.fits_now(run_id=str(run.pk), tokens=tokens, cost=cost, node_budget=roomy)
    budget.release(budget.reserve(node_run_id=second.pk, node_budget=roomy, **call))


def test_the_worst_case_counts_the_tools_sent_beside_the_messages():
    from agents import budget

    messages = [{"role": "user", "content": "hi"}]
    tools = [{"type": "function", "function": {"name": "patch_workflow", "description": "d" * 3000}}]

    bare, with_tools = budget.worst_case("gpt-4o-mini", messages, 100), budget.worst_case("gpt-4o-mini", messages, 100, tools)

    assert with_tools[0] >= bare[0] + 1000 and with_tools[1] > bare[1]


def test_a_node_budget_held_by_a_call_in_flight_waits_for_it_then_goes_on(engine, api, fake_llm):
    """Two agents with a budget each that one call's worst case (its prompt and ``max_tokens`` of
    answer) fits and two do not. While one node's call is in flight, the other waits on the budget
    (it failed before this was a wait, and made its call regardless before that); the first call's
    release (120 tokens used) wakes it, and it goes on. Woken once, not in a loop."""
    import threading

    from tests.engine.flow import wait_until
    from workflows.models import NodeRun

    def two(budget: dict) -> str:
        return start(api, [agent("a", budget=budget, max_tokens=1000), agent("b", budget=budget, max_tokens=1000)])

    # a call's worst case, as the same two nodes (their budget's digits aside) are refused it: the
    # first refused fails the run, and the other may be cancelled before its own refusal
    probe = finish(two({"max_tokens": 1}))
    refused = [node(probe, n).error for n in ("a", "b")]
    worst = max(error["next_call"]["tokens"] for error in refused if error and "next_call" in error)
    budget = {"max_tokens": worst + worst // 2}
    answered = threading.Event()
    usage = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
    fake_llm.reset([{"content": "first", "usage": usage, "until": answered}, {"content": "second", "usage": usage}])
    run_id = two(budget)

    wait_until(lambda: NodeRun.objects.filter(run_id=run_id, status="waiting", wait_reason="budget").exists(),
               timeout=30, what="the second node waiting on its budget")
    wait_until(lambda: len(fake_llm.requests) == 1, timeout=30, what="the first node's call at the provider")
    answered.set()
    run = finish(run_id)

    assert run.status == "completed", run.error
    assert sorted(node(run, n).output["message"] for n in ("a", "b")) == ["first", "second"]
    assert len(fake_llm.requests) == 2 and run.usage["tokens"] == 240
    paused = list(Event.objects.filter(run=run, type="node_paused").values_list("data", flat=True))
    assert len(paused) == 1 and paused[0]["node_budget"] == budget and paused[0]["held"]["tokens"] >= worst - 10


def test_a_pause_is_no_try_of_the_node_s_own(engine, api, user, fake_llm, remote):
    """A node claimed again after a budget pause was on its second attempt, so with
    ``retry.max_attempts: 2`` its first transient failure after the raise (here its timeout, a call
    held past it) failed it: the pause had used a try. A pause is logged ``paused`` and not counted."""
    held = threading.Event()
    pipeline = {"steps": [{"op": "http_request", "url": f"{remote.base}/echo"}]}
    fake_llm.reset([{"tool_calls": [("execute_pipeline", pipeline)]}, {"content": "late", "until": held}, TEXT])
    plan = agent(model=PRICEY_MODEL, max_tokens=1000)
    plan["retry"] = {"max_attempts": 2, "backoff_ms": 10}
    plan["timeout_ms"] = 3000
    run_id = start(api, [plan])
    try:
        wait_for_run(run_id, statuses=WAITING)
        assert api.post(f"/api/v1/runs/{run_id}/budget", {"max_cost_usd": 20}, format="json").status_code == 200
        run = finish(run_id)
    finally:
        held.set()

    plan_run = node(run, "plan")
    assert run.status == "completed", (run.error, plan_run.attempt_log)
    assert [(e["attempt"], e["status"]) for e in plan_run.attempt_log] == [
        (1, "paused"), (2, "failed"), (3, "completed")]
    assert plan_run.attempt_log[1]["error"]["error_type"] == "Timeout"
    assert len(remote.hits("/echo")) == 1  # the journal replayed the first turn's tool: nothing repeated


@pytest.mark.django_db
@pytest.mark.parametrize(("field", "value"), [("max_tokens", -1), ("max_cost_usd", -0.5), ("max_cost_usd", float("nan")),
                                              ("max_tokens", 10**13), ("max_cost_usd", True)])
def test_the_ceilings_a_raise_may_set_are_the_service_s_whoever_calls_it(user, field, value):
    """Its bounds were the API field's alone: any other caller (an admin action, a command) set a
    negative ceiling."""
    from aob_project.exceptions import ValidationFailed
    from tests.conftest import stored_run
    from workflows.services.runs import run_budget_raise

    run = stored_run(user)
    with pytest.raises(ValidationFailed) as refused:
        run_budget_raise(run=run, user=user, **{field: value})
    assert (refused.value.extra["field"], refused.value.extra["rule"]) == (field, "range")


@pytest.mark.django_db
def test_a_raise_that_names_no_ceiling_is_a_400_naming_the_field(api, user):
    from tests.conftest import stored_run

    run = stored_run(user)
    response = api.post(f"/api/v1/runs/{run.pk}/budget", {}, format="json")

    details = response.json()["details"]
    assert response.status_code == 400 and (details["field"], details["rule"]) == ("max_tokens", "required")
