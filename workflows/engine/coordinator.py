"""Deciding what runs next: one transaction, the run row locked, reading only the database
(plain steps, decided from the executor's facts in one round trip, are in ``steps``).

A ``Decision`` holds the run's node runs in memory while the lock is held. Consuming a finished
node run routes its outgoing edges (branch rules in authoring order, first match wins, else the
unconditional edges), then considers each target: a node runs once every incoming edge has
either delivered or is known dead; when all are dead it is skipped and the skip propagates
(dead-path elimination). ``conditional`` and ``loop`` nodes are evaluated here, with no worker
hop; a type with no executor is skipped with a warning and its edges carry on.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, JSONField, Q, Subquery, Value, When
from django.utils import timezone

from aob_project.metrics import DECISION
from workflows import registry
from workflows.definition.expressions import ExpressionError, evaluate_condition
from workflows.definition.ir import IR, ir_for
from workflows.models import Artifact, NodeRun, Run, RunPatch

from . import events, hooks, steps, testhooks
from .dispatch import Dispatch, publish_after_commit

logger = logging.getLogger(__name__)

DELIVERED, DEAD, PENDING = "delivered", "dead", "pending"
ACTIVE = {NodeRun.Status.QUEUED, NodeRun.Status.RUNNING, NodeRun.Status.WAITING}


def graph(artifact_id: str) -> IR:
    """The compiled graph of a stored version (cached per process; the content read on a miss)."""
    return ir_for(artifact_id, lambda: Artifact.objects.values_list("content", flat=True).get(pk=artifact_id))


def load_ir(run: Run) -> IR:
    return graph(run.current_artifact_id)


class Decision:
    def __init__(self, run: Run, node_runs: list[NodeRun] | None = None) -> None:
        self.run = run
        self.ir = load_ir(run)
        if node_runs is None:
            node_runs = _needed_node_runs(run, self.ir)
        self.by_key: dict[tuple[str, int], NodeRun] = {(nr.node_id, nr.iteration): nr for nr in node_runs}
        self.latest: dict[str, NodeRun] = {}
        for nr in node_runs:
            current = self.latest.get(nr.node_id)
            if current is None or nr.iteration >= current.iteration:
                self.latest[nr.node_id] = nr
        self.new: list[NodeRun] = []
        self._stored_count: int | None = None
        self._todo: list[tuple[str, int]] = []  # (node, iteration) to consider: a stack, not recursion
        self._draining = False
        self.dirty: dict[int, set[str]] = {}
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self.now = timezone.now()
        self.run_fields: set[str] = set()

    # --- bookkeeping ---------------------------------------------------------------------------

    def _touch(self, nr: NodeRun, *fields: str) -> None:
        if nr.pk is not None:
            self.dirty.setdefault(nr.pk, set()).update(fields)

    def known(self, node_id: str, iteration: int) -> bool:
        """Whether a node run ``(node_id, iteration)`` exists. Only the latest iteration of each
        node is loaded; iterations only grow, so anything at or below it exists already."""
        if (node_id, iteration) in self.by_key:
            return True
        latest = self.latest.get(node_id)
        return latest is not None and latest.iteration >= iteration

    def _add(self, nr: NodeRun) -> NodeRun:
        self.by_key[(nr.node_id, nr.iteration)] = nr
        current = self.latest.get(nr.node_id)
        if current is None or nr.iteration >= current.iteration:
            self.latest[nr.node_id] = nr
        self.new.append(nr)
        return nr

    def event(self, type_: str, node_id: str = "", **data: Any) -> None:
        self.events.append((type_, node_id, data))

    # --- routing ----------------------------------------------------------------------------------

    def _predecessor_output(self, node_id: str) -> Any:
        for edge in self.ir.in_edges[node_id]:
            source = self.latest.get(edge.source)
            if source is not None and source.taken is not None and node_id in source.taken:
                return source.output
        return None

    def route(self, nr: NodeRun) -> list[str]:
        """Targets of the edges a finished node takes: first true conditional edge in authoring
        order, else every unconditional edge."""
        edges = self.ir.out_edges[nr.node_id]
        context = {"output": nr.output if nr.output is not None else {}, "inputs": self.run.inputs}
        conditional = [e for e in edges if e.condition]
        if not conditional:
            return [e.target for e in edges]
        for edge in conditional:
            if self._holds(edge.condition or "", context, nr.node_id, {"from": edge.source, "to": edge.target}):
                return [edge.target]
        return [e.target for e in edges if not e.condition]

    def _holds(self, condition: str, context: dict[str, Any], node_id: str, where: dict[str, Any]) -> bool:
        """A condition that fails to evaluate (a missing key, an index past the end, its budget
        spent) counts as false, and a ``condition_error`` event says which and why."""
        try:
            return evaluate_condition(condition, context)
        except ExpressionError as exc:
            self.event("condition_error", node_id, **where, condition=condition, rule=exc.rule, error=str(exc),
                       warning=f"condition {condition!r} failed to evaluate ({exc}); counted as false")
            return False

    def edge_state(self, source_id: str, target_id: str) -> str:
        source = self.latest.get(source_id)
        if source is None or not source.consumed or source.taken is None:
            return PENDING
        return DELIVERED if target_id in source.taken else DEAD

    # --- consuming and emitting ---------------------------------------------------------------------

    def consume(self, nr: NodeRun) -> None:
        nr.consumed = True
        self._touch(nr, "consumed", "taken")
        if self.run.status in Run.FINISHED:
            return
        if nr.node_id not in self.ir.nodes:
            nr.taken = []  # a patch removed this node while it ran
            return
        if nr.status == NodeRun.Status.FAILED:
            self.fail(nr)
            return
        if nr.status == NodeRun.Status.CANCELLED:
            return
        if self._over_limits(nr):
            return
        if nr.node_type == "loop" and nr.output and nr.output.get("decision") == "again":
            nr.taken = None
            self.emit(self.ir.loops[nr.node_id].loop_back_to, nr.iteration + 1)
            return
        if nr.node_type == "loop":
            loop = self.ir.loops[nr.node_id]
            chosen = loop.timeout_path if (nr.output or {}).get("decision") == "timeout" else loop.break_path
            if chosen:
                nr.taken = list(chosen)
            else:
                nr.taken = [e.target for e in self.ir.out_edges[nr.node_id] if e.target not in loop.timeout_path]
        elif nr.status == NodeRun.Status.SKIPPED and not (nr.output or {}).get("_passthrough"):
            nr.taken = []
        else:
            nr.taken = self.route(nr)
        iteration = 0 if nr.node_type == "loop" else nr.iteration
        self.consider_all([(edge.target, iteration) for edge in self.ir.out_edges[nr.node_id]])

    def consider(self, node_id: str, iteration: int) -> None:
        self.consider_all([(node_id, iteration)])

    def consider_all(self, items: list[tuple[str, int]]) -> None:
        """Consider nodes depth-first, in order, with an explicit stack: a chain of a thousand
        inline nodes or a long dead branch is a loop here, not a thousand nested calls."""
        self._todo.extend(reversed(items))
        if self._draining:
            return  # the outer call's loop takes them next
        self._draining = True
        try:
            while self._todo:
                self._consider_one(*self._todo.pop())
        finally:
            self._draining = False

    def _consider_one(self, node_id: str, iteration: int) -> None:
        if self.known(node_id, iteration):
            return
        states = [self.edge_state(e.source, node_id) for e in self.ir.in_edges[node_id]]
        if PENDING in states:
            return
        if DELIVERED not in states:
            skipped = self._add(NodeRun(run=self.run, node_id=node_id, iteration=iteration,
                                        node_type=self.ir.nodes[node_id].type, status=NodeRun.Status.SKIPPED,
                                        consumed=True, taken=[], finished_at=self.now))
            self.event("node_skipped", node_id, reason="dead_path", iteration=iteration)
            self.consider_all([(edge.target, skipped.iteration) for edge in self.ir.out_edges[node_id]])
            return
        self.emit(node_id, iteration)

    def emit(self, node_id: str, iteration: int) -> None:
        if self.known(node_id, iteration):
            return
        node = self.ir.nodes[node_id]
        spec = registry.get(node.type)
        base = {"run": self.run, "node_id": node_id, "iteration": iteration, "node_type": node.type}
        if spec is not None and spec.inline:
            upstream = self._predecessor_output(node_id)
            output: Any = upstream
            if node.type == "loop":
                output = self._loop_output(node_id, iteration, upstream)
            nr = self._add(NodeRun(**base, status=NodeRun.Status.COMPLETED, input=upstream, output=output,
                                   started_at=self.now, finished_at=self.now, attempts=1))
            self.event("node_started", node_id, iteration=iteration, inline=True)
            self.event("node_completed", node_id, iteration=iteration, inline=True, output=output)
            self.consume(nr)
        elif spec is None:
            nr = self._add(NodeRun(**base, status=NodeRun.Status.SKIPPED, output={"_passthrough": True},
                                   finished_at=self.now))
            self.event("node_skipped", node_id, iteration=iteration, reason="no_executor",
                       warning=f"no executor for node type {node.type!r}; skipped")
            self.consume(nr)
        else:
            self._add(NodeRun(**base, status=NodeRun.Status.QUEUED, queued_at=self.now, dispatched_at=self.now))

    def _loop_output(self, node_id: str, iteration: int, upstream: Any) -> dict[str, Any]:
        loop = self.ir.loops[node_id]
        wants_more = True
        if loop.condition:
            wants_more = self._holds(loop.condition, {"output": upstream if upstream is not None else {},
                                                      "inputs": self.run.inputs, "iteration": iteration},
                                     node_id, {"loop": node_id})
        if not wants_more:
            decision = "break"
        elif iteration + 1 < loop.max_iterations:
            decision = "again"
        else:
            decision = "timeout"
        return {"iteration": iteration, "iterations": iteration + 1, "condition": wants_more, "decision": decision}

    # --- run-level transitions --------------------------------------------------------------------

    def fail(self, nr: NodeRun) -> None:
        self.fail_run({"node_id": nr.node_id, **(nr.error or {})}, nr.node_id)

    def fail_run(self, error: dict[str, Any], node_id: str = "") -> None:
        self.run.status = Run.Status.FAILED
        self.run.error = error
        self.run.finished_at = self.now
        self.run_fields |= {"status", "error", "finished_at"}
        self._cancel_active()
        self.event("workflow_failed", node_id, error=self.run.error)

    def _over_limits(self, nr: NodeRun) -> bool:
        """The run's own size: what its outputs have stored (counted by each completion), and,
        where a loop goes round, how many node runs it has. Past either cap the run fails."""
        stored = (self.run.usage or {}).get("output_bytes", 0)
        if stored > settings.AOB_MAX_RUN_OUTPUT_BYTES:
            self.fail_run({"node_id": nr.node_id, "error_type": "RunLimitExceeded", "limit": "output_bytes",
                           "message": f"the run's outputs passed {settings.AOB_MAX_RUN_OUTPUT_BYTES} bytes "
                                      f"({stored} stored; AOB_MAX_RUN_OUTPUT_BYTES)"}, nr.node_id)
            return True
        if nr.node_type == "loop" and nr.output and nr.output.get("decision") == "again":
            if self._stored_count is None:
                self._stored_count = NodeRun.objects.filter(run_id=self.run.pk).count()
            count = self._stored_count + len(self.new)
            if count >= settings.AOB_MAX_NODE_RUNS_PER_RUN:
                self.fail_run({"node_id": nr.node_id, "error_type": "RunLimitExceeded", "limit": "node_runs",
                               "message": f"the run has {count} node runs; at most "
                                          f"{settings.AOB_MAX_NODE_RUNS_PER_RUN} are allowed "
                                          "(AOB_MAX_NODE_RUNS_PER_RUN)"}, nr.node_id)
                return True
        return False

    def _cancel_active(self) -> None:
        for other in list(self.by_key.values()):
            if other.status in ACTIVE:
                other.status = NodeRun.Status.CANCELLED
                other.finished_at = self.now
                other.lease_expires_at = None
                self._touch(other, "status", "finished_at", "lease_expires_at")

    def settle(self) -> None:
        """Move the run's status to what its node runs say."""
        if self.run.status in Run.FINISHED:
            return
        unfinished = [nr for nr in self.by_key.values()
                      if nr.status in ACTIVE or (nr.status in NodeRun.FINISHED and not nr.consumed)]
        # an agent's patch held for approval may still grow the run: wait for the decision
        held = not unfinished and RunPatch.objects.filter(
            run_id=self.run.pk, status=RunPatch.Status.PENDING_APPROVAL).exists()
        if not unfinished and not held:
            self.run.status = Run.Status.COMPLETED
            self.run.finished_at = self.now
            self.run_fields |= {"status", "finished_at"}
            self.event("workflow_completed", "", duration_ms=self._duration_ms())
            return
        busy = any(nr.status in (NodeRun.Status.QUEUED, NodeRun.Status.RUNNING) or not nr.consumed
                   and nr.status in NodeRun.FINISHED for nr in unfinished)
        status = Run.Status.RUNNING if busy else Run.Status.WAITING_FOR_APPROVAL
        if self.run.status != status and not (self.run.status == Run.Status.QUEUED and busy):
            self.run.status = status
            self.run_fields.add("status")

    def _duration_ms(self) -> int | None:
        start = self.run.started_at or self.run.created_at
        return int((self.now - start).total_seconds() * 1000) if start else None

    def save(self) -> None:
        if self.new:
            NodeRun.objects.bulk_create(self.new)
        index = {nr.pk: nr for nr in self.by_key.values() if nr.pk is not None}
        for pk, fields in self.dirty.items():
            nr = index.get(pk)
            if nr is not None and nr not in self.new:
                NodeRun.objects.filter(pk=pk).update(**{f: getattr(nr, f) for f in fields})
        if self.run_fields:
            Run.objects.filter(pk=self.run.pk).update(**{f: getattr(self.run, f) for f in self.run_fields})
            if self.run.status == Run.Status.FAILED:
                cancel_approvals(self.run.pk, self.now)
            if "status" in self.run_fields and self.run.status in Run.FINISHED:
                hooks.run_finished(self.run.pk, self.run.status)
        events.append(self.run.pk, self.run.owner_id, self.events)
        queued = [nr for nr in self.new if nr.status == NodeRun.Status.QUEUED]
        publish_after_commit(
            Dispatch(nr.pk, nr.node_id, nr.node_type, str(self.run.pk), self.ir.nodes[nr.node_id].timeout_ms)
            for nr in queued
        )


