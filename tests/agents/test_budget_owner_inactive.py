"""A run's budget is raised by its owner alone (``run_owner_check``): a run whose owner was
deactivated while it ran has nobody who can raise it. A node that reaches that ceiling must not
wait for a raise that cannot come, saying "its owner can raise it": it ends, saying why, as a
``workflow`` node of a deactivated owner's run does (``owner_inactive``)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.contrib.auth.models import User

from tests.agents.flows import WAITING, agent, node, start
from tests.conftest import PRICEY_MODEL, TEST_PRICES, wait_for_run
from tests.engine.flow import wait_until
from workflows.models import Event, Run

TEXT = {"content": "Done."}


@pytest.fixture(autouse=True)
def _prices(settings: Any) -> None:
    settings.AOB_LLM_PRICES = TEST_PRICES  # the web process validates models as the workers price them


def test_a_deactivated_owners_agent_at_its_ceiling_ends_saying_nobody_can_raise_it(
        engine, api, user, fake_llm, remote):
    key = uuid.uuid4().hex
    pipeline = {"steps": [{"op": "http_request", "url": f"{remote.base}/hold/{key}"}]}
    fake_llm.reset([{"tool_calls": [("execute_pipeline", pipeline)]}, TEXT])
    run_id = start(api, [agent(model=PRICEY_MODEL, max_tokens=1000)])  # one call fits the $2 ceiling, not two
    wait_until(lambda: len(remote.hits(f"/hold/{key}")) == 1, what="the first call's tool call in flight")

    User.objects.filter(pk=user.pk).update(is_active=False)  # the owner leaves while the run runs
    remote.release(key)

    run = wait_for_run(run_id, statuses=WAITING)
    plan = node(run, "plan")
    paused = list(Event.objects.filter(run=run, type="node_paused").values_list("data__message", flat=True))
    assert run.status == "failed", (
        f"run {run.status}, node {plan.status} ({plan.wait_reason}) waiting for a raise only its deactivated "
        f"owner could make: {paused}")
    assert plan.status == "failed" and plan.error["error_type"] == "owner_inactive", plan.error
    assert "deactivated" in plan.error["message"] and "raise" in plan.error["message"], plan.error
    assert len(fake_llm.requests) == 1  # the call that did not fit was never made


def test_an_agent_paused_at_its_ceiling_ends_once_its_owner_is_deactivated(engine, api, user, fake_llm, remote):
    """Deactivated after the pause: the pause's backstop (``agents.sweep``) judges it again, and a
    pause only a raise could end goes on to end saying why."""
    pipeline = {"steps": [{"op": "http_request", "url": f"{remote.base}/echo"}]}
    fake_llm.reset([{"tool_calls": [("execute_pipeline", pipeline)]}, TEXT])
    run_id = start(api, [agent(model=PRICEY_MODEL, max_tokens=1000)])
    run = wait_for_run(run_id, statuses=WAITING)
    assert (run.status, node(run, "plan").wait_reason) == ("waiting_for_approval", "budget")

    User.objects.filter(pk=user.pk).update(is_active=False)

    _ended(run_id, within=20)
    run = Run.objects.get(pk=run_id)
    plan = node(run, "plan")
    assert run.status == "failed", f"run {run.status}, node {plan.status} ({plan.wait_reason}) after its owner left"
    assert plan.error["error_type"] == "owner_inactive" and "deactivated" in plan.error["message"], plan.error
    assert len(fake_llm.requests) == 1


def _ended(run_id: str, within: float) -> bool:
    """Whether the run ends within ``within`` seconds (the caller asserts how it stands)."""
    try:
        wait_until(lambda: Run.objects.filter(pk=run_id, status__in=["completed", "failed", "cancelled"]).exists(),
                   timeout=within, what="the run's end")
    except AssertionError:
        return False
    return True
