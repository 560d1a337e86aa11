"""A sub-workflow's LLM spend counts against its parent's ceilings as it happens: children running
side by side share what the parent has left, on the real workers with the real ``openai`` SDK."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from agents import budget
from subflows.models import SubRun
from tests.agents.flows import agent, node
from tests.approvals.runs import approval_of, decide, submit
from tests.conftest import PRICEY_MODEL, TEST_PRICES, client_for, wait_for_run
from tests.engine.flow import wait_until
from tests.faults.harness import hooks
from workflows.models import Event, NodeRun, Run
from workflows.services.definitions import workflow_save

TEXT = {"content": "Done."}
CALL_COST = 20 * 1990 / 1e6  # the fake model's 20 completion tokens at the pricey model's price
CHILDREN = 4


@pytest.fixture(autouse=True)
def _prices(settings: Any) -> None:
    settings.AOB_LLM_PRICES = TEST_PRICES  # the web process validates models as the workers price them


def _children(run_id: str) -> list[Run]:
    return list(Run.objects.filter(parent_link__parent_run_id=run_id))


def test_children_side_by_side_share_what_their_parent_has_left(engine, api, user, fake_llm):
    # each child's one model call reserves its worst case, $1.99: the parent's $2 covers one at a time
    workflow_save(owner=user, tag="ask", definition={"nodes": [agent(model=PRICEY_MODEL, max_tokens=1000)],
                                                     "edges": []})
    fake_llm.reset([TEXT] * CHILDREN)
    parent = {"nodes": [{"id": f"c{i}", "type": "workflow", "config": {"tag": "ask"}} for i in range(CHILDREN)],
              "edges": []}
    response = api.post("/api/v1/runs", {"workflow": parent, "inputs": {}}, format="json")
    assert response.status_code == 201, response.json()
    run_id = response.json()["run_id"]

    def settled() -> list[Run] | None:
        children = _children(run_id)
        states = sorted(c.status for c in children)
        return children if states == ["completed"] + ["waiting_for_approval"] * (CHILDREN - 1) else None

    children = wait_until(settled, timeout=30, what="one child done, the others paused on the parent's budget")

    assert len(fake_llm.requests) == 1  # before the fix: four calls, $7.96 reserved against $2
    for child in children:
        assert child.budget == {Run.WITHIN: run_id}
        if child.status == "waiting_for_approval":
            assert (node(child, "plan").status, node(child, "plan").wait_reason) == ("waiting", "budget")
            paused = Event.objects.filter(run=child, type="node_paused").last()
            # the run above, by how far up it is: the child's readers are not all the parent's
            assert paused.data["above"] == 1 and "the run 1 above this one" in paused.data["message"]
    parent_run = Run.objects.get(pk=run_id)
    assert parent_run.usage["calls"] == 1 and parent_run.usage["cost_usd"] == pytest.approx(CALL_COST)
    assert parent_run.usage["reservations"] == {}
    child_view = api.get(f"/api/v1/runs/{children[0].pk}").json()
    assert child_view["budget"] == {"max_tokens": None, "max_cost_usd": None, "within_run": run_id}

    raised = api.post(f"/api/v1/runs/{run_id}/budget", {"max_cost_usd": 10}, format="json")

    assert raised.status_code == 200, raised.json()
    parent_run = wait_for_run(run_id)
    assert parent_run.status == "completed", parent_run.error
    assert len(fake_llm.requests) == CHILDREN
    # counted once each, as it happened: the child's end adds nothing more
    assert parent_run.usage["calls"] == CHILDREN
    assert parent_run.usage["cost_usd"] == pytest.approx(CHILDREN * CALL_COST)
    assert all(c.usage["calls"] == 1 for c in _children(run_id))
    resumed = Event.objects.filter(run__in=[c.pk for c in children], type="budget_raised")
    # how far up, never the parent's id or ceilings (one asked in a child only is told nothing of it)
    assert [sorted(e.data) for e in resumed] == [["above", "by", "resumed"]] * (CHILDREN - 1)
    assert [e.data["above"] for e in resumed] == [1] * (CHILDREN - 1)
    assert SubRun.objects.filter(parent_run_id=run_id, settled_at__isnull=False).count() == CHILDREN


def _second_child_paused_while_the_first_call_is_in_flight(api, user, fake_llm) -> tuple[str, NodeRun]:
    """Two children of a $2 parent; each call reserves $1.194 (600 tokens at the pricey model's
    price) and costs $0.0398: two reservations do not fit, the first call's usage and the second
    do. The first call is held until the second child has paused; the parent's id and that pause."""
    workflow_save(owner=user, tag="ask", definition={"nodes": [agent(model=PRICEY_MODEL, max_tokens=600)],
                                                     "edges": []})
    first_answers = threading.Event()
    fake_llm.reset([{**TEXT, "until": first_answers}, TEXT])
    parent = {"nodes": [{"id": f"c{i}", "type": "workflow", "config": {"tag": "ask"}} for i in range(2)], "edges": []}
    run_id = api.post("/api/v1/runs", {"workflow": parent, "inputs": {}}, format="json").json()["run_id"]
    try:
        paused = wait_until(lambda: NodeRun.objects.filter(run__parent_link__parent_run_id=run_id, node_id="plan",
                                                           status="waiting", wait_reason="budget").first(),
                            timeout=30, what="the second child paused while the first call is in flight")
    finally:
        first_answers.set()
    return run_id, paused