def _needed_node_runs(run: Run, ir: IR) -> list[NodeRun]:
    """What a decision reads: the latest iteration of each node, plus any node run still active
    or not yet consumed; outputs only where routing reads them (nodes with conditional out-edges,
    conditional and loop nodes and what feeds them, and skipped nodes' pass-through marker).
    Never inputs, logs or usage. A loop of many iterations with large outputs costs a decision
    what its last iteration costs."""
    readers: set[str] = set()
    for node_id, node in ir.nodes.items():
        if any(e.condition for e in ir.out_edges[node_id]):
            readers.add(node_id)
        if registry.is_inline(node.type):
            readers.add(node_id)
            readers.update(ir.predecessors(node_id))
    latest = (NodeRun.objects.filter(run_id=run.pk).order_by("node_id", "-iteration").distinct("node_id")
              .values("pk"))
    rows = (NodeRun.objects.filter(run_id=run.pk)
            .filter(Q(pk__in=Subquery(latest)) | Q(consumed=False) | Q(status__in=ACTIVE))
            .defer("input", "attempt_log", "usage", "output")
            .annotate(routing_output=Case(When(Q(node_id__in=readers) | Q(status=NodeRun.Status.SKIPPED),
                                               then=F("output")), default=Value(None), output_field=JSONField()))
            .order_by("iteration", "id"))
    node_runs = list(rows)
    for nr in node_runs:
        nr.output = nr.routing_output
    return [*node_runs]


