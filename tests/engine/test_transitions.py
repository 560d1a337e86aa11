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


def _sql_status_writes() -> list[tuple[str, str, str, list[str]]]:
    """Every status an SQL ``UPDATE`` of the engine writes as a literal (``SET status = 'x'``, or a
    ``CASE WHEN … status IN (…) THEN 'x'``), with the statuses its guard admits: ``(file, table, to,
    sources)``. A guard is the statement's own ``WHERE`` on the updated row's status, the ``CASE``'s,
    or, for a run that only a consumed step finishes, ``steps.RUN_AS_PLANNED`` (the run as the step
    was planned for)."""
    from workflows.engine.steps import RUN_AS_PLANNED

    statement = re.compile(r"UPDATE (workflows_noderun|workflows_run)\b(?:\s+(?!SET\b)(\w+))?\s+SET\b(.*?)"
                           r"(?=RETURNING\b|\"\"\"|\n\)|$)", re.S)
    guard = re.compile(r"(?:(\w+)\.)?status (?:= '(\w+)'|IN \(([^)]*)\))")
    found = []
    for path in sorted((ROOT / "workflows" / "engine").rglob("*.py")):
        text = path.read_text()
        for match in statement.finditer(text):
            table, alias, body = match.groups()
            assigned, _, where = body.partition("WHERE")
            if "{run_as_planned}" in text and table == "workflows_run":
                where += " AND " + RUN_AS_PLANNED
            sources = [s for a, one, many in guard.findall(where) if a in ("", alias)
                       for s in ([one] if one else re.findall(r"'(\w+)'", many))]
            for to in re.findall(r"(?<![\w.])status = '(\w+)'", assigned):
                found.append((path.name, table, to, sources))
            for cased, to in re.findall(r"CASE WHEN (?:\w+\.)?status IN \(([^)]*)\) THEN '(\w+)'", assigned):
                found.append((path.name, table, to, re.findall(r"'(\w+)'", cased)))
    return found


def test_every_status_the_engines_sql_writes_is_a_move_of_the_table():
    """The hot path's compare-and-sets are SQL with their statuses written out (``execution.CLAIM``,
    ``COMPLETE``, the plain steps): each move they make is one the table lists, from every status
    their guard admits, and a write with no guard is none of them. A change to the table that the
    SQL does not follow fails here."""
    writes = _sql_status_writes()
    assert {(file, to) for file, _, to, _ in writes} >= {("execution.py", "running"), ("execution.py", "completed"),
                                                          ("steps.py", "completed")}  # the scan reads them
    for file, table, to, sources in writes:
        moves = transitions.RUN_MOVES if table == "workflows_run" else transitions.NODE_RUN_MOVES
        assert sources, f"{file}: {table} set to {to!r} from any status"
        assert all(to in moves[source] for source in sources), (file, table, sources, to)
