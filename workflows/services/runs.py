"""Runs: start, cancel, replay."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q, Sum
from django.db.models.expressions import RawSQL
from django.utils import timezone

from aob_project.exceptions import Conflict, Forbidden, NotFound, ValidationFailed
from workflows import egress, storage
from workflows.definition import gates
from workflows.definition import ir as graphs
from workflows.definition.ir import IR, compile_definition
from workflows.definition.references import referenced_nodes
from workflows.definition.validation import validate
from workflows.engine import coordinator, events, run_output, transitions
from workflows.engine.artifacts import keep_artifacts
from workflows.engine.dispatch import Dispatch, publish_after_commit
from workflows.engine.execution import given_back, unsent
from workflows.engine.outputs import OutputTooLarge, refuse_large_output
from workflows.limits import bounded_error, refuse_past, refuse_unstorable
from workflows.models import (
    Artifact,
    Event,
    NodeRun,
    Run,
    Workflow,
    canonical_json,
    size_of,
    text_id,
)
from workflows.results import run_output_compute
from workflows.selectors import run_finished_check, run_owner_check

from .definitions import validation_error

# a version validated and compiled in this process: its definition's stored size (same content, same size)
_RUNNABLE: dict[str, int] = {}


def run_inputs_check(inputs: Any, *, error: type[ValidationFailed] = ValidationFailed,
                     code: str | None = "invalid_inputs") -> int:
    """The rules a run's inputs obey whoever starts it (the API, whose body is capped, a hook's
    mapping, a schedule, a parent run), and what saves inputs for a later start (a schedule)
    judges by: an object, nothing the API body's rule calls unstorable (a CEL mapping can make NaN
    or NUL), at most ``AOB_MAX_RUN_INPUTS_BYTES``. Not the body's 64-bit rule: that is the
    senders' (the body, a hook's mapping); a replay's stored inputs, or a parent's outputs, may hold
    a wider integer (an output's, or jsonb's reading of a float 1e20 taken before the senders' rule
    judged floats too). Returns their size, measured once (none: 0, as the runs before the column)."""
    if not isinstance(inputs, dict):
        raise error("inputs must be a JSON object", code=code, extra={"field": "inputs", "rule": "type"})
    refuse_unstorable(inputs, field="inputs", error=error, code=code, int64=False)
    return refuse_past(inputs, settings.AOB_MAX_RUN_INPUTS_BYTES, field="inputs", error=error,
                       setting="AOB_MAX_RUN_INPUTS_BYTES", code=code) if inputs else 0


def run_start(*, owner: User, definition: Any = None, inputs: dict[str, Any] | None = None,
              workflow: Workflow | None = None, request_id: str = "", replay_of: Run | None = None,
              replay_from_node: str = "", reused: list[NodeRun] | None = None, artifact_id: str = "",
              record: Callable[[Run], None] | None = None, reuse_llm: bool = False, api_write: bool = False,
              key_origins: dict[str, str] | None = None, counted: list[NodeRun] | None = None) -> Run:
    """Validate and compile the frozen version, create the run and emit its entry nodes, in one
    transaction; executor messages go out after commit. ``artifact_id`` names a version already
    stored (a workflow's): its content is then read only if this process has not compiled it.
    ``record(run)`` runs in that transaction (an idempotency key's claim: if it raises, no run).
    ``api_write``: the start answers a state-changing API request whose throttle left the global
    write limit to the run limits' check (workflows/api/throttles.py): one round trip for both.
    ``key_origins``: whose name its requests' Idempotency-Keys carry where not its own (``Run.key_run``).
    ``counted``: a replay's loops' node runs its passes count on (``_loop_counts``), copied consumed."""
    if not owner.is_active:
        # a schedule's, a hook's or a running parent's start: a run as someone who cannot sign in
        # would be seen by no one but staff, and an approval it asks of them (the default) never decided
        raise Forbidden(f"{owner.username!r} is deactivated: no run starts as them", code="owner_inactive",
                        extra={"rule": "owner_active", "owner": owner.username})
    inputs = inputs if inputs is not None else {}
    inputs_bytes = run_inputs_check(inputs)
    stored = bool(artifact_id)
    text = ""  # a definition sent with the run, as its artifact stores it
    if not stored:
        text = canonical_json(definition) if isinstance(definition, dict) else ""
        artifact_id = text_id(text) if text else ""
    definition_bytes = _RUNNABLE.get(artifact_id)
    if definition_bytes is None:
        # A version is validated and compiled before its first run in this process; its content
        # hash then vouches for it (same content, same id), so repeat runs skip both.
        if definition is None:
            definition, definition_bytes = Artifact.objects.values_list("content", "size_bytes").get(pk=artifact_id)
        else:
            definition_bytes = size_of(text or canonical_json(definition))
        report = validate(definition, literal_urls=not stored)  # a stored version was judged at its save
        if not report.valid:
            raise validation_error(report, "the workflow version cannot run")
        _RUNNABLE[artifact_id] = definition_bytes
        while len(_RUNNABLE) > 4096:
            _RUNNABLE.pop(next(iter(_RUNNABLE)))
    # a definition sent with the run compiles from what was sent: this process may know it runnable
    # (_RUNNABLE) after its compiled graph was evicted and its artifact pruned with its last run. A
    # graph compiled here is kept only once the start passed its run limits, a stored version's as a
    # sent one's: each start refused a 429 kept one (a 1 MB definition's ~25 MB), evicting others,
    # and nothing bounds those starts
    ir = graphs.cached(artifact_id)
    if ir is None:
        if definition is None:
            definition = Artifact.objects.values_list("content", flat=True).get(pk=artifact_id)
        ir = compile_definition(definition, validated=True)
    _check_rate_limits(owner=owner, ir=ir, api_write=api_write)
    ir = graphs.keep(artifact_id, ir, definition_bytes)
    # a replay keeps a copy of each output it reuses: counted as its own from the start, as a
    # completion counts one (against AOB_MAX_RUN_OUTPUT_BYTES and what the owner's runs keep); and
    # of each reused node run's input; and every run keeps its definition (its artifact, PROTECT),
    # whatever named it: a tag's version is kept past the tag's delete by the runs that ran it. Both
    # counted from the start as what the owner's runs keep (``usage.kept_bytes``, workflows.storage)
    copied = [*(reused or []), *(counted or [])]
    reused_bytes = _reused_bytes(copied)
    kept_bytes = definition_bytes + _reused_input_bytes(copied)
    storage.check_room(owner_id=owner.pk, username=owner.username, adding=inputs_bytes + reused_bytes + kept_bytes)
    run = Run(owner=owner, workflow=workflow, tag=workflow.tag if workflow else "", base_artifact_id=artifact_id,
              current_artifact_id=artifact_id, inputs=inputs, inputs_bytes=inputs_bytes, request_id=request_id,
              usage={key: value for key, value in (("output_bytes", reused_bytes), ("kept_bytes", kept_bytes)) if value},
              replay_of=replay_of,
              replay_from_node=replay_from_node, reuse_llm=reuse_llm and replay_of is not None,
              key_origins=key_origins or None,
              # a replay's definition is its source's, with the agent nodes patches added to it: they
              # count against its spawn limit as they did there (a replay of a replay would grow without end)
              spawned_agents=replay_of.spawned_agents if replay_of is not None else 0,
              # a replayed sub-workflow's requests still go only where its parents' may (workflows.egress),
              # and its agents are bound by its parents' rules
              hosts_above=replay_of.hosts_above if replay_of is not None else None,
              rules_above=run_rules_above(replay_of) if replay_of is not None else None)
    # A usual start is one statement (coordinator.start_new), atomic by itself: a transaction only
    # when something else must commit with it. Inside a caller's transaction there is no savepoint:
    # a failed start fails the caller's transaction.
    try:
        _insert(run, text=text, reused=reused, counted=counted or [], record=record)
    except IntegrityError as exc:
        # the tag's delete committed while the start waited on its lock: the run would name a tag
        # that is gone (a 500 before); the delete's 404, as a start a moment later gets
        constraint = getattr(getattr(exc.__cause__, "diag", None), "constraint_name", None) or ""
        if workflow is not None and "workflow_id" in constraint:
            raise NotFound(f"workflow {workflow.tag!r} not found: it was deleted as the run started") from None
        raise
    return run


def _reused_bytes(reused: list[NodeRun]) -> int:
    """The bytes of the outputs a replay copies, as a completion counts its own (its canonical JSON):
    its output's artifact's size where it has one (what a worker or a decision completed), measured
    only for the rest (a gate's decision, a loop's bookkeeping: small), never reading them all."""
    sizes = dict(Artifact.objects.filter(pk__in={nr.output_artifact_id for nr in reused if nr.output_artifact_id})
                 .values_list("pk", "size_bytes"))
    unsized = [nr.pk for nr in reused if nr.output_artifact_id not in sizes]
    rest = NodeRun.objects.filter(pk__in=unsized).values_list("output", flat=True) if unsized else []
    return (sum(sizes[nr.output_artifact_id] for nr in reused if nr.output_artifact_id in sizes)
            + sum(size_of(canonical_json(output)) for output in rest if output is not None))


def _reused_input_bytes(reused: list[NodeRun]) -> int:
    """The bytes of the inputs a replay copies (``COPY_RECORDED``), as the database measured them."""
    if not reused:
        return 0
    return NodeRun.objects.filter(pk__in=[nr.pk for nr in reused]).aggregate(total=Sum("input_bytes"))["total"] or 0


# A replay's reused node runs take their source's input and output as stored: 48 outputs of 1.4 MB
# read, parsed and written again through the web process took 28 s and 715 MB (a red team's find).
COPY_RECORDED = """
UPDATE workflows_noderun AS copy SET input = source.input, output = source.output
  FROM workflows_noderun AS source,
       unnest(%(copies)s::bigint[], %(sources)s::bigint[]) AS pair(copy_id, source_id)
 WHERE copy.id = pair.copy_id AND source.id = pair.source_id
"""


def _insert(run: Run, *, text: str, reused: Any, record: Any, counted: list[NodeRun]) -> None:
    """``text``: the definition sent with the run, stored as its artifact with it ("": a version stored).
    ``counted`` are copied consumed, routing nothing: read only for a loop's count."""
    with transaction.atomic() if text or reused or record is not None else nullcontext():
        if text:
            keep_artifacts({run.base_artifact_id: (Artifact.Kind.DAG_VERSION, text)})
        if reused:
            run.save(force_insert=True)
            copies = NodeRun.objects.bulk_create([
                NodeRun(run=run, node_id=nr.node_id, iteration=nr.iteration, node_type=nr.node_type,
                        status=nr.status, output_artifact_id=nr.output_artifact_id, attempts=0, reused=True,
                        consumed=nr in counted, started_at=nr.started_at, finished_at=nr.finished_at)
                for nr in [*reused, *counted]
            ])
            with connection.cursor() as cursor:  # in the database: a source's outputs are never parsed here
                cursor.execute(COPY_RECORDED, {"copies": [c.pk for c in copies],
                                               "sources": [nr.pk for nr in [*reused, *counted]]})
            coordinator.start(run, [c.pk for c in copies])
        else:
            coordinator.start_new(run)
        if record is not None:
            record(run)


def _check_rate_limits(*, owner: User, ir: IR, api_write: bool) -> None:
    """Rate limits live in their own module (issue 8); imported lazily to keep the hop lean."""
    try:
        from workflows.ratelimit import check_run_start
    except ImportError:
        return
    check_run_start(user=owner, ir=ir, api_write=api_write)


def run_cancel(*, run: Run, user: User | None = None, reason: str = "") -> Run:
    """Cancel ``run`` as ``user``, who must be its owner (``run_owner_check``, the one check for
    every change: staff included, on every surface); ``user=None`` is the system (a parent run ending)."""
    if user is not None:
        run_owner_check(run=run, user=user, action="cancel it")
    with transaction.atomic():
        # its inputs (up to AOB_MAX_RUN_INPUTS_BYTES) stay in the database: the answer judges them by size
        run = run_locked(run.pk, action="cancel it", defer=("inputs",))
        if run.is_finished:
            raise Conflict(f"run is already {run.status}", code="run_finished", extra={"status": run.status})
        now = timezone.now()
        transitions.cancel_run(run.pk, run.status, run.owner_id, now, by=user.username if user else None,
                               reason=reason)
        run.status, run.finished_at = Run.Status.CANCELLED, now
    return run


def run_locked(run_id: Any, *, action: str, defer: tuple[str, ...] = ()) -> Run:
    """The run's row, locked for a person's change (the run first: workflows/engine/locks.py). A
    run removed while the change waited on its lock (a prune that committed meanwhile; retention
    skips a run someone holds, not one it already holds) is its 404, as a moment later, not a 500."""
    run = Run.objects.select_for_update().defer(*defer).filter(pk=run_id).first()
    if run is None:
        raise NotFound(f"run {run_id} not found: it was removed while the request to {action} waited for it",
                       extra={"run_id": str(run_id)})
    return run


def run_replay(*, run: Run, node_id: str, user: User, request_id: str = "", reuse_llm: bool = False,
               record: Callable[[Run], None] | None = None) -> Run:
    """A new run of the source's current definition that executes ``node_id`` and what follows it
    again, and reuses the recorded outputs of every other node that completed: those upstream,
    which must have, and the siblings beside them (a payment that went out beside the step that
    failed is the source's: run again, under a replay's new Idempotency-Key, the payee would take it
    for a second order). A sibling that began and did not settle (its payment sent, its answer cut
    off when the source failed) runs again under the source's key (``key_origins``: the source's
    own origin for it, down a chain of replays): the payee knows it for the same order. A human
    gate's decision is never reused for what runs again: a gate that leads to it, or whose
    decision it reads, asks again, and what follows that gate runs again after it; a gated branch
    the replay never meets is reused whole (``_runs_again``). With ``reuse_llm`` its agent nodes
    reuse the source's recorded model responses while their conversation matches the source's
    (agents/journal.py): no call, no cost.

    The source is read under a row lock in the start's transaction, so retention cannot remove it
    (nor the version and outputs only it refers to) between the read and the new run's insert;
    retention skips a locked run, and keeps one an unfinished replay refers to
    (retention/services.py). One already removed is a 404 naming it.

    Only the source's owner replays it (``run_owner_check``): the new run is ``user``'s, and
    carries the source's inputs and outputs. ``record`` is ``run_start``'s (an ``Idempotency-Key``'s
    claim, in the start's transaction)."""
    from .patches.provenance import replay_inherits  # the patches package reads runs: imported here

    run_owner_check(run=run, user=user, action="replay it")
    with transaction.atomic():
        # NO KEY UPDATE: holds off a delete, not another run's reference to this one
        source = Run.objects.select_for_update(no_key=True).filter(pk=run.pk).first()
        if source is None:
            raise NotFound(f"run {run.pk} not found: it was removed before the replay could start",
                           extra={"run_id": str(run.pk)})
        if source.deleting_at is not None:  # some of its node runs are gone: they would run again
            raise Conflict(f"run {run.pk} is being deleted (since {source.deleting_at.isoformat()}): it cannot be "
                           "replayed", code="run_being_deleted", extra={"run_id": str(run.pk), "rule": "deleting"})
        run_finished_check(status=source.status)
        ir = coordinator.load_ir(source)
        if node_id not in ir.nodes:
            raise NotFound(f"node {node_id!r} is not in run {source.pk}", extra={"field": "node_id"})
        # each node's latest node run only (DISTINCT ON): a loop's earlier iterations are not read;
        # nor its recorded values, which the copies take in the database (COPY_RECORDED)
        latest = {nr.node_id: nr for nr in NodeRun.objects.filter(run=source)
                  .order_by("node_id", "-iteration").distinct("node_id")
                  .only("pk", "node_id", "iteration", "node_type", "status", "attempts", "output_artifact_id",
                        "started_at", "finished_at", "error")
                  .annotate(given_back=RawSQL(given_back("attempt_log"), ()),  # noqa: S611 - no input
                            unsent=RawSQL(unsent("attempt_log"), ()))}  # noqa: S611 - no input
        completed = {n for n, nr in latest.items() if n in ir.nodes and nr.status == NodeRun.Status.COMPLETED}
        skipped = {n for n, nr in latest.items() if n in ir.nodes and nr.status == NodeRun.Status.SKIPPED}
        again = _runs_again(ir, node_id, completed | skipped)
        missing = sorted(n for n in ir.ancestors(node_id) - again if n not in completed)
        if missing:
            raise Conflict("cannot replay: upstream nodes did not complete in the source run",
                           code="replay_upstream_incomplete", extra={"nodes": missing})
        reused = [latest[n] for n in sorted(completed - again)]
        counted = _loop_counts(source, ir, again, {nr.node_id: nr.iteration for nr in reused})
        # what began beside it and did not settle goes on under the source's keys (what its remote
        # answered a failure (``NodeRun.unsettled``) is new work: new keys; the replayed node, what
        # follows it or a gate asked again, run again, keep the source's key where they send the
        # same request as its unsettled one: decided at send time, ``idempotency.going_on``). One
        # that went on in the source and never acted there (cancelled before its claim, failed before
        # it sent: ``NodeRun.acted``) goes on under the same key still: the work it went on with is
        # as unknown as it was
        went_on = {Run.origin(n, nr.iteration): Run.key_run(source.pk, source.key_origins, n, nr.iteration)
                   for n, nr in latest.items() if n in ir.nodes and n not in completed | skipped | again
                   and (NodeRun.unsettled(nr.status, nr.attempts, nr.error)
                        if NodeRun.acted(nr.status, nr.attempts, nr.given_back, nr.unsent)
                        else Run.goes_on(source.key_origins, n, nr.iteration))}
        replay = run_start(owner=user, artifact_id=source.current_artifact_id, inputs=source.inputs,
                           workflow=source.workflow, request_id=request_id, replay_of=source, replay_from_node=node_id,
                           reused=reused, counted=counted, reuse_llm=reuse_llm, record=record, key_origins=went_on)
        # its provenance is its own from the start: the source may be deleted once nothing unfinished replays it
        replay_inherits(replay=replay, source=source)
        return replay


def _loop_counts(source: Run, ir: IR, again: set[str], reused: dict[str, int]) -> list[NodeRun]:
    """The source's node runs of each loop that runs again at a pass its body's start was reused at
    (``reused``: the iteration of each node reused): what the loop's count at that pass went on from
    in the source (``planner._Planner._counted``: its latest below the pass, and its latest below it
    that ran), at most two a loop. The replay re-decides the loop at that pass with the count the
    source had there; counted from 0 again, a loop of two passes replayed from its loop node went
    round again and POSTed a third page."""
    below = Q()
    for lid, loop in ir.loops.items():
        if lid in again and loop.loop_back_to in reused:
            below |= Q(node_id=lid, iteration__lt=reused[loop.loop_back_to])
    if not below:
        return []
    rows = NodeRun.objects.filter(below, run=source).order_by("node_id", "-iteration").distinct("node_id")
    fields = ("pk", "node_id", "iteration", "node_type", "status", "attempts", "output_artifact_id", "started_at",
              "finished_at")
    found = [*rows.only(*fields), *rows.exclude(status=NodeRun.Status.SKIPPED).only(*fields)]
    return list({nr.pk: nr for nr in found}.values())


def _runs_again(ir: IR, node_id: str, settled: set[str]) -> set[str]:
    """What a replay from ``node_id`` runs again: the node, what follows it, and what reads an
    output of those (``$nodes.<id>``), edge or not (a reused output made from the source's would
    disagree with the replay's). A gate that leads to any of it, or to a node that did not settle in
    the source (neither completed nor skipped: ``settled``; it runs in the replay whatever, a payment
    in flight when the source failed), or whose decision any of it reads, asks again (a decision is never reused for what
    runs), and what follows that gate runs again after it. A gate none of it touches is reused with
    its branch: that branch's action was the source's, and a second approval would only repeat it.
    One walk forward and one back, each node once, however many gates."""
    readers: dict[str, set[str]] = {}
    for reader, node in ir.nodes.items():
        for read in referenced_nodes(node.config):
            readers.setdefault(read, set()).add(reader)
    again: set[str] = set()
    reaching: set[str] = set()  # nodes that lead to a node that runs again
    forward = [node_id]
    unfinished = [n for n in ir.nodes if n not in settled]  # run in the replay, reused or not
    while forward:
        grown, unfinished = unfinished, []
        while forward:
            current = forward.pop()
            if current not in again:
                again.add(current)
                grown.append(current)
                forward.extend(e.target for e in ir.out_edges[current])
                forward.extend(readers.get(current, ()))
        # a gate's decision, read directly: the approver's answer and form data
        read = {n for g in grown for n in referenced_nodes(ir.nodes[g].config) if n in ir.nodes}
        back = [source for n in grown for source in ir.predecessors(n)]
        while back:  # what leads to it (an output it reads is only data: a payment it reads is not repeated)
            current = back.pop()
            if current not in reaching:
                reaching.add(current)
                back.extend(ir.predecessors(current))
        forward = [n for n in reaching | read if n not in again and ir.nodes[n].type == gates.GATE]
    return again


# What a run's ceilings may be set to (``run_budget_raise``; the API's fields say the same).
BUDGET_MAX_TOKENS = 10**12
BUDGET_MAX_COST_USD = 10**9


def run_budget_raise(*, run: Run, user: User, max_tokens: int | None = None,
                     max_cost_usd: float | None = None) -> Run:
    """Set a run's LLM spend ceilings (its owner's decision) and resume every node paused on them,
    in this run and in the sub-workflows whose spend counts against it, in one transaction; a
    resumed agent replays its journal, so no model call is lost or made twice, and one still short
    pauses again. ``user`` must be the run's owner (``run_owner_check``)."""
    for field, value, most in (("max_tokens", max_tokens, BUDGET_MAX_TOKENS),
                               ("max_cost_usd", max_cost_usd, BUDGET_MAX_COST_USD)):
        if value is not None and not (isinstance(value, int | float) and not isinstance(value, bool)
                                      and math.isfinite(value) and 0 <= value <= most):
            raise ValidationFailed(f"{field} must be a number from 0 to {most}",
                                   extra={"field": field, "rule": "range", "minimum": 0, "maximum": most})
    run_owner_check(run=run, user=user, action="set its budget")
    with transaction.atomic():
        locked_below = runs_below_locked(run.pk)  # before this one (their order)
        run = run_locked(run.pk, action="set its budget", defer=("inputs",))
        if run.is_finished:
            raise Conflict(f"run is already {run.status}", code="run_finished", extra={"status": run.status})
        budget = {**run.budget, **run.ceilings}
        if max_tokens is not None:
            budget["max_tokens"] = max_tokens
        if max_cost_usd is not None:
            budget["max_cost_usd"] = max_cost_usd
        run.budget = budget
        Run.objects.filter(pk=run.pk).update(budget=budget)
        _resume_budget_paused(run, {"by": user.username, "budget": run.ceilings})
        # a run below is told how far up the raise was, not that run's id or ceilings: one asked in a
        # child only is told nothing of its parent (as its pause, ``agents.budget``)
        above = {str(run.pk): 0}
        for each in reversed(locked_below):  # a level after another
            above[str(each.pk)] = above.get(str(each.budget.get(Run.WITHIN)), 0) + 1
        for each in locked_below:
            _resume_budget_paused(each, {"by": user.username, "above": above[str(each.pk)]})
    return run


def run_budget_wake(*, node_runs: dict[str, list[int]], released: bool) -> None:
    """Nodes paused on a budget whose next call fits now (``agents.budget`` judges that) go on, each
    run in a transaction of its own, its event saying whether a release made room (else the sweep
    found it fits; which run released is not said: it may be a parent's or a sibling's). One that no
    longer fits by the time it calls pauses again; no model call is lost or made twice (the journal)."""
    for pk, paused in node_runs.items():
        with transaction.atomic():
            run = Run.objects.select_for_update().filter(pk=pk).exclude(status__in=Run.FINISHED).first()
            if run is not None:
                _resume_budget_paused(run, {"released": True} if released else {},
                                      kind=Event.Type.BUDGET_FREED, only=paused)


def _resume_budget_paused(run: Run, data: dict[str, Any], kind: str = Event.Type.BUDGET_RAISED,
                          only: list[int] | None = None) -> None:
    """Queue a locked run's nodes paused on a budget (or those of ``only``) again, with an event
    (``budget_raised`` in the run raised; in another run only when it had some)."""
    now = timezone.now()
    paused = list(NodeRun.objects.select_for_update().filter(run=run, status=NodeRun.Status.WAITING,
                                                             wait_reason="budget",
                                                             **({"pk__in": only} if only is not None else {})))
    if not paused and ("above" in data or kind != Event.Type.BUDGET_RAISED):
        return
    transitions.move_node_runs(Q(pk__in=[nr.pk for nr in paused], wait_reason="budget"), NodeRun.Status.QUEUED,
                               sources=[NodeRun.Status.WAITING], wait_reason="", queued_at=now,
                               dispatched_at=now, available_at=None)
    events.append(run.pk, run.owner_id, [(kind, "", {**data, "resumed": [nr.node_id for nr in paused]})])
    ir = coordinator.load_ir(run)
    publish_after_commit(Dispatch(nr.pk, nr.node_id, nr.node_type, str(run.pk),
                                  ir.nodes[nr.node_id].timeout_ms if nr.node_id in ir.nodes else None)
                         for nr in paused)
    if paused:
        coordinator.refresh(run)


def run_hand_down(run_id: Any) -> dict[str, Any]:
    """What a child a run's ``workflow`` node starts now runs under beside its own definition, as
    the child's fields (``handed_down``) from the run's current definition (its patches included)
    and what the runs above it handed down (``run_workflow``, ``patches._hand_down``)."""
    run = Run.objects.only("current_artifact_id", "hosts_above", "rules_above", "budget").get(pk=run_id)
    metadata = Artifact.objects.values_list("content__metadata", flat=True).get(pk=run.current_artifact_id)
    return handed_down(metadata, hosts_above=run.hosts_above, rules_above=run_rules_above(run))


def handed_down(metadata: Any, *, hosts_above: Any, rules_above: Any) -> dict[str, Any]:
    """What a run whose definition has ``metadata`` hands down to the runs its ``workflow`` nodes
    start, as it hands them its spend ceilings: the ``allowed_hosts`` lists binding it
    (``Run.hosts_above``, workflows.egress) and its strictest agent rules (``Run.rules_above``:
    ``{}`` when none, a child's rules known)."""
    from .patches.policy import rules_handed_down  # the patches package reads runs: imported here
    return {"hosts_above": [list(hosts) for hosts in egress.binding(metadata, hosts_above)] or None,
            "rules_above": rules_handed_down(metadata, rules_above) or {}}


def run_rules_above(run: Run, depth: int | None = None) -> Any:
    """``Run.rules_above`` as every reader takes it (a patch's judgement, a child's start, a
    replay): as stored; or, for a child whose is NULL (a worker on the code before migration
    ``workflows/0036`` started it, handing down ``allowed_hosts`` only; or it started before the
    migration), what its parents hand down now, stored with what the reader commits (a refused
    patch's rolls back: read again by the next, two queries a run above). A top run's is NULL, no
    query. A parent gone, or a chain past ``AOB_SUBWORKFLOW_MAX_DEPTH``: the strictest."""
    from .patches.policy import STRICTEST, rules_handed_down  # the patches package reads runs: imported here
    if run.rules_above is not None or not run.within:
        return run.rules_above
    depth = settings.AOB_SUBWORKFLOW_MAX_DEPTH if depth is None else depth
    parent = Run.objects.only("current_artifact_id", "rules_above", "budget").filter(pk=run.within).first()
    if parent is None or depth <= 0:
        rules: Any = STRICTEST
    else:
        metadata = Artifact.objects.values_list("content__metadata", flat=True).get(pk=parent.current_artifact_id)
        rules = rules_handed_down(metadata, run_rules_above(parent, depth - 1)) or {}
    # a person's patch of a parent handing its rules down meanwhile wrote them: theirs stand
    Run.objects.filter(pk=run.pk, rules_above__isnull=True).update(rules_above=rules)
    run.rules_above = rules
    return rules


def runs_below_locked(run_id: Any) -> list[Run]:
    """The unfinished runs below ``run_id`` (``runs_below``), each locked, the deepest first;
    a change to a run and the runs below takes them before the run itself: agents.budget locks a
    child before its parent, so no two paths wait on each other."""
    locked = (Run.objects.select_for_update().filter(pk=pk).first() for pk in reversed(runs_below(run_id)))
    return [r for r in locked if r is not None and not r.is_finished]


def runs_below(run_id: Any) -> list[Any]:
    """The ids of the unfinished runs below ``run_id``: those its ``workflow`` nodes started, and
    theirs (their spend counts against its ceilings), down the nesting, a level after another (each
    in the order of its ids)."""
    found: list[Any] = []
    level = [str(run_id)]
    for _ in range(settings.AOB_SUBWORKFLOW_MAX_DEPTH):
        level = [str(pk) for pk in Run.objects.exclude(status__in=Run.FINISHED)
                 .filter(**{f"budget__{Run.WITHIN}__in": level}).order_by("pk").values_list("pk", flat=True)]
        if not level:
            break
        found += level
    return found


def run_output_store(*, run_id: str) -> bool:
    """Compute a completed run's pending ``metadata.output`` and store it: an artifact, or the
    error (``run_output.settle``). False when it was not pending (stored already: a repeated
    message, or the sweeper's ask and the decision's both arrived). Each attempt is counted before
    it starts (``output_asks``), so one a worker dies in counts: past ``AOB_MAX_ATTEMPTS_ON_LOST``
    the output ends as ``OutputFailed``/``worker_lost`` instead of being tried again."""
    if not Run.objects.filter(pk=run_id, output_asked_at__isnull=False).update(output_asks=F("output_asks") + 1):
        return False
    run = Run.objects.filter(pk=run_id, output_asked_at__isnull=False).first()
    if run is None:
        return False
    if run.output_asks > settings.AOB_MAX_ATTEMPTS_ON_LOST:
        with transaction.atomic():
            return run_output.settle(run.pk, run.owner_id, artifact_id=None, error=run_output.lost(run.output_asks - 1))
    value, error = run_output_compute(run)
    with transaction.atomic():
        if error is not None:
            return run_output.settle(run.pk, run.owner_id, artifact_id=None, error=error)
        text = canonical_json(value)
        try:  # the one ceiling of a stored output, a node's or the run's (engine/outputs.py)
            refuse_large_output(size_of(text))
        except OutputTooLarge as exc:
            error = bounded_error({"error_type": exc.code, "rule": exc.extra["rule"],
                                   "message": f"metadata.output: {exc.message}", "limit": exc.extra["limit"],
                                   "bytes": exc.extra["bytes"]})
            return run_output.settle(run.pk, run.owner_id, artifact_id=None, error=error)
        artifact_id = text_id(text)
        keep_artifacts({artifact_id: (Artifact.Kind.NODE_IO, text)})
        return run_output.settle(run.pk, run.owner_id, artifact_id=artifact_id, error=None, size=size_of(text))