def cancel_approvals(run_id: Any, now: Any) -> None:
    """A failed run has nothing left to decide: the node types' end-of-run hooks settle what waits
    on people (``hitl`` cancels its pending approvals), in this transaction, as on cancel."""
    hooks.run_ending(run_id, Run.Status.FAILED, now)


def coordinate(node_run_id: int, facts: dict[str, Any] | None = None) -> None:
    """Consume one finished node run, exactly once, and emit what follows it. With its executor's
    ``facts``, a plain step (``steps.step_plain``) is one round trip; anything else, or a step
    whose facts no longer hold, takes the full decision below with the run locked."""
    started = time.perf_counter()
    if facts is not None:
        testhooks.poison_decision(facts.get("node_id", ""))
    step = "plain" if facts is not None and steps.step_plain(facts, graph(facts["artifact_id"])) else "full"
    if step == "full":
        _decide(node_run_id)
    DECISION.labels(step).observe(time.perf_counter() - started)


def _decide(node_run_id: int) -> None:
    if NodeRun.objects.filter(pk=node_run_id, consumed=True).exists():
        return  # a duplicate, or consumed with a sibling's decision: no lock needed to know
    with transaction.atomic():
        run = (Run.objects.select_for_update()
               .filter(pk=Subquery(NodeRun.objects.filter(pk=node_run_id).values("run_id")[:1]))
               .order_by().first())
        if run is None:
            return
        decision = Decision(run)
        nr = next((n for n in decision.by_key.values() if n.pk == node_run_id), None)
        if nr is None or nr.consumed:
            return  # a duplicate message
        testhooks.poison_decision(nr.node_id)
        if nr.status not in NodeRun.FINISHED:
            if nr.status == NodeRun.Status.WAITING:
                decision.settle()  # the run may now be waiting_for_approval
                decision.save()
            return  # not finished: a retry is queued, or a person decides later
        decision.consume(nr)
        # While the run is locked, consume every other finished node run too: at a join, the
        # coordinator messages of the other parents then find nothing left to do, and the join
        # starts one decision after its last parent instead of a queue of them later.
        for other in sorted(decision.by_key.values(), key=lambda n: (n.finished_at is None, n.finished_at, n.pk or 0)):
            if other.pk is not None and not other.consumed and other.status in NodeRun.FINISHED:
                decision.consume(other)
        decision.settle()
        decision.save()


