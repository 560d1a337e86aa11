"""One table of status moves and one compare-and-set (``workflows/engine/transitions.py``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.db.models import Q

from tests.conftest import stored_run
from workflows.engine import transitions
from workflows.models import Event, NodeRun, Run

ROOT = Path(__file__).resolve().parents[2]


def test_the_tables_cover_every_status_and_finished_runs_never_move():
    assert set(transitions.NODE_RUN_MOVES) == set(NodeRun.Status.values)
    assert set(transitions.RUN_MOVES) == set(Run.Status.values)
    assert all(not transitions.RUN_MOVES[s] for s in Run.FINISHED)
    for status in (NodeRun.Status.FAILED, NodeRun.Status.SKIPPED, NodeRun.Status.CANCELLED):
        assert not transitions.NODE_RUN_MOVES[status]
    assert transitions.sql_from(NodeRun.Status.RUNNING) == "'queued'"


@pytest.mark.django_db
def test_a_move_is_a_compare_and_set_that_appends_its_event(user):
    run = stored_run(user)
    nr = NodeRun.objects.create(run=run, node_id="a", node_type="transform", status=NodeRun.Status.QUEUED)
    assert transitions.move_node_run(nr.pk, NodeRun.Status.RUNNING, run_id=run.pk, owner_id=user.pk,
                                     event=(Event.Type.NODE_STARTED, "a", {"attempt": 1}), attempts=1)
    # the same move again finds nothing in a status it may leave: nothing moves, no event
    assert not transitions.move_node_run(nr.pk, NodeRun.Status.RUNNING, run_id=run.pk, owner_id=user.pk,
                                         event=(Event.Type.NODE_STARTED, "a", {"attempt": 2}))
    assert [(e.type, e.data) for e in Event.objects.filter(run=run)] == [("node_started", {"attempt": 1})]
    nr.refresh_from_db()
    assert nr.status == NodeRun.Status.RUNNING and nr.attempts == 1
    # a guard narrows it further: only this attempt
    assert not transitions.move_node_run(nr.pk, NodeRun.Status.COMPLETED, guard={"attempts": 2})
    assert transitions.move_node_run(nr.pk, NodeRun.Status.COMPLETED, guard={"attempts": 1})


@pytest.mark.django_db
def test_a_move_the_table_does_not_list_is_refused_before_any_write(user):
    run = stored_run(user)
    nr = NodeRun.objects.create(run=run, node_id="a", node_type="transform", status=NodeRun.Status.COMPLETED)
    with pytest.raises(transitions.IllegalMove):
        transitions.move_node_run(nr.pk, NodeRun.Status.RUNNING, sources=[NodeRun.Status.COMPLETED])
    with pytest.raises(transitions.IllegalMove):
        transitions.move_run(run.pk, Run.Status.RUNNING, sources=[Run.Status.COMPLETED])
    assert NodeRun.objects.get(pk=nr.pk).status == NodeRun.Status.COMPLETED
    # cancelling a run's active node runs leaves finished ones alone
    NodeRun.objects.create(run=run, node_id="b", node_type="transform", status=NodeRun.Status.RUNNING)
    assert transitions.cancel_active(run.pk, nr.queued_at) == ["b"]
    assert transitions.move_node_runs(Q(run_id=run.pk), NodeRun.Status.CANCELLED) == 0
    assert dict(NodeRun.objects.filter(run=run).values_list("node_id", "status")) == {
        "a": "completed", "b": "cancelled"}


def test_event_types_are_named_through_the_enum_in_the_engine_and_its_services():
    """No event type as a string literal in workflows/ (the model's enum and migrations aside)."""
    literal = re.compile("[\"'](" + "|".join(Event.Type.values) + ")[\"']")
    offenders = []
    for path in (ROOT / "workflows").rglob("*.py"):
        if "migrations" in path.parts or path.name == "event.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if literal.search(line) and "code" not in line:  # an error code may share a name
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []
