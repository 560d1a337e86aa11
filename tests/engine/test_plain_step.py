"""The coordinator's one-statement step (``step_plain``), on the session's worker processes.

Each run goes through the real stack: executors and coordinator tasks on the workers, their
messages through the broker. To act between a node's completion and its decision (a patch, a
cancel, a successor row written by hand, the sweeper's message getting there first, a sibling's
decision holding the run lock), a test holds that decision, or a node's execution, with the
stall points of ``tests.support.fault_points`` (``decision``, ``execution``), waits for a state
of the rows (never a sleep), acts, and releases. Which step decided a node run, plain or
full, is read from the worker's log (the coordinator's ``coordinator.decided`` line, which the
test hooks turn on). The sweeper is paused meanwhile, so that no message of its own comes
between. The planning of plain steps, which needs no worker, is checked in this process."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import redis
from django.conf import settings
from django.db import connection

from aob_project.exceptions import Conflict
from tests.conftest import wait_for_run
from tests.engine.victim import control
from tests.support import stack
from workflows import tasks
from workflows.definition.ir import compile_definition
from workflows.engine import dispatch, planner
from workflows.engine.completion import Completion
from workflows.models import Event, NodeRun, Run
from workflows.registry import COORDINATOR_QUEUE
from workflows.services.patches import run_patch_propose
from workflows.services.runs import run_cancel, run_start

T = {"expression": "1", "dispatch": "queue"}  # a worker node: pure ones run in the decision
LIVE = [Run.Status.QUEUED, Run.Status.RUNNING, Run.Status.WAITING_FOR_APPROVAL]


def chain(*ids: str) -> dict[str, Any]:
    return {"nodes": [{"id": i, "type": "transform", "config": {"expression": f"'{i}'", "dispatch": "queue"}} for i in ids],
            "edges": [{"from": a, "to": b} for a, b in zip(ids, ids[1:], strict=False)]}


def fan_in(*edges: tuple[str, str]) -> dict[str, Any]:
    """``r`` fans out to every parent; ``edges`` join them up."""
    ids = sorted({n for e in edges for n in e})
    return {"nodes": [{"id": n, "type": "transform", "config": T} for n in ["r", *ids]],
            "edges": [*({"from": "r", "to": p} for p in sorted({a for a, _ in edges})),
                      *({"from": a, "to": b} for a, b in edges)]}


def node_runs(run: Run) -> dict[str, NodeRun]:
    return {nr.node_id: nr for nr in NodeRun.objects.filter(run=run)}


def until(predicate: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    """Poll ``predicate`` until it holds (a hop takes milliseconds; the timeout is for failures)."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached after {timeout}s")
        time.sleep(0.01)
    return value


def finished_undecided(run: Run, *node_ids: str) -> None:
    """Wait until each node's run has completed and its decision has not consumed it yet."""
    until(lambda: NodeRun.objects.filter(run=run, node_id__in=node_ids, status=NodeRun.Status.COMPLETED,
                                         consumed=False).count() == len(node_ids), f"{node_ids} completed, undecided")


def consumed(run: Run, node_id: str) -> NodeRun:
    try:
        return until(lambda: NodeRun.objects.filter(run=run, node_id=node_id, consumed=True).first(),
                     f"{node_id} consumed")
    except AssertionError as missed:  # say where each node run stood: queued, held, or undecided
        rows = NodeRun.objects.filter(run=run).values_list("node_id", "status", "consumed")
        raise AssertionError(f"{missed}; the run's node runs: {sorted(rows)}") from None


