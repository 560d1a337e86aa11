"""The coordinator's one-statement step (``step_plain``), driven in this process by the calls a
worker makes: the executor task's body, then the coordinator task with the executor's return
value, as Celery's link delivers it. Under the ``db`` fixture nothing commits, so no message
leaves; each test checks the rows the step wrote, and that stale facts fall back to the full
decision with the same outcome."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest
from django.db import connection
from django.utils import timezone
from prometheus_client import REGISTRY

from tests.conftest import stored_run, wait_for_run
from tests.engine.flow import wait_until
from workflows import tasks
from workflows.definition.ir import compile_definition
from workflows.engine import coordinator, execution, planner
from workflows.engine.completion import Completion
from workflows.models import Event, NodeRun, Run
from workflows.services.patches import run_patch_propose
from workflows.services.runs import run_cancel, run_start

pytestmark = pytest.mark.django_db


T = {"expression": "1", "dispatch": "queue"}  # a worker node: pure ones run in the decision


def chain(*ids: str) -> dict[str, Any]:
    return {"nodes": [{"id": i, "type": "transform", "config": {"expression": f"'{i}'", "dispatch": "queue"}} for i in ids],
            "edges": [{"from": a, "to": b} for a, b in zip(ids, ids[1:], strict=False)]}


def node_runs(run: Run) -> dict[str, NodeRun]:
    return {nr.node_id: nr for nr in NodeRun.objects.filter(run=run)}


class Message(list):
    """The executor's return value (the completion as a list), its fields also readable by name."""

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return getattr(Completion.from_message(list(self)), key)
        return super().__getitem__(key)


def execute(run: Run, node_id: str) -> Any:
    result = execution.execute(NodeRun.objects.get(run=run, node_id=node_id).pk)
    return Message(result) if isinstance(result, list) else result


def decisions() -> dict[str, float]:
    """How many decisions took each step so far in this process, from the coordinator's metric."""
    return {step: REGISTRY.get_sample_value("aob_coordinator_decision_seconds_count", {"step": step}) or 0.0
            for step in ("plain", "full")}


def taken_since(before: dict[str, float]) -> dict[str, float]:
    return {step: count - before[step] for step, count in decisions().items()}


def test_a_completed_node_in_a_chain_is_routed_by_the_plain_step(user):
    before = decisions()
    run = run_start(owner=user, definition=chain("a", "b", "c"))
    facts = execute(run, "a")
    assert facts["status"] == "completed" and facts["node_id"] == "a" and facts["run_status"] == "running"
    assert facts["artifact_id"] == run.current_artifact_id and facts["patch_seq"] == 0
    tasks.coordinate(facts, facts["node_run_id"])
    rows = node_runs(run)
    assert taken_since(before) == {"plain": 1, "full": 0}
    assert rows["a"].consumed and rows["a"].taken == ["b"]
    assert rows["b"].status == "queued" and rows["b"].iteration == 0 and rows["b"].node_type == "transform"
    assert rows["b"].queued_at is not None and rows["b"].attempts == 0 and "c" not in rows
    # the same link message again (a redelivery): the node run is consumed, the full decision
    # finds nothing to do, and nothing new is queued
    tasks.coordinate(facts, facts["node_run_id"])
    assert taken_since(before) == {"plain": 1, "full": 1}
    assert NodeRun.objects.filter(run=run).count() == 2


def test_the_last_node_completes_the_run_in_the_same_kind_of_step(user):
    before = decisions()
    run = run_start(owner=user, definition=chain("a", "b"))
    for node_id in ("a", "b"):
        facts = execute(run, node_id)
        tasks.coordinate(facts, facts["node_run_id"])
    run.refresh_from_db()
    assert taken_since(before) == {"plain": 2, "full": 0}
    assert run.status == "completed" and run.finished_at is not None
    assert node_runs(run)["b"].consumed and node_runs(run)["b"].taken == []
    last = Event.objects.filter(run=run).order_by("-seq").first()
    assert last.type == "workflow_completed" and last.seq == run.event_seq
    assert last.data["duration_ms"] == int((run.finished_at - run.started_at).total_seconds() * 1000)


