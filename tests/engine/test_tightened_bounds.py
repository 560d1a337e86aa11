"""An operator may lower a CEL bound (``AOB_CEL_MAX_MACROS``, ``AOB_CEL_MAX_SOURCE_BYTES``,
``AOB_CEL_MAX_COMPREHENSION_DEPTH``) while runs are in flight: the versions those runs execute were
judged at their save, under the bound as it was. Such a run goes on, a condition the new bound
refuses counted false with a ``condition_error`` as any failing condition is; its nodes are
claimed, run and recovered as any other's, and above all the sweeper, which recovers every owner's
lost work, is not stopped by it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone

from tests.conftest import stored_run
from workflows.definition.validation import validate
from workflows.engine import coordinator, execution, sweeper
from workflows.engine.completion import Completion
from workflows.models import Event, NodeRun

# Two comprehension macros: within the default bound (8) at save, past a bound lowered to one.
TWO_MACROS = "[1].all(x, x > 0) && [2].exists(y, y > 0)"


def _judged_at_save(definition: dict[str, Any]) -> dict[str, Any]:
    assert validate(definition).valid, "the version was saved under the bounds as they were"
    return definition


def _two_steps() -> dict[str, Any]:
    return _judged_at_save({
        "nodes": [{"id": "a", "type": "transform", "config": {"expression": "1", "dispatch": "queue"}},
                  {"id": "b", "type": "transform", "config": {"expression": "2", "dispatch": "queue"}}],
        "edges": [{"from": "a", "to": "b", "condition": TWO_MACROS}]})


def _lost(run: Any, node_id: str = "a") -> NodeRun:
    """A node run whose worker died: running, its lease lapsed."""
    return NodeRun.objects.create(run=run, node_id=node_id, node_type="transform", status="running", attempts=1,
                                  queued_at=timezone.now(), started_at=timezone.now(),
                                  lease_expires_at=timezone.now() - timedelta(seconds=30))


def test_a_sweep_recovers_every_owners_lost_work_past_a_run_whose_condition_a_lowered_bound_refuses(
        transactional_db, make_user, settings):
    bob_run, alice_run = stored_run(make_user("bob"), _two_steps()), stored_run(make_user("alice"))
    settings.AOB_CEL_MAX_MACROS = 1  # lowered, and the processes restarted, while bob's run was in flight
    bobs, alices = _lost(bob_run), _lost(alice_run)

    sweeper.sweep()  # raised before: the sweep stopped at bob's run, every sweep, for everyone

    # queued again (a worker of a stack an earlier test started may have taken them since): none is
    # left as the dead worker left it, running on a lapsed lease
    lapsed = NodeRun.objects.filter(pk__in=[bobs.pk, alices.pk], status="running",
                                    lease_expires_at__lte=bobs.lease_expires_at)
    assert not lapsed.exists(), list(lapsed.values("pk", "status", "lease_expires_at"))


def test_a_node_of_a_run_whose_condition_a_lowered_bound_refuses_runs_and_is_not_left_running(
        transactional_db, make_user, settings):
    run = stored_run(make_user("bob"), _two_steps())
    settings.AOB_CEL_MAX_MACROS = 1
    nr = NodeRun.objects.create(run=run, node_id="a", node_type="transform", status="queued",
                                queued_at=timezone.now(), dispatched_at=timezone.now())

    try:
        completion = execution.execute(nr.pk)
    finally:  # raised before, after its claim committed: running with no worker, until its lease lapsed
        nr.refresh_from_db()
    assert nr.status == "completed" and nr.output == 1, (nr.status, nr.error)

    coordinator.coordinate(nr.pk, Completion.from_message(completion))

    run.refresh_from_db()
    assert run.status == "completed", (run.status, run.error)  # b's rule counted false: b skipped
    [refused] = Event.objects.filter(run=run, type="condition_error").values_list("data", flat=True)
    assert refused["rule"] == "max_macros" and "at most 1" in refused["error"], refused
    assert NodeRun.objects.get(run=run, node_id="b").status == "skipped"