class Stack:
    """The session's workers as these tests drive them: the first decision about a node, or its
    first execution, held until released (the stall points ``decision`` and ``execution`` of
    ``tests.support.fault_points``), and which step decided each node run, from the workers' logs
    (written since the test began)."""

    def __init__(self, procs: list[stack.Proc]) -> None:
        self.redis = redis.Redis.from_url(settings.REDIS_URL)
        self.logs = {proc.log: proc.log.stat().st_size for proc in procs}
        self.held: set[tuple[str, str]] = set()
        self.redis.set("aob:test:sweeper_paused", 1)

    def hold(self, point: str, *node_ids: str) -> None:
        for node_id in node_ids:
            self.redis.set(f"aob:test:stall:{point}:{node_id}", 1)
            self.held.add((point, node_id))

    def release(self, point: str, *node_ids: str) -> None:
        for node_id in node_ids:
            self.redis.set(f"aob:test:stall_release:{point}:{node_id}", 1)

    def hold_decision(self, *node_ids: str) -> None:
        self.hold("decision", *node_ids)

    def release_decision(self, *node_ids: str) -> None:
        self.release("decision", *node_ids)

    def hold_execution(self, *node_ids: str) -> None:
        self.hold("execution", *node_ids)

    def release_execution(self, *node_ids: str) -> None:
        self.release("execution", *node_ids)

    def stalled(self, point: str, node_id: str) -> None:
        """Wait until a process holds at ``point`` for ``node_id``."""
        until(lambda: self.redis.exists(f"aob:test:stalled:{point}:{node_id}"), f"{point} of {node_id} held")

    def steps(self, node_run: NodeRun) -> list[str]:
        """The step (``plain`` or ``full``) of each decision about ``node_run`` so far."""
        found = []
        for log, offset in self.logs.items():
            with log.open("rb") as fh:
                fh.seek(offset)
                lines = fh.read().decode(errors="replace").split("\n")[:-1]  # the last may be half written
            found += [entry["step"] for entry in map(json.loads, (line for line in lines if '"coordinator.decided"' in line))
                      if entry.get("node_run_id") == node_run.pk]
        return found

    def decided(self, run: Run, node_id: str, count: int = 1) -> list[str]:
        """The steps of the decisions about ``node_id``'s run, once there are ``count``."""
        node_run = NodeRun.objects.get(run=run, node_id=node_id)
        return until(lambda: (steps := self.steps(node_run)) and len(steps) >= count and steps,
                     f"{count} decision(s) about {node_id}")

    def close(self) -> None:
        for point, node_id in self.held:  # a test that failed midway
            self.release(point, node_id)
            self.redis.delete(f"aob:test:stall:{point}:{node_id}")
        for run in Run.objects.filter(status__in=LIVE):
            with contextlib.suppress(Conflict):  # it ended meanwhile
                run_cancel(run=run, user=run.owner)
        self.redis.delete("aob:test:sweeper_paused")


@pytest.fixture
def workers_(engine: dict[str, stack.Proc]) -> Iterator[Stack]:
    driven = Stack([engine["worker"]])
    yield driven
    driven.close()


def completed(run: Run) -> Run:
    run = wait_for_run(run.pk)
    assert run.status == Run.Status.COMPLETED, run.error
    return run


def test_a_completed_node_in_a_chain_is_routed_by_the_plain_step(workers_, user):
    workers_.hold_execution("b")  # b stays as the step wrote it
    run = run_start(owner=user, definition=chain("a", "b", "c"))
    a = consumed(run, "a")
    assert workers_.decided(run, "a") == ["plain"]
    rows = node_runs(run)
    assert a.taken == ["b"] and "c" not in rows
    assert rows["b"].status == "queued" and rows["b"].iteration == 0 and rows["b"].node_type == "transform"
    assert rows["b"].queued_at is not None and rows["b"].attempts == 0
    # the same link message again (a redelivery): the node run is consumed, the full decision
    # finds nothing to do, and nothing new is queued
    run.refresh_from_db()
    again = Completion(node_run_id=a.pk, run_id=str(run.pk), node_id="a", node_type="transform", iteration=0,
                       run_status=Run.Status.RUNNING, artifact_id=run.current_artifact_id, patch_seq=0,
                       output_bytes=(run.usage or {}).get("output_bytes", 0))
    tasks.coordinate.delay(again.as_message(), a.pk)
    assert workers_.decided(run, "a", count=2) == ["plain", "full"]
    assert NodeRun.objects.filter(run=run).count() == 2
    workers_.release_execution("b")
    completed(run)


def test_the_last_node_completes_the_run_in_the_same_kind_of_step(workers_, user):
    run = completed(run_start(owner=user, definition=chain("a", "b")))
    assert workers_.decided(run, "a") == ["plain"] and workers_.decided(run, "b") == ["plain"]
    assert run.finished_at is not None
    assert node_runs(run)["b"].consumed and node_runs(run)["b"].taken == []
    last = Event.objects.filter(run=run).order_by("-seq").first()
    assert last.type == "workflow_completed" and last.seq == run.event_seq
    assert last.data["duration_ms"] == int((run.finished_at - run.started_at).total_seconds() * 1000)


def test_the_end_of_one_branch_while_another_runs_leaves_the_run_running(workers_, user):
    definition = {"nodes": [{"id": n, "type": "transform", "config": T} for n in "rab"],
                  "edges": [{"from": "r", "to": "a"}, {"from": "r", "to": "b"}]}
    workers_.hold_execution("b")
    run = run_start(owner=user, definition=definition)
    consumed(run, "a")
    assert workers_.decided(run, "a") == ["plain"]
    run.refresh_from_db()
    assert run.status == "running" and node_runs(run)["b"].status == "queued"
    workers_.release_execution("b")
    completed(run)
    assert Event.objects.filter(run=run, type="workflow_completed").count() == 1