def test_the_end_of_one_branch_while_another_runs_leaves_the_run_running(user):
    definition = {"nodes": [{"id": n, "type": "transform", "config": T} for n in "rab"],
                  "edges": [{"from": "r", "to": "a"}, {"from": "r", "to": "b"}]}
    run = run_start(owner=user, definition=definition)
    step(run, "r")
    before = decisions()
    step(run, "a")  # b is still queued
    run.refresh_from_db()
    assert taken_since(before) == {"plain": 1, "full": 0}
    assert run.status == "running" and node_runs(run)["a"].consumed
    step(run, "b")
    assert Run.objects.get(pk=run.pk).status == "completed"
    assert Event.objects.filter(run=run, type="workflow_completed").count() == 1


def test_the_end_of_a_branch_while_a_person_decides_the_other_is_left_to_the_full_decision(user):
    definition = {"nodes": [{"id": "r", "type": "transform", "config": T}, {"id": "a", "type": "transform", "config": T},
                            {"id": "h", "type": "hitl", "config": {"message": "ok?", "approvers": [user.username]}}],
                  "edges": [{"from": "r", "to": "a"}, {"from": "r", "to": "h"}]}
    run = run_start(owner=user, definition=definition)
    step(run, "r")
    step(run, "h")  # parks: waiting for a decision
    before = decisions()
    step(run, "a")
    run.refresh_from_db()
    assert taken_since(before) == {"plain": 0, "full": 1}
    assert run.status == "waiting_for_approval" and node_runs(run)["a"].consumed


def test_facts_from_before_a_patch_fall_back_to_the_full_decision_on_the_new_graph(user):
    before = decisions()
    run = run_start(owner=user, definition=chain("a", "b"))
    facts = execute(run, "a")
    # a person adds a second successor of ``a`` after it completed, before its coordinator ran
    run_patch_propose(run=run, user=user, operations=[
        {"op": "add", "path": "/nodes/-", "value": {"id": "extra", "type": "transform", "config": T}},
        {"op": "add", "path": "/edges/-", "value": {"from": "a", "to": "extra"}}])
    run.refresh_from_db()
    assert run.patch_seq == 1 and run.current_artifact_id != facts["artifact_id"]
    tasks.coordinate(facts, facts["node_run_id"])
    rows = node_runs(run)
    assert taken_since(before) == {"plain": 0, "full": 1}
    assert rows["a"].consumed and sorted(rows["a"].taken) == ["b", "extra"]
    assert rows["b"].status == rows["extra"].status == "queued"


def test_a_run_cancelled_before_its_coordinator_queues_nothing(user):
    before = decisions()
    run = run_start(owner=user, definition=chain("a", "b"))
    facts = execute(run, "a")
    run_cancel(run=run, user=user)
    tasks.coordinate(facts, facts["node_run_id"])
    assert taken_since(before) == {"plain": 0, "full": 1}
    assert "b" not in node_runs(run)
    assert Run.objects.get(pk=run.pk).status == "cancelled"


def test_a_node_run_already_consumed_is_not_routed_twice(user):
    run = run_start(owner=user, definition=chain("a", "b"))
    facts = execute(run, "a")
    coordinator.coordinate(facts["node_run_id"])  # e.g. the sweeper's message got there first
    first_b = node_runs(run)["b"].pk
    before = decisions()
    tasks.coordinate(facts, facts["node_run_id"])
    assert taken_since(before) == {"plain": 0, "full": 1}
    assert list(NodeRun.objects.filter(run=run, node_id="b").values_list("pk", flat=True)) == [first_b]


def test_a_fan_out_queues_every_branch_in_one_step(user):
    before = decisions()
    definition = {"nodes": [{"id": n, "type": "transform", "config": T} for n in "rxyz"],
                  "edges": [{"from": "r", "to": t} for t in "xyz"]}
    run = run_start(owner=user, definition=definition)
    facts = execute(run, "r")
    tasks.coordinate(facts, facts["node_run_id"])
    rows = node_runs(run)
    assert taken_since(before) == {"plain": 1, "full": 0}
    assert rows["r"].taken == ["x", "y", "z"]
    assert [rows[t].status for t in "xyz"] == ["queued"] * 3