def _completed_with_both_calls(run_id: str, fake_llm) -> Run:
    run = wait_for_run(run_id)
    assert run.status == "completed", run.error  # no one raised anything
    assert len(fake_llm.requests) == 2
    assert run.usage["cost_usd"] == pytest.approx(2 * CALL_COST) and run.usage["reservations"] == {}
    return run


def test_a_child_paused_on_its_parent_s_budget_tells_its_approver_nothing_of_the_parent(engine, api, user,
                                                                                       make_user, fake_llm):
    """One asked to approve in a child run only is told nothing of its parent (``run_get``'s
    ``within_hidden``, ``run_family``), and reads the child's events: an agent of the child paused at
    the parent's ceiling wrote there the parent's id, its ceilings and its spend. The pause says the
    run above by how far up it is; its owner, who sees the line, raises it there and the child goes on."""
    bob = client_for(make_user("bob"))
    workflow_save(owner=user, tag="child", definition={"nodes": [
        {"id": "gate", "type": "hitl", "config": {"approvers": ["bob"], "message": "ok?"}},
        agent(model=PRICEY_MODEL, max_tokens=2000)], "edges": []})  # its worst case ($3.98) passes the parent's $2
    fake_llm.reset([TEXT])
    response = api.post("/api/v1/runs", {"workflow": {"nodes": [{"id": "c", "type": "workflow",
                                                                 "config": {"tag": "child"}}], "edges": []},
                                         "inputs": {}}, format="json")
    assert response.status_code == 201, response.json()
    parent_id = response.json()["run_id"]
    child = wait_until(lambda: (_children(parent_id) or [None])[0], timeout=30, what="the child run")
    wait_until(lambda: Event.objects.filter(run=child, type="node_paused").exists()
               and Event.objects.filter(run=child, type="approval_required").exists(), timeout=30,
               what="the child's agent paused on the parent's budget, its gate asking bob")

    assert bob.get(f"/api/v1/runs/{parent_id}").status_code == 404
    read = bob.get(f"/api/v1/runs/{child.pk}/events")
    assert read.status_code == 200 and parent_id not in read.content.decode()
    [paused] = [e["data"] for e in read.json() if e["type"] == "node_paused"]
    assert paused["above"] == 1 and not {"budget_run_id", "budget", "spent", "held"} & set(paused), paused
    # the owner reads the run above from the child (as before) and raises it there
    assert api.get(f"/api/v1/runs/{child.pk}").json()["budget"]["within_run"] == parent_id
    assert api.post(f"/api/v1/runs/{parent_id}/budget", {"max_cost_usd": 10}, format="json").status_code == 200
    wait_until(lambda: node(child, "plan").status == "completed", timeout=30, what="the child's agent resumed")


def test_a_child_paused_on_a_siblings_reservation_goes_on_once_that_call_has_cost_less(engine, api, user, fake_llm):
    run_id, paused = _second_child_paused_while_the_first_call_is_in_flight(api, user, fake_llm)

    _completed_with_both_calls(run_id, fake_llm)

    freed = Event.objects.filter(run_id=paused.run_id, type="budget_freed").values_list("data", flat=True)
    assert [d["resumed"] for d in freed] == [["plan"]]
    assert all(d["released"] for d in freed)  # woken by the release itself, which run's not said


