"""``aob_project.inserts.insert_together``: the rows of several models in one statement are the
rows ``bulk_create`` writes, each instance gets its own generated key, and the statement is atomic."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from aob_project.inserts import insert_together
from workflows.models import Artifact, Event, NodeRun, Run
from workflows.services.artifacts import artifact_store

IGNORED = {"id", "run_id", "created_at", "queued_at"}  # keys and clock readings differ by construction


def new_rows(owner: Any, artifact: Artifact, width: int) -> tuple[Run, list[NodeRun], list[Event]]:
    run = Run(owner=owner, base_artifact=artifact, current_artifact=artifact, inputs={"n": 1}, tag="t",
              event_seq=width)
    nodes = [NodeRun(run=run, node_id=f"n{i:02d}", node_type=("transform", "http")[i % 2], input={"i": i},
                     attempt_log=[{"status": "queued"}] if i % 3 == 0 else [])
             for i in range(width)]
    events = [Event(run=run, seq=i + 1, type=Event.Type.NODE_STARTED, node_id=f"n{i:02d}", data={"i": i})
              for i in range(width)]
    return run, nodes, events


def stored(run: Run) -> dict[str, Any]:
    def plain(rows: Any) -> list[dict[str, Any]]:
        return [{k: v for k, v in row.items() if k not in IGNORED} for row in rows]

    return {"run": plain(Run.objects.filter(pk=run.pk).values()),
            "nodes": plain(NodeRun.objects.filter(run=run).order_by("node_id").values()),
            "events": plain(Event.objects.filter(run=run).order_by("seq").values())}


@pytest.fixture
def artifact(db: Any) -> Artifact:
    return artifact_store(kind=Artifact.Kind.DAG_VERSION, content={"nodes": [], "edges": []})


def test_one_statement_writes_the_rows_bulk_create_writes(user: Any, artifact: Artifact) -> None:
    run, nodes, events = new_rows(user, artifact, 12)
    with CaptureQueriesContext(connection) as statements:
        insert_together([run], nodes, events)

    reference, ref_nodes, ref_events = new_rows(user, artifact, 12)
    reference.save(force_insert=True)
    NodeRun.objects.bulk_create(ref_nodes)
    Event.objects.bulk_create(ref_events)

    assert len(statements.captured_queries) == 1
    ours, theirs = stored(run), stored(reference)
    assert ours == theirs
    assert Run.objects.get(pk=run.pk).created_at == run.created_at  # auto_now_add set on the instance too


def test_each_instance_gets_the_key_of_its_own_row(user: Any, artifact: Artifact) -> None:
    run, nodes, events = new_rows(user, artifact, 40)
    insert_together([run], nodes, events)

    assert all(not obj._state.adding for obj in [run, *nodes, *events])
    rows = dict(NodeRun.objects.filter(run=run).values_list("pk", "node_id"))
    assert {nr.pk: nr.node_id for nr in nodes} == rows
    seqs = dict(Event.objects.filter(run=run).values_list("pk", "seq"))
    assert {e.pk: e.seq for e in events} == seqs


def test_a_group_that_fails_leaves_no_row_of_any_group(user: Any, artifact: Artifact) -> None:
    run, nodes, events = new_rows(user, artifact, 3)
    events[2].seq = events[0].seq  # (run, seq) is unique: the last group's insert fails

    with pytest.raises(IntegrityError), transaction.atomic():
        insert_together([run], nodes, events)

    assert not Run.objects.filter(pk=run.pk).exists()
    assert not NodeRun.objects.filter(run_id=run.pk).exists()


def test_a_group_mixing_given_and_generated_keys_is_refused(user: Any, artifact: Artifact) -> None:
    run, nodes, _ = new_rows(user, artifact, 2)
    nodes[0].pk = 10**9
    with CaptureQueriesContext(connection) as statements, pytest.raises(ValueError, match="all set or all generated"):
        insert_together([run], nodes)
    assert statements.captured_queries == []


def test_no_rows_no_statement(db: Any) -> None:
    with CaptureQueriesContext(connection) as statements:
        insert_together([], [])
    assert statements.captured_queries == []


def test_given_keys_are_kept(user: Any, artifact: Artifact) -> None:
    run, _, _ = new_rows(user, artifact, 0)
    run.pk = uuid.UUID(int=42)
    insert_together([run])
    assert Run.objects.filter(pk=uuid.UUID(int=42), tag="t").exists()


def test_node_runs_inserted_together_send_each_json_value_as_its_own_parameter(user: Any, artifact: Artifact) -> None:
    """Django 5.2 inserts many rows through ``UNNEST`` of an array per column, which psycopg writes
    as an array literal, escaping each quote of each value in Python: twenty node runs of one 15 MB
    output took a decision 30 s (a red team's find). A node run's ``input`` and ``output`` go as a
    parameter each (``ValuesJSONField``), as one row's do; the rows are the same."""
    run, nodes, _ = new_rows(user, artifact, 3)
    run.save()
    for node in nodes:
        node.output = {"q": 'a "quoted" value'}
    with CaptureQueriesContext(connection) as queries:
        NodeRun.objects.bulk_create(nodes)
    (insert,) = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("INSERT")]
    assert "UNNEST" not in insert.upper()
    assert [n.output for n in NodeRun.objects.filter(run=run).order_by("node_id")] == [{"q": 'a "quoted" value'}] * 3