def test_a_successor_row_that_exists_already_sends_the_step_to_the_full_decision(user):
    """The plain plan assumes no successor row yet (a collision was how nested loops once lost a
    pass silently); where one exists the statement writes nothing and the full decision reads."""
    before = decisions()
    run = run_start(owner=user, definition=chain("a", "b"))
    facts = execute(run, "a")
    NodeRun.objects.create(run=run, node_id="b", iteration=0, node_type="transform", status=NodeRun.Status.QUEUED)
    tasks.coordinate(facts, facts["node_run_id"])
    assert taken_since(before) == {"plain": 0, "full": 1}
    assert node_runs(run)["a"].consumed and NodeRun.objects.filter(run=run, node_id="b").count() == 1


def fan_in(*edges: tuple[str, str]) -> dict[str, Any]:
    """``r`` fans out to every parent; ``edges`` join them up."""
    ids = sorted({n for e in edges for n in e})
    return {"nodes": [{"id": n, "type": "transform", "config": T} for n in ["r", *ids]],
            "edges": [*({"from": "r", "to": p} for p in sorted({a for a, _ in edges})),
                      *({"from": a, "to": b} for a, b in edges)]}


def step(run: Run, node_id: str) -> Any:
    """What a worker does for one node run: the executor task, then its linked coordinator task."""
    pk = NodeRun.objects.get(run=run, node_id=node_id).pk
    result = execution.execute(pk)
    tasks.coordinate(result, pk)
    return result


def test_a_join_waits_for_its_other_parent_then_runs_once(user):
    run = run_start(owner=user, definition=fan_in(("a", "j"), ("b", "j")))
    step(run, "r")
    before = decisions()
    step(run, "a")
    rows = node_runs(run)
    assert rows["a"].consumed and rows["a"].taken == ["j"] and "j" not in rows  # b has not finished
    step(run, "b")
    rows = node_runs(run)
    assert taken_since(before) == {"plain": 2, "full": 0}
    assert rows["b"].consumed and rows["j"].status == "queued"
    assert NodeRun.objects.filter(run=run, node_id="j").count() == 1


def test_a_join_step_consumes_finished_parents_whose_only_edge_is_the_join(user):
    run = run_start(owner=user, definition=fan_in(("a", "j"), ("b", "j"), ("c", "j")))
    step(run, "r")
    facts = {node_id: execute(run, node_id) for node_id in "abc"}  # all three finish first
    before = decisions()
    tasks.coordinate(facts["a"], facts["a"]["node_run_id"])
    rows = node_runs(run)
    assert all(rows[p].consumed and rows[p].taken == ["j"] for p in "abc")
    assert rows["j"].status == "queued"
    for p in "bc":  # their own messages arrive later and find nothing to do, in the same step
        tasks.coordinate(facts[p], facts[p]["node_run_id"])
    assert taken_since(before) == {"plain": 3, "full": 0}
    assert NodeRun.objects.filter(run=run, node_id="j").count() == 1


def test_a_parent_with_another_edge_is_left_to_its_own_decision(user):
    definition = fan_in(("a", "j"), ("b", "j"), ("b", "k"))
    run = run_start(owner=user, definition=definition)
    step(run, "r")
    fa, fb = execute(run, "a"), execute(run, "b")
    tasks.coordinate(fa, fa["node_run_id"])
    rows = node_runs(run)
    assert not rows["b"].consumed and "j" not in rows  # b also routes to k: not absorbed
    tasks.coordinate(fb, fb["node_run_id"])
    rows = node_runs(run)
    assert rows["b"].taken == ["j", "k"] and rows["j"].status == rows["k"].status == "queued"