def start(run: Run, node_runs: list[NodeRun] | None = None) -> Decision:
    """Emit a new run's entry nodes (called inside run_start's transaction)."""
    decision = Decision(run, node_runs or [])
    decision.event("workflow_started", "", inputs=run.inputs, artifact_id=run.current_artifact_id)
    reused = sorted((nr for nr in decision.by_key.values() if nr.reused),
                    key=lambda nr: decision.ir.topological().index(nr.node_id))
    for nr in reused:
        decision.consume(nr)
    for node_id in decision.ir.entries:
        decision.emit(node_id, 0)
    decision.settle()
    return decision


def refresh(run: Run) -> None:
    """Re-decide a locked run after a patch changed its definition. Node runs of nodes the patch
    removed are cancelled if they had not started; a finished node that gained edges routes them
    now; and nodes whose predecessors all finished before the patch added them are considered."""
    decision = Decision(run)
    for stale in list(decision.by_key.values()):
        if stale.node_id not in decision.ir.nodes and stale.status == NodeRun.Status.QUEUED:
            stale.status, stale.consumed, stale.taken = NodeRun.Status.CANCELLED, True, []
            stale.finished_at = decision.now
            decision._touch(stale, "status", "consumed", "taken", "finished_at")
    for node_id in decision.ir.topological():
        nr = decision.latest.get(node_id)
        if nr is None or not nr.consumed or nr.taken is None or nr.status != NodeRun.Status.COMPLETED:
            continue
        if nr.node_type == "loop":
            continue
        fresh = [t for t in decision.route(nr) if t not in nr.taken and t not in decision.latest]
        if fresh:
            nr.taken = [*nr.taken, *fresh]
            decision._touch(nr, "taken")
            for target in fresh:
                decision.consider(target, nr.iteration)
    for node_id in decision.ir.topological():
        if node_id not in decision.latest:
            iterations = [decision.latest[p].iteration for p in decision.ir.predecessors(node_id)
                          if p in decision.latest]
            decision.consider(node_id, max(iterations, default=0))
    decision.settle()
    decision.save()