@pytest.mark.fault
def test_a_wake_lost_with_its_process_is_made_up_by_the_sweep(engine, api, user, fake_llm):
    hooks().set("aob:test:budget_wake_off", 1)
    try:
        run_id, paused = _second_child_paused_while_the_first_call_is_in_flight(api, user, fake_llm)

        _completed_with_both_calls(run_id, fake_llm)
    finally:
        hooks().delete("aob:test:budget_wake_off")
    freed = Event.objects.filter(run_id=paused.run_id, type="budget_freed").values_list("data", flat=True)
    assert [d["resumed"] for d in freed] == [["plan"]] and "released" not in freed[0]  # by agents.sweep


@pytest.mark.faults_full  # a slow fault or its control: `make test-faults` only (tests/conftest.py)
@pytest.mark.fault
def test_control_without_wake_and_sweep_the_node_stays_paused_though_it_fits(engine, api, user, fake_llm):
    hooks().set("aob:test:budget_wake_off", 1)
    hooks().set("aob:test:budget_sweep_off", 1)
    try:
        run_id, paused = _second_child_paused_while_the_first_call_is_in_flight(api, user, fake_llm)
        wait_until(lambda: Run.objects.get(pk=run_id).usage.get("calls") == 1, what="the first call released")
        with pytest.raises(AssertionError, match="still"):
            wait_for_run(run_id, timeout=6)  # the sweep would have judged it again after 3 s
        assert NodeRun.objects.get(pk=paused.pk).status == "waiting"
    finally:
        hooks().delete("aob:test:budget_wake_off", "aob:test:budget_sweep_off")
    _completed_with_both_calls(run_id, fake_llm)


def test_a_reservation_left_by_a_node_that_no_longer_runs_is_charged_once(engine, api, user, fake_llm):
    """A node run killed mid-call leaves its reservation behind. Its call was made (the provider
    bills it), so the next reservation charges it at its worst case, once; it does not stay a
    reservation that shrinks what the run has left for ever (before, it was dropped uncharged)."""
    fake_llm.reset([TEXT])
    gated = {"nodes": [{"id": "review", "type": "hitl", "config": {"message": "go?"}},
                       agent(model=PRICEY_MODEL, max_tokens=1000)],
             "edges": [{"from": "review", "to": "plan", "condition": "$.approved == true"}]}
    run_id = submit(user, gated)
    approval = approval_of(run_id)
    gone = NodeRun.objects.create(run_id=run_id, node_id="gone", node_type="agent", status=NodeRun.Status.FAILED)
    Run.objects.filter(pk=run_id).update(usage={"reservations": {f"{gone.pk}/1": {"tokens": 500, "cost_usd": 0.005}}})

    assert decide(user, approval).status_code == 200
    run = wait_for_run(run_id)

    assert run.status == "completed", run.error
    assert len(fake_llm.requests) == 1
    assert run.usage["reservations"] == {} and (run.usage["calls"], run.usage["cut_off_calls"]) == (2, 1)
    assert run.usage["cost_usd"] > 0.005 and run.usage["tokens"] > 500
    assert [c["errors"] for c in NodeRun.objects.get(pk=gone.pk).usage["calls"]] == [[budget.LAPSED]]


@pytest.mark.django_db
def test_a_child_started_before_spend_counted_against_its_parent_adds_its_usage_once_by_the_runs_rule(user):
    """Such a child's usage is added to its parent's when it settles, by the one rule that adds a
    call's (``workflows.models.run.usage_add``): it had its own copy of the keys and the rounding."""
    from subflows.services import _roll_up_usage
    from tests.conftest import stored_run

    parent, child = stored_run(user), stored_run(user)
    Run.objects.filter(pk=parent.pk).update(usage={"tokens": 10, "prompt_tokens": 7, "completion_tokens": 3,
                                                   "cached_tokens": 1, "calls": 1, "cost_usd": 0.1})
    child.usage = {"tokens": 5, "prompt_tokens": 4, "completion_tokens": 1, "calls": 2, "cost_usd": 0.2}

    _roll_up_usage(parent.pk, child)

    assert Run.objects.get(pk=parent.pk).usage == {"tokens": 15, "prompt_tokens": 11, "completion_tokens": 4,
                                                   "cached_tokens": 1, "calls": 3, "cost_usd": 0.3}