@pytest.mark.parametrize(("definition", "node_id", "plain"), [
    (chain("a", "b"), "a", ["b"]),
    (chain("a", "b"), "b", []),  # the end of a branch: END_STEP
    ({"nodes": [{"id": n, "type": "transform", "config": T} for n in "abj"],
      "edges": [{"from": "a", "to": "j"}, {"from": "b", "to": "j"}]}, "a", ["j"]),  # a join: waits in SQL
    ({"nodes": [{"id": n, "type": "transform", "config": T} for n in "ab"],
      "edges": [{"from": "a", "to": "b", "condition": "output.x == 1"}]}, "a", None),  # a branch rule
    ({"nodes": [{"id": "a", "type": "transform", "config": T},
                {"id": "c", "type": "conditional", "config": {}}, {"id": "d", "type": "transform", "config": T}],
      "edges": [{"from": "a", "to": "c"}, {"from": "c", "to": "d"}]}, "a", None),  # evaluated inline
    ({"nodes": [{"id": "a", "type": "transform", "config": T}, {"id": "m", "type": "no_such_type", "config": {}}],
      "edges": [{"from": "a", "to": "m"}]}, "a", None),  # no executor: skipped with a warning
])
def test_which_steps_are_plain(definition, node_id, plain):
    step = planner.plain_step(compile_definition(definition), node_id)
    assert (None if step is None else [s.node_id for s in step.successors]) == plain
    if step is not None:
        assert step.ends == (plain == [])


def test_a_join_successor_knows_its_other_parents_and_which_can_be_absorbed():
    ir = compile_definition(fan_in(("a", "j"), ("b", "j"), ("c", "j"), ("c", "k")))
    step = planner.plain_step(ir, "a")
    assert step is not None and step.taken == ("j",)
    assert step.successors == (planner.Successor("j", "transform", others=("b", "c"), absorbable=("b",)),)
    assert step.absorbed == (("b", ("j",)),)  # what the plan routes b to, when b is consumed here


def test_no_join_step_where_the_graph_has_a_loop():
    definition = fan_in(("a", "j"), ("b", "j"))
    definition["nodes"].append({"id": "again", "type": "loop", "config": {"max_iterations": 2, "loop_back_to": "r"}})
    definition["edges"].append({"from": "j", "to": "again"})
    ir = compile_definition(definition)
    assert ir.loops and planner.plain_step(ir, "a") is None



def finished_parents(user: Any) -> tuple[Run, dict[str, Any]]:
    """A committed run of ``fan_in`` into ``j`` whose root was consumed and whose parents ``abc``
    all completed, written as rows: nothing is published, so no worker of the test session takes
    them; with each parent's completion as its executor would have returned it."""
    run = stored_run(user, fan_in(("a", "j"), ("b", "j"), ("c", "j")))
    now = timezone.now()
    Run.objects.filter(pk=run.pk).update(status=Run.Status.RUNNING, started_at=now)
    NodeRun.objects.create(run=run, node_id="r", iteration=0, node_type="transform", status=NodeRun.Status.COMPLETED,
                           consumed=True, taken=["a", "b", "c"], finished_at=now)
    facts = {}
    for p in "abc":
        nr = NodeRun.objects.create(run=run, node_id=p, iteration=0, node_type="transform",
                                    status=NodeRun.Status.COMPLETED, finished_at=now)
        facts[p] = Message(Completion(node_run_id=nr.pk, run_id=str(run.pk), node_id=p, node_type="transform",
                                      iteration=0, run_status=Run.Status.RUNNING,
                                      artifact_id=run.current_artifact_id, patch_seq=0).as_message())
    return run, facts


def run_lock_held_elsewhere(run: Run) -> psycopg.Connection:
    """Another session holding the run lock, as a sibling's decision does (close it to release)."""
    other = psycopg.connect(**connection.get_connection_params(), autocommit=False)
    other.execute("SELECT id FROM workflows_run WHERE id = %s FOR UPDATE", [run.pk])
    return other


@pytest.mark.django_db(transaction=True)
def test_an_absorbed_parents_message_does_not_wait_for_the_run_lock(engine, user):
    run, facts = finished_parents(user)
    tasks.coordinate(facts["a"], facts["a"]["node_run_id"])  # absorbs b and c, queues j
    other = run_lock_held_elsewhere(run)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '2s'")  # a wait for the lock would fail the message
        before = decisions()
        tasks.coordinate(facts["b"], facts["b"]["node_run_id"])
        assert taken_since(before) == {"plain": 1, "full": 0}
    finally:
        other.close()
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = 0")
    assert NodeRun.objects.filter(run=run, node_id="j").count() == 1
    assert_j_ran_to_the_end(run)