def test_the_end_of_a_branch_while_a_person_decides_the_other_is_left_to_the_full_decision(workers_, user):
    definition = {"nodes": [{"id": "r", "type": "transform", "config": T}, {"id": "a", "type": "transform", "config": T},
                            {"id": "h", "type": "hitl", "config": {"message": "ok?", "approvers": [user.username]}}],
                  "edges": [{"from": "r", "to": "a"}, {"from": "r", "to": "h"}]}
    workers_.hold_decision("a")
    run = run_start(owner=user, definition=definition)
    finished_undecided(run, "a")
    until(lambda: node_runs(run)["h"].status == "waiting", "h parked: waiting for a decision")
    workers_.decided(run, "h")  # the decision after the park (a word, not a completion: not held)
    workers_.release_decision("a")
    assert workers_.decided(run, "a") == ["full"]
    run.refresh_from_db()
    assert run.status == "waiting_for_approval" and node_runs(run)["a"].consumed
    run_cancel(run=run, user=user)


def test_facts_from_before_a_patch_fall_back_to_the_full_decision_on_the_new_graph(workers_, user):
    workers_.hold_decision("a")
    run = run_start(owner=user, definition=chain("a", "b"))
    finished_undecided(run, "a")
    # a person adds a second successor of ``a`` after it completed, before its coordinator ran
    run_patch_propose(run=run, user=user, operations=[
        {"op": "add", "path": "/nodes/-", "value": {"id": "extra", "type": "transform", "config": T}},
        {"op": "add", "path": "/edges/-", "value": {"from": "a", "to": "extra"}}])
    run.refresh_from_db()
    assert run.patch_seq == 1 and run.current_artifact_id != run.base_artifact_id
    workers_.release_decision("a")
    assert workers_.decided(run, "a") == ["full"]
    rows = node_runs(completed(run))
    assert rows["a"].consumed and sorted(rows["a"].taken) == ["b", "extra"]
    assert rows["b"].status == rows["extra"].status == "completed"


def test_a_run_cancelled_before_its_coordinator_queues_nothing(workers_, user):
    workers_.hold_decision("a")
    run = run_start(owner=user, definition=chain("a", "b"))
    finished_undecided(run, "a")
    run_cancel(run=run, user=user)
    workers_.release_decision("a")
    assert workers_.decided(run, "a") == ["full"]
    assert "b" not in node_runs(run)
    assert Run.objects.get(pk=run.pk).status == "cancelled"


def test_a_node_run_already_consumed_is_not_routed_twice(workers_, user):
    workers_.hold_decision("a")
    run = run_start(owner=user, definition=chain("a", "b"))
    workers_.stalled("decision", "a")  # the executor's link message
    dispatch.coordinate_now(node_runs(run)["a"].pk)  # the sweeper's message, not held, gets there first
    assert workers_.decided(run, "a") == ["full"]
    first_b = node_runs(run)["b"].pk
    workers_.release_decision("a")  # then the executor's link message
    assert workers_.decided(run, "a", count=2) == ["full", "full"]
    completed(run)
    assert list(NodeRun.objects.filter(run=run, node_id="b").values_list("pk", flat=True)) == [first_b]


def test_a_fan_out_queues_every_branch_in_one_step(workers_, user):
    definition = {"nodes": [{"id": n, "type": "transform", "config": T} for n in "rxyz"],
                  "edges": [{"from": "r", "to": t} for t in "xyz"]}
    workers_.hold_execution("x", "y", "z")
    run = run_start(owner=user, definition=definition)
    consumed(run, "r")
    assert workers_.decided(run, "r") == ["plain"]
    rows = node_runs(run)
    assert rows["r"].taken == ["x", "y", "z"]
    assert [rows[t].status for t in "xyz"] == ["queued"] * 3
    workers_.release_execution("x", "y", "z")
    completed(run)


def test_a_successor_row_that_exists_already_sends_the_step_to_the_full_decision(workers_, user):
    """The plain plan assumes no successor row yet (a collision was how nested loops once lost a
    pass silently); where one exists the statement writes nothing and the full decision reads."""
    workers_.hold_decision("a")
    run = run_start(owner=user, definition=chain("a", "b"))
    finished_undecided(run, "a")
    NodeRun.objects.create(run=run, node_id="b", iteration=0, node_type="transform", status=NodeRun.Status.QUEUED)
    workers_.release_decision("a")
    assert workers_.decided(run, "a") == ["full"]
    assert node_runs(run)["a"].consumed and NodeRun.objects.filter(run=run, node_id="b").count() == 1
    run_cancel(run=run, user=user)  # that b was never published


