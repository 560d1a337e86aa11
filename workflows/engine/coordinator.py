"""The coordinator: lock the run, read what a decision needs, ``planner.plan`` it, apply the plan.

Every decision is the planner's (``planner``: routing, joins, skips, loops, run completion and
failure, limits). This module only reads the ``State`` under the run lock and writes the ``Plan``:
new node runs, updates, the run's fields, events, and the dispatch of queued node runs after
commit. A plain step (``steps``) applies a plan the planner made for the state it checks in SQL.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Case, Count, Exists, F, JSONField, OuterRef, Q, Subquery, Value, When
from django.db.models.expressions import RawSQL
from django.utils import timezone

from aob_project.inserts import insert_together
from aob_project.metrics import DECISION
from workflows.definition.ir import IR, ir_for
from workflows.models import Artifact, NodeRun, Run, RunPatch, canonical_json

from . import events, hooks, planner, pure, run_inputs, shares, steps, transitions
from .artifacts import keep_artifacts
from .completion import Completion
from .dispatch import (
    Dispatch,
    compute_output_after_commit,
    coordinate_after_commit,
    coordinate_now,
    publish_after_commit,
)
from .outputs import count_output
from .planner import Plan, State, Token

logger = logging.getLogger(__name__)

ACTIVE = frozenset(NodeRun.ACTIVE)


def graph(artifact_id: str) -> IR:
    """The compiled graph of a stored version (cached per process; the content read on a miss)."""
    return ir_for(artifact_id, lambda: Artifact.objects.values_list("content", "size_bytes").get(pk=artifact_id))


def load_ir(run: Run) -> IR:
    return graph(run.current_artifact_id)


def read_state(run: Run, ir: IR, tokens: list[Token] | None = None) -> State:
    """The state a decision reads, for a run locked by the caller. ``run`` may carry the
    annotations ``locked_run`` adds (``patch_pending``, ``node_run_count``); else they are read."""
    patch_pending = getattr(run, "patch_pending", None)
    if patch_pending is None:
        patch_pending = RunPatch.objects.filter(run_id=run.pk, status=RunPatch.Status.PENDING_APPROVAL).exists()
    count = getattr(run, "node_run_count", None)
    if count is None:
        count = NodeRun.objects.filter(run_id=run.pk).count() if ir.loops else 0
    return State(run_status=run.status, inputs=run_inputs.of_run(run), tokens=_needed_tokens(run, ir) if tokens is None else tokens,
                 now=timezone.now(), limits=planner.Limits.from_settings(), output_bytes=(run.usage or {}).get("output_bytes", 0),
                 node_runs_stored=count, patch_pending=patch_pending, started_at=run.started_at or run.created_at)


def locked_run(node_run_id: int) -> Run | None:
    """The run of a node run, locked, with what the planner needs besides its node runs."""
    return (Run.objects.select_for_update(of=("self",))
            .filter(pk=Subquery(NodeRun.objects.filter(pk=node_run_id).values("run_id")[:1]))
            .defer("inputs")  # large ones are read once in a process (run_inputs)
            .annotate(inputs_head=run_inputs.HEAD, patch_pending=Exists(RunPatch.objects.filter(run_id=OuterRef("pk"),
                                                                   status=RunPatch.Status.PENDING_APPROVAL)),
                      node_run_count=Subquery(NodeRun.objects.filter(run_id=OuterRef("pk")).order_by()
                                              .values("run_id").annotate(n=Count("id")).values("n")[:1]),
                      # a node evaluated in the decision starts as on a worker (``execution.prepared``)
                      owner_active=Subquery(User.objects.filter(pk=OuterRef("owner_id")).values("is_active")[:1]))
            .order_by().first())


def apply(run: Run, ir: IR, plan: Plan, now: Any) -> list[NodeRun]:
    """Write a plan, in the caller's transaction: new node runs, updates, the run's fields and
    events; dispatch the queued node runs and call the run-finished hooks after commit."""
    stored = {t.output_artifact_id: t.output for t in plan.inserts if t.output_artifact_id}
    if stored:  # the outputs of pure nodes evaluated in this decision
        keep_artifacts({aid: (Artifact.Kind.NODE_IO, canonical_json(content)) for aid, content in stored.items()})
    new = _node_runs(run, plan, now)
    if new:
        NodeRun.objects.bulk_create(new)
    # in SQL: a patch's count before this decision stays; the inputs of the node runs it stored
    # (a pure node's resolved config, a conditional's copy) as the database measured them
    counted = count_output(run.pk, plan.output_bytes, inputs_of=[nr.pk for nr in new if nr.input is not None])
    if counted is not None:
        run.usage = {**(run.usage or {}), "output_bytes": counted}
    for pk, fields in plan.updates.items():
        if "status" in fields:
            transitions.move_node_run(pk, **fields)
        else:
            NodeRun.objects.filter(pk=pk).update(**fields)
    if plan.run:
        transitions.move_run(run.pk, sources=[run.status], **plan.run)
        for name, value in plan.run.items():
            setattr(run, name, value)
        if plan.run.get("status") == Run.Status.FAILED:
            cancel_approvals(run.pk, now)
        if plan.run_finished:
            hooks.run_finished(run.pk, plan.run_finished)
        if plan.run.get("output_asked_at"):
            compute_output_after_commit(str(run.pk))
    events.append(run.pk, run.owner_id, plan.events)
    _publish_after_commit(run, ir, new)
    if plan.continued:  # the budget was spent: each goes on in a decision of its own
        continued = {id(t) for t in plan.continued}
        coordinate_after_commit([t.pk for t in plan.continued if t.pk is not None]  # a replay's reused
                                + [nr.pk for nr, t in zip(new, plan.inserts, strict=True) if id(t) in continued],
                                over_share=shares.over(run.owner_id))
    return new


def _node_runs(run: Run, plan: Plan, now: Any) -> list[NodeRun]:
    return [NodeRun(run_id=run.pk, node_id=t.node_id, iteration=t.iteration, node_type=t.node_type, status=t.status,
                    input=t.input, output=t.output, consumed=t.consumed, taken=t.taken, started_at=t.started_at,
                    finished_at=t.finished_at, attempts=t.attempts, error=t.error,
                    output_artifact_id=t.output_artifact_id, attempt_log=t.attempt_log or [],
                    dispatched_at=now if t.status == NodeRun.Status.QUEUED else None)
            for t in plan.inserts]


def _publish_after_commit(run: Run, ir: IR, new: list[NodeRun]) -> None:
    publish_after_commit(Dispatch(nr.pk, nr.node_id, nr.node_type, str(run.pk), ir.nodes[nr.node_id].timeout_ms)
                         for nr in new if nr.status == NodeRun.Status.QUEUED)


def _needed_tokens(run: Run, ir: IR) -> list[Token]:
    """What a decision reads: the latest iteration of each node, plus any node run still active
    or not yet consumed, a replay's reused ones (a node's latest, and for a loop decided again up to
    two below it that its count rests on, ``run_replay``: a node reused at a pass ran in the source
    at every pass up to it, ``planner._Planner.known``), and, in a run
    with loops, every node run of the passes those finished and unconsumed belong to (a join of
    such a pass reads its parents' node runs of that pass: the loop may have gone round since,
    ``planner.edge_state``) and each loop's latest that ran (``planner._counted``); outputs only
    where routing reads them (``planner.output_readers``, and skipped nodes' pass-through marker).
    Never inputs, logs or usage. A loop of many iterations with large outputs costs a decision what
    its last iteration, and the passes it decides, cost."""
    latest = (NodeRun.objects.filter(run_id=run.pk).order_by("node_id", "-iteration").distinct("node_id")
              .values("pk"))
    wanted = Q(pk__in=Subquery(latest)) | Q(consumed=False) | Q(status__in=ACTIVE) | Q(reused=True)
    if ir.loops:
        passes = NodeRun.objects.filter(run_id=run.pk, consumed=False, status__in=NodeRun.FINISHED).values("iteration")
        # and each loop's latest that ran, past its dead-path skips: what its next pass counts on
        counted = (NodeRun.objects.filter(run_id=run.pk, node_id__in=list(ir.loops))
                   .exclude(status=NodeRun.Status.SKIPPED).order_by("node_id", "-iteration").distinct("node_id")
                   .values("pk"))
        wanted |= Q(iteration__in=Subquery(passes)) | Q(pk__in=Subquery(counted))
    return _tokens(NodeRun.objects.filter(run_id=run.pk).filter(wanted), ir)


def _tokens(node_runs: Any, ir: IR) -> list[Token]:
    """Node runs as a decision reads them: their outputs only where routing reads them
    (``planner.output_readers``, and skipped nodes' pass-through marker), and of a node read only by
    its branch rules only what they read (``planner.output_reads``: ``$.status_code`` of a 32 MiB
    response is one number, read in the database), in the database's order."""
    whole, groups, parts_of = _read_groups(ir)
    rows = (node_runs
            .annotate(routing_output=Case(When(Q(node_id__in=whole) | Q(status=NodeRun.Status.SKIPPED),
                                               then=F("output")), default=Value(None), output_field=JSONField()),
                      routing_parts=Case(*[When(Q(node_id__in=ids) & ~Q(status=NodeRun.Status.SKIPPED),
                                                then=sql) for ids, sql in groups],
                                         default=Value(None), output_field=JSONField()))
            .order_by("iteration", "id")
            .values_list("pk", "node_id", "iteration", "node_type", "status", "consumed", "taken", "routing_output",
                         "routing_parts", "error", "finished_at", "reused", "output_bytes"))
    tokens = []
    for (pk, node_id, iteration, node_type, status, consumed, taken, output, got, error, finished_at, reused,
         output_bytes) in rows:
        if got is not None:
            output = _assembled(parts_of[node_id], got)
        tokens.append(Token(node_id, iteration, node_type, status, pk=pk, consumed=consumed, taken=taken,
                            output=output, error=error, finished_at=finished_at, reused=reused,
                            output_bytes=output_bytes))
    return tokens


Parts = list[tuple[tuple[str | int, ...], Any]]


def _read_groups(ir: IR) -> tuple[list[str], list[tuple[list[str], RawSQL]], dict[str, Parts]]:
    """``output_reads`` as a decision's statement reads it, derived once per version: the nodes
    read whole, the nodes read alike (one tree) each with the one expression reading their parts,
    and each node's parts, to assemble what the database sends back."""
    def compute(ir: IR) -> tuple[list[str], list[tuple[list[str], RawSQL]], dict[str, Parts]]:
        reads = planner.output_reads(ir)
        by_tree: dict[str, list[str]] = {}
        parts: dict[str, Parts] = {}
        for node_id, tree in reads.items():
            if tree:
                key = canonical_json(tree)
                by_tree.setdefault(key, []).append(node_id)
                parts.setdefault(key, _parts(tree))
        return ([node_id for node_id, tree in reads.items() if tree is None],
                [(ids, _parts_sql(parts[key])) for key, ids in by_tree.items()],
                {node_id: parts[key] for key, ids in by_tree.items() for node_id in ids})
    return planner.derived(ir, "read_groups", compute)


_MISSING = object()


def _parts(tree: dict[Any, Any]) -> Parts:
    """The paths of an output a decision reads for ``tree`` (a ``read_tree`` of ``output``), the
    root first, each with what is below it: None, read whole, or the tree its value is cut to."""
    found: list[tuple[tuple[str | int, ...], Any]] = []
    todo: list[tuple[tuple[str | int, ...], Any]] = [((), tree)]
    while todo:
        path, below = todo.pop()
        found.append((path, below))
        if below is not None:
            todo.extend((path + (name,), sub) for name, sub in below.items())
    return found


def _parts_sql(parts: Parts) -> RawSQL:
    """One jsonb array, an element per path of ``parts``: null where the path is missing, ``[value]``
    where it is read whole (or its value is not the map or list its tree reads into), ``{}`` for a
    map and a list's length for a list read into: ``expressions.prune``'s cut, in the database."""
    column = f'"{NodeRun._meta.db_table}"."output"'
    items, params = [], []
    for path, below in parts:
        at = f"({column} #> %s::text[])" if path else column
        at_params = [[str(name) for name in path]] if path else []
        if below is None:
            items.append(f"CASE WHEN {at} IS NULL THEN NULL ELSE jsonb_build_array({at}) END")
            params += at_params * 2
        elif isinstance(next(iter(below)), str):
            items.append(f"CASE WHEN {at} IS NULL THEN NULL WHEN jsonb_typeof({at}) = 'object' THEN '{{}}'::jsonb "
                         f"ELSE jsonb_build_array({at}) END")
            params += at_params * 3
        else:
            items.append(f"CASE WHEN {at} IS NULL THEN NULL WHEN jsonb_typeof({at}) = 'array' "
                         f"THEN to_jsonb(jsonb_array_length({at})) ELSE jsonb_build_array({at}) END")
            params += at_params * 4
    chunks = [items[i:i + 90] for i in range(0, len(items), 90)]  # a function takes at most 100 arguments
    sql = " || ".join(f"jsonb_build_array({', '.join(chunk)})" for chunk in chunks)
    return RawSQL(sql, params, output_field=JSONField())  # noqa: S611 - our text; the paths are parameters


def _assembled(parts: Parts, got: list[Any]) -> Any:
    """The output as ``expressions.prune`` cuts it, from ``_parts_sql``'s array."""
    found = {path: value for (path, _), value in zip(parts, got, strict=True)}
    below_of = dict(parts)

    def build(path: tuple[str | int, ...]) -> Any:
        value = found[path]
        if value is None:
            return _MISSING
        if isinstance(value, list):
            return value[0]
        below = below_of[path]
        into: Any = {} if isinstance(value, dict) else [None] * value
        for name in below:
            if isinstance(into, list) and name >= len(into):
                continue
            child = build(path + (name,))
            if child is not _MISSING:
                into[name] = child
        return into

    output = build(())
    return None if output is _MISSING else output


def cancel_approvals(run_id: Any, now: Any) -> None:
    """A failed run has nothing left to decide: the node types' end-of-run hooks settle what waits
    on people (``hitl`` cancels its pending approvals), in this transaction, as on cancel."""
    hooks.run_ending(run_id, Run.Status.FAILED, now)


def coordinate(node_run_id: int, completion: Completion | None = None, *, over_share: bool = False) -> None:
    """Consume one finished node run, exactly once, and emit what follows it. With its executor's
    ``completion``, a plain step (``steps.step_plain``) is one round trip; anything else, or a
    step whose facts no longer hold, takes the full decision below with the run locked, charged
    to the run's owner (``shares``). ``over_share``: asked for behind everyone else's, as its owner
    was past its share; decided as it comes, never sent again."""
    started = time.perf_counter()
    plain = (completion is not None and settings.AOB_PLAIN_STEPS
             and steps.step_plain(completion, graph(completion.artifact_id)))
    if not plain:
        _decide(node_run_id, started, deferrable=not over_share)
    step = "plain" if plain else "full"
    DECISION.labels(step).observe(time.perf_counter() - started)
    # off by default; which step decided one node run (the metric only counts them): the test
    # stack turns it on (tests/support/faults.py) to tell, per node run, what the coordinator did
    logger.debug("coordinator.decided", extra={"node_run_id": node_run_id, "step": step})


def _decide(node_run_id: int, started: float, deferrable: bool) -> None:
    """The full decision, its time (since ``started``) charged to the run's owner, raised or not.
    ``deferrable``: an owner past its share has it asked for again, behind everyone else's. A
    sub-workflow's run whose tree has ended (its cancel still on the maintenance queue) is cancelled
    instead (``transitions.cancel_below_ended``): what it would decide (a node's failure, a pure
    node's output, its end) must not settle it otherwise. Every step of such a run is decided here
    (``Completion.below``: no plain step); a top run's costs no statement for it."""
    seen = NodeRun.objects.filter(pk=node_run_id).values_list("consumed", "run__owner_id").first()
    if seen is None or seen[0]:
        return  # a duplicate, or consumed with a sibling's decision: no lock needed to know
    owner_id = seen[1]
    if deferrable and shares.over(owner_id):
        coordinate_now(node_run_id, over_share=True)
        return
    try:
        with transaction.atomic():
            run = locked_run(node_run_id)
            if run is None:
                return
            if (run.within and run.status not in Run.FINISHED
                    and transitions.cancel_below_ended(run.pk, run.status, run.owner_id, parent=run.within)):
                return  # its tree has ended: it was cancelled with it, and decides nothing more
            ir = load_ir(run)
            state = read_state(run, ir)
            mine = next((t for t in state.tokens if t.pk == node_run_id), None)
            if mine is None or mine.consumed:
                return  # a duplicate message
            budget = pure.Budget()
            apply(run, ir, planner.plan(ir, state, node_run_id, pure.evaluator_for(run, state.inputs, budget), budget),
                  state.now)
    finally:
        shares.charge(owner_id, time.perf_counter() - started)


# Past this many entry nodes a start is written by ``apply``, in statements of a bounded size: each
# value of a node run is a parameter of its own (``ValuesJSONField``), and one statement takes at
# most 65,535 (``NodeRunQuerySet.bulk_create`` batches them; one statement of every row does not).
START_ONE_STATEMENT_MAX = 1000


def start_new(run: Run) -> list[NodeRun]:
    """Store a new run (``run`` not saved yet) and emit its entry nodes. When the plan only inserts
    node runs and events (``Plan.inserts_only``, a usual start), the run, its node runs and its
    first events (numbered from 1, the run's ``event_seq`` set to match) are one statement
    (``aob_project.inserts``), atomic by itself and sending no model signals, as ``bulk_create``;
    any other plan (an entry node that settles the run at once, a start cut by its budget) is
    written by the decision's ``apply`` in a transaction, after the run is saved."""
    ir, state, plan = _plan_start(run, [])
    if not plan.inserts_only or len(plan.inserts) > START_ONE_STATEMENT_MAX:
        with transaction.atomic(savepoint=False):
            run.save(force_insert=True)
            return apply(run, ir, plan, state.now)
    new = _node_runs(run, plan, state.now)
    first = events.numbered(run.pk, 1, plan.events)
    run.event_seq = len(first)
    insert_together([run], new, first)
    events.push_after_commit(run.pk, run.owner_id, first)
    _publish_after_commit(run, ir, new)
    return new


def start(run: Run, reused: list[int] | None = None) -> list[NodeRun]:
    """Emit a stored new run's entry nodes, in the caller's transaction; ``reused``: the node runs
    (ids) a replay copied from its source, read as a decision reads them (``_tokens``)."""
    ir, state, plan = _plan_start(run, reused or [])
    return apply(run, ir, plan, state.now)


def _plan_start(run: Run, reused: list[int]) -> tuple[IR, State, Plan]:
    """A new run's state (nothing to read: no patch, only a replay's reused node runs) and its plan."""
    ir = load_ir(run)
    tokens = _tokens(NodeRun.objects.filter(pk__in=reused), ir) if reused else []
    run.patch_pending, run.node_run_count = False, len(tokens)  # type: ignore[attr-defined]
    state = read_state(run, ir, tokens=tokens)
    state.started_at = state.started_at or state.now  # a run not stored yet starts now
    # nothing evaluated here: this is the web process's request (or a hook's, a parent's), and a new
    # run answers `queued`; an entry node evaluated in place goes on in the coordinator
    return ir, state, planner.plan_start(ir, state, events.shown_inputs(run), run.current_artifact_id,
                                         budget=pure.Budget.none())


def refresh(run: Run) -> None:
    """Re-decide a locked run after a patch changed its definition (``planner.plan_refresh``)."""
    ir = load_ir(run)
    state = read_state(run, ir)
    # in the patch's request: nothing evaluated here, what is evaluated in place goes on in the coordinator
    apply(run, ir, planner.plan_refresh(ir, state, budget=pure.Budget.none()), state.now)