@pytest.mark.django_db(transaction=True)
def test_a_parent_absorbed_while_its_step_waits_for_the_lock_is_not_consumed_twice(engine, user):
    """Its node run was unconsumed when the step asked for the lock; the sibling's decision that
    held it consumed the node run meanwhile: the step, once locked, finds nothing to do."""
    run, facts = finished_parents(user)
    other = run_lock_held_elsewhere(run)
    before = decisions()
    waiting = threading.Thread(target=lambda: (tasks.coordinate(facts["b"], facts["b"]["node_run_id"]),
                                               connection.close()))
    try:
        waiting.start()
        wait_until(lambda: blocked_on_a_lock(other), 10, "b's step waiting for the run lock")
        other.execute("UPDATE workflows_noderun SET consumed = true, taken = '[\"j\"]' WHERE id = %s",
                      [facts["b"]["node_run_id"]])
        other.commit()
    finally:
        other.close()
        waiting.join(10)
    assert not waiting.is_alive()
    assert taken_since(before) == {"plain": 1, "full": 0}
    rows = node_runs(run)
    assert rows["b"].consumed and not rows["a"].consumed and "j" not in rows  # nothing written by b's step
    tasks.coordinate(facts["a"], facts["a"]["node_run_id"])  # absorbs c, queues j
    assert NodeRun.objects.filter(run=run, node_id="j").count() == 1
    assert_j_ran_to_the_end(run)


def assert_j_ran_to_the_end(run: Run) -> None:
    """``j`` was published after commit (these tests commit): a worker runs it and the run ends.
    Waiting for that also keeps the worker's statements out of the next test's flush."""
    assert wait_for_run(run.pk).status == Run.Status.COMPLETED


def blocked_on_a_lock(other: psycopg.Connection) -> bool:
    """Whether some session waits for a lock ``other`` holds (asked from a session of its own: a
    transaction sees the activity statistics as they were at its first look)."""
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as observer:
        row = observer.execute("SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                               [other.info.backend_pid]).fetchone()
    return bool(row and row[0])


# --- the run's output cap: a plain step agrees with the full decision ---------------------------------

SMALL = {"expression": "'s'", "dispatch": "queue"}
BIG = {"template": "x" * 2000, "dispatch": "queue"}  # alone past the 500-byte cap below


def capped(shape: str) -> dict[str, Any]:
    """``r`` fans out to ``a`` and a big ``b``; after ``a``: a chain into ``a2``, the end of a
    branch, or a join ``j`` with ``c`` (consumed before)."""
    nodes = {"r": SMALL, "a": SMALL, "b": BIG}
    edges = [("r", "a"), ("r", "b")]
    if shape == "chain":
        nodes["a2"] = SMALL
        edges.append(("a", "a2"))
    elif shape == "join":
        nodes.update(c=SMALL, j=SMALL)
        edges += [("r", "c"), ("a", "j"), ("c", "j")]
    return {"nodes": [{"id": i, "type": "transform", "config": c} for i, c in nodes.items()],
            "edges": [{"from": a, "to": b} for a, b in edges]}


@pytest.mark.parametrize("plain", [True, False], ids=["plain", "full"])
@pytest.mark.parametrize("shape", ["chain", "end", "join"])
def test_a_step_after_a_sibling_passed_the_output_cap_fails_the_run(user, settings, shape, plain):
    """``a`` completes under the cap, then ``b`` passes it, then ``a``'s message arrives: the full
    decision reads the run's usage and fails the run; a plain step, planned before ``b``, must not
    queue ``a``'s successor (or end the run) on the stale count its completion carried."""
    settings.AOB_MAX_RUN_OUTPUT_BYTES = 500
    settings.AOB_PLAIN_STEPS = plain
    run = run_start(owner=user, definition=capped(shape))
    step(run, "r")
    if shape == "join":
        step(run, "c")
    before = decisions()
    small, big = execute(run, "a"), execute(run, "b")
    assert small["output_bytes"] <= 500 < big["output_bytes"]

    tasks.coordinate(small, small["node_run_id"])

    run.refresh_from_db()
    assert run.status == "failed" and run.error["limit"] == "output_bytes", run.error
    assert set(node_runs(run)) == {n["id"] for n in capped(shape)["nodes"]} - {"a2", "j"}
    assert taken_since(before)["full"] == 1  # the statement wrote nothing; the full decision failed the run