def test_a_join_waits_for_its_other_parent_then_runs_once(workers_, user):
    workers_.hold_execution("b")
    run = run_start(owner=user, definition=fan_in(("a", "j"), ("b", "j")))
    a = consumed(run, "a")
    assert workers_.decided(run, "a") == ["plain"]
    assert a.taken == ["j"] and "j" not in node_runs(run)  # b has not finished
    workers_.hold_execution("j")
    workers_.release_execution("b")
    b = consumed(run, "b")
    assert workers_.decided(run, "b") == ["plain"]
    assert b.taken == ["j"] and node_runs(run)["j"].status == "queued"
    workers_.release_execution("j")
    completed(run)
    assert NodeRun.objects.filter(run=run, node_id="j").count() == 1


def test_a_join_step_consumes_finished_parents_whose_only_edge_is_the_join(workers_, user):
    workers_.hold_decision("a", "b", "c")
    workers_.hold_execution("j")
    run = run_start(owner=user, definition=fan_in(("a", "j"), ("b", "j"), ("c", "j")))
    finished_undecided(run, "a", "b", "c")  # all three finish first
    workers_.release_decision("a")
    consumed(run, "a")
    assert workers_.decided(run, "a") == ["plain"]
    rows = node_runs(run)
    assert all(rows[p].consumed and rows[p].taken == ["j"] for p in "abc")
    assert rows["j"].status == "queued"
    workers_.release_decision("b", "c")  # their own messages arrive later and find nothing to do, in the same step
    assert workers_.decided(run, "b") == workers_.decided(run, "c") == ["plain"]
    workers_.release_execution("j")
    completed(run)
    assert NodeRun.objects.filter(run=run, node_id="j").count() == 1


def test_a_parent_with_another_edge_is_left_to_its_own_decision(workers_, user):
    workers_.hold_decision("a", "b")
    workers_.hold_execution("j", "k")
    run = run_start(owner=user, definition=fan_in(("a", "j"), ("b", "j"), ("b", "k")))
    finished_undecided(run, "a", "b")
    workers_.release_decision("a")
    consumed(run, "a")
    rows = node_runs(run)
    assert not rows["b"].consumed and "j" not in rows  # b also routes to k: not absorbed
    workers_.release_decision("b")
    b = consumed(run, "b")
    rows = node_runs(run)
    assert b.taken == ["j", "k"] and rows["j"].status == rows["k"].status == "queued"
    workers_.release_execution("j", "k")
    completed(run)


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


# --- a sibling's decision holding the run lock ---------------------------------------------------


def run_lock_held_elsewhere(run: Run) -> psycopg.Connection:
    """Another session holding the run lock, as a sibling's decision does (close it to release)."""
    other = psycopg.connect(**connection.get_connection_params(), autocommit=False)
    other.execute("SELECT id FROM workflows_run WHERE id = %s FOR UPDATE", [run.pk])
    return other


def blocked_on_a_lock(other: psycopg.Connection) -> bool:
    """Whether some session waits for a lock ``other`` holds (asked from a session of its own: a
    transaction sees the activity statistics as they were at its first look)."""
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as observer:
        row = observer.execute("SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                               [other.info.backend_pid]).fetchone()
    return bool(row and row[0])


def test_an_absorbed_parents_message_does_not_wait_for_the_run_lock(workers_, user):
    workers_.hold_decision("a", "b", "c")
    workers_.hold_execution("j")
    run = run_start(owner=user, definition=fan_in(("a", "j"), ("b", "j"), ("c", "j")))
    finished_undecided(run, "a", "b", "c")
    workers_.release_decision("a")  # absorbs b and c, queues j
    consumed(run, "a")
    assert all(node_runs(run)[p].consumed for p in "bc") and "j" in node_runs(run)
    node_run = NodeRun.objects.get(run=run, node_id="b")
    other = run_lock_held_elsewhere(run)
    try:
        workers_.release_decision("b")
        until(lambda: workers_.steps(node_run) or blocked_on_a_lock(other), "b's decision, or b's step waiting")
        assert not blocked_on_a_lock(other), "b's step waits for the run lock"
        assert workers_.decided(run, "b") == ["plain"]
    finally:
        other.close()
    workers_.release_decision("c")
    workers_.release_execution("j")
    completed(run)
    assert NodeRun.objects.filter(run=run, node_id="j").count() == 1


def test_a_parent_absorbed_while_its_step_waits_for_the_lock_is_not_consumed_twice(workers_, user):
    """Its node run was unconsumed when the step asked for the lock; the sibling's decision that
    held it consumed the node run meanwhile: the step, once locked, finds nothing to do."""
    workers_.hold_decision("a", "b", "c")
    run = run_start(owner=user, definition=fan_in(("a", "j"), ("b", "j"), ("c", "j")))
    finished_undecided(run, "a", "b", "c")
    other = run_lock_held_elsewhere(run)
    try:
        workers_.release_decision("b")
        until(lambda: blocked_on_a_lock(other), "b's step waiting for the run lock")
        other.execute("UPDATE workflows_noderun SET consumed = true, taken = '[\"j\"]' WHERE id = %s",
                      [node_runs(run)["b"].pk])
        other.commit()
    finally:
        other.close()
    assert workers_.decided(run, "b") == ["plain"]
    rows = node_runs(run)
    assert rows["b"].consumed and not rows["a"].consumed and "j" not in rows  # nothing written by b's step
    workers_.release_decision("a")  # absorbs c, queues j
    assert workers_.decided(run, "a") == ["plain"]
    workers_.release_decision("c")
    completed(run)
    assert NodeRun.objects.filter(run=run, node_id="j").count() == 1


# --- the run's output cap: a plain step agrees with the full decision ---------------------------------

SMALL = {"expression": "'s'", "dispatch": "queue"}
BIG = {"template": "x" * 2000, "dispatch": "queue"}  # alone past the 500-byte cap below
CAP = 500


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


@pytest.fixture(scope="class", params=[True, False], ids=["plain", "full"])
def capped_coordinator(request: pytest.FixtureRequest, workers: dict[str, stack.Proc],
                       stack_env: dict[str, str]) -> Iterator[stack.Proc]:
    """The coordinator queue served only by a worker whose runs' outputs are capped at ``CAP``
    bytes, with its plain step on or off (a worker reads its settings at start): the session
    worker stops consuming that queue meanwhile, and still runs the executors."""
    control(workers["worker"].node_name, "cancel_consumer", COORDINATOR_QUEUE)
    try:
        proc = stack.start_worker({**stack_env, "AOB_MAX_RUN_OUTPUT_BYTES": str(CAP),
                                   "AOB_PLAIN_STEPS": "1" if request.param else "0"},
                                  "capped", queues=[COORDINATOR_QUEUE], concurrency=3)
    except BaseException:
        control(workers["worker"].node_name, "add_consumer", COORDINATOR_QUEUE)
        raise
    try:
        yield proc
    finally:
        try:
            control(workers["worker"].node_name, "add_consumer", COORDINATOR_QUEUE)
        finally:
            proc.stop()


def output_bytes(run: Run) -> int:
    return (Run.objects.get(pk=run.pk).usage or {}).get("output_bytes", 0)


class TestOutputCap:
    @pytest.mark.parametrize("shape", ["chain", "end", "join"])
    def test_a_step_after_a_sibling_passed_the_output_cap_fails_the_run(self, engine, capped_coordinator, user, shape):
        """``a`` completes under the cap, then ``b`` passes it, then ``a``'s message arrives: the
        full decision reads the run's usage and fails the run; a plain step, planned before ``b``,
        must not queue ``a``'s successor (or end the run) on the stale count its completion carried."""
        driven = Stack([engine["worker"], capped_coordinator])
        try:
            driven.hold_execution("a", "b")
            driven.hold_decision("a", "b")
            run = run_start(owner=user, definition=capped(shape))
            if shape == "join":
                consumed(run, "c")  # before a completes: its step then waits for a, absorbing nothing
            driven.release_execution("a")
            finished_undecided(run, "a")
            assert output_bytes(run) <= CAP  # what a's completion carried
            driven.release_execution("b")
            finished_undecided(run, "b")
            assert output_bytes(run) > CAP

            driven.release_decision("a")

            assert driven.decided(run, "a") == ["full"]  # the statement wrote nothing; the full decision failed the run
            run.refresh_from_db()
            assert run.status == "failed" and run.error["limit"] == "output_bytes", run.error
            assert set(node_runs(run)) == {n["id"] for n in capped(shape)["nodes"]} - {"a2", "j"}
            driven.release_decision("b")
            driven.decided(run, "b")
        finally:
            driven.close()
