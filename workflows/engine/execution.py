"""The executor's side of a step: claim a node run with a compare-and-set, run the registered
executor, record the outcome once. Executors never decide what runs next."""

from __future__ import annotations

import contextvars
import dataclasses
import json
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Final, Literal

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, connection, transaction
from django.db.models import F, JSONField, Min, Value
from django.db.models.expressions import CombinedExpression
from django.utils import timezone
from psycopg.errors import ForeignKeyViolation

from aob_project.context import bind, current_request_id
from aob_project.exceptions import AobError
from aob_project.metrics import NODE_DURATION, NODE_HELD, NODE_QUEUE
from workflows import egress, registry
from workflows.definition.ir import attempts_of, backoff_ms_of, retry_after_ms
from workflows.definition.references import referenced_nodes, resolve_counted
from workflows.definition.validation import resolved_config_problem
from workflows.limits import bounded_error
from workflows.models import Artifact, Event, NodeRun, Run, canonical_json, size_of, text_id
from workflows.registry import NodeContext
from workflows.storage import kept_added

from . import admission, events, heartbeat, locks, owners, planner, run_inputs, time_limit, transitions
from .artifacts import keep_artifacts
from .completion import Completion
from .coordinator import graph
from .dispatch import Dispatch, coordinate_after_commit, enforces, publish_after_commit, task_timeout_ms
from .outputs import OUTPUT_BYTES_ADDED, OutputTooLarge, count_output, refuse_large_output, strict_json

logger = logging.getLogger(__name__)


CLAIM = """
WITH locked AS (  -- the run row first, then the node run (workflows/engine/locks.py)
    SELECT id, owner_id, request_id FROM workflows_run
     WHERE id = (SELECT run_id FROM workflows_noderun WHERE id = %(id)s AND status = 'queued')
       AND status IN ('queued', 'running', 'waiting_for_approval')
       FOR UPDATE
), due AS (
    SELECT queued.id, queued.node_id, queued.iteration, queued.node_type, queued.wait_reason AS was, locked.owner_id
      FROM workflows_noderun queued, locked
     WHERE queued.id = %(id)s AND queued.run_id = locked.id
), at_limit AS ({at_limit}
), held AS (  -- the owner runs as many of this type as it may: held queued for a slot (admission.py)
    UPDATE workflows_noderun waiting SET wait_reason = 'slot', held_for = due.owner_id, dispatched_at = %(now)s
      FROM due
     WHERE waiting.id = due.id AND waiting.status = 'queued' AND EXISTS (SELECT 1 FROM at_limit)
       AND (waiting.available_at IS NULL OR waiting.available_at <= %(due)s)
 RETURNING waiting.id
), told AS (  -- its first hold says so in the run's events
    UPDATE workflows_run r SET event_seq = r.event_seq + 1
      FROM held, due
     WHERE r.id = (SELECT id FROM locked) AND due.was <> 'slot'
 RETURNING r.id, r.event_seq
), held_event AS (
    INSERT INTO workflows_event (run_id, seq, type, node_id, data, request_id, created_at)
    SELECT told.id, told.event_seq, %(held_type)s, due.node_id,
           jsonb_build_object('iteration', due.iteration, 'limit', %(slots)s),
           COALESCE(NULLIF(%(request_id)s, ''), locked.request_id), %(now)s
      FROM told, due, locked
 RETURNING seq, request_id
), claimed AS (
    UPDATE workflows_noderun nr
       SET status = 'running', attempts = nr.attempts + 1, started_at = %(now)s, wait_reason = '', held_for = NULL,
           lease_expires_at = clock_timestamp() + make_interval(secs => %(lease_s)s)  -- the database clock
      FROM locked r
     WHERE nr.id = %(id)s AND nr.status = 'queued' AND r.id = nr.run_id
       AND (nr.available_at IS NULL OR nr.available_at <= %(due)s) AND NOT EXISTS (SELECT 1 FROM at_limit)
 RETURNING nr.run_id, nr.node_id, nr.node_type, nr.iteration, nr.attempts, nr.queued_at
), bumped AS (
    UPDATE workflows_run r
       SET event_seq = r.event_seq + 1,
           status = CASE WHEN r.status IN ('queued', 'waiting_for_approval') THEN 'running' ELSE r.status END,
           started_at = COALESCE(r.started_at, %(now)s)
      FROM claimed
     WHERE r.id = claimed.run_id
 RETURNING r.id, r.event_seq, r.owner_id, {inputs_head} AS inputs, r.current_artifact_id, r.request_id,
           r.hosts_above, r.budget->>%(within)s AS parent, r.key_origins
), started AS (
    INSERT INTO workflows_event (run_id, seq, type, node_id, data, request_id, created_at)
    SELECT bumped.id, bumped.event_seq, %(event_type)s, claimed.node_id,
           jsonb_build_object('iteration', claimed.iteration, 'attempt', claimed.attempts),
           COALESCE(NULLIF(%(request_id)s, ''), bumped.request_id), %(now)s
      FROM claimed, bumped
 RETURNING seq, request_id
)
SELECT claimed.run_id, claimed.node_id, claimed.node_type, claimed.iteration, claimed.attempts, claimed.queued_at,
       bumped.owner_id, bumped.inputs, bumped.current_artifact_id, started.seq, started.request_id, false,
       (SELECT owner.is_active FROM {users} owner WHERE owner.id = bumped.owner_id),  -- engine.owners
       bumped.hosts_above, bumped.parent,  -- a sub-workflow's (_below_ended)
       bumped.key_origins
  FROM claimed, bumped, started
UNION ALL  -- held: the node_held event's seq when this was its first hold
SELECT locked.id, due.node_id, due.node_type, due.iteration, NULL, NULL, due.owner_id, NULL, NULL, held_event.seq,
       held_event.request_id, true, NULL, NULL, NULL, NULL
  FROM held, due, locked LEFT JOIN held_event ON true
""".replace("{at_limit}", admission.AT_LIMIT).replace("{inputs_head}", run_inputs.HEAD_SQL).replace(
    "{users}", User._meta.db_table)


# The moves CLAIM and COMPLETE make in SQL, as the transition table allows them.
transitions.check_node_run_move(NodeRun.Status.QUEUED, NodeRun.Status.RUNNING)
transitions.check_node_run_move(NodeRun.Status.RUNNING, NodeRun.Status.COMPLETED)
transitions.check_run_move(Run.Status.QUEUED, Run.Status.RUNNING)
transitions.check_run_move(Run.Status.WAITING_FOR_APPROVAL, Run.Status.RUNNING)


def claim(node_run_id: int) -> NodeContext | Literal["held"] | None:
    """``queued → running`` with a compare-and-set, the run marked running and ``node_started``
    appended, in one statement (one round trip on the hot path). None when the message is a
    duplicate or the node run is no longer ours (cancelled, finished, not yet due); ``CLAIM_HELD`` when
    its owner runs as many of its type as it may (``admission``): it waits queued for a slot."""
    now = timezone.now()
    slots = admission.slots()
    params: dict[str, Any] = {"now": now, "lease_s": settings.AOB_LEASE_S, "id": node_run_id, "due": now + timedelta(milliseconds=50),
              "request_id": current_request_id(), "event_type": Event.Type.NODE_STARTED.value, "slots": slots,
              "held_type": Event.Type.NODE_HELD.value, "within": Run.WITHIN}
    if slots:  # the owner's slots counted after the claims before this one committed (admission.OWNER_SLOTS)
        rows = locks.pipelined(admission.OWNER_SLOTS, params, CLAIM, params)
    else:
        with connection.cursor() as cursor:
            cursor.execute(CLAIM, params)
            rows = cursor.fetchall()
    if not rows:
        return None
    (run_id, node_id, node_type, iteration, attempts, queued_at, owner_id, inputs, artifact_id, seq,
     request_id, held, owner_active, hosts_above, parent, key_origins) = rows[0]
    if held:
        NODE_HELD.labels(node_type).inc()
        logger.debug("node_run.held", extra={"node_run_id": node_run_id})
        if seq is not None:  # its first hold: the run's page and its watchers are told why it waits
            events.push(str(run_id), owner_id, [events.frame(run_id, seq, Event.Type.NODE_HELD, node_id, {
                "iteration": iteration, "limit": slots}, request_id, now)])
        return CLAIM_HELD
    bind(run_id=str(run_id), node_id=node_id, node_run_id=node_run_id, node_type=node_type, request_id=request_id,
         owner_id=owner_id)
    events.push(str(run_id), owner_id, [events.frame(run_id, seq, Event.Type.NODE_STARTED, node_id,
                                                     {"iteration": iteration, "attempt": attempts}, request_id, now)])
    if parent is not None and _below_ended(run_id, owner_id, parent):
        return None  # its tree has ended: it was cancelled with this node run, which does not begin
    if attempts == 1 and queued_at is not None:
        NODE_QUEUE.labels(node_type).observe(max(0.0, (now - queued_at).total_seconds()))
    # One INFO line per node outcome (completed, failed, retrying, lease lost); the start is the
    # ``node_started`` event, and a log line per step costs a node as much as its expression.
    logger.debug("node_run.started", extra={"attempt": attempts, "iteration": iteration})
    if isinstance(inputs, str):  # Django's psycopg setup leaves jsonb as text in raw queries
        inputs = json.loads(inputs)
    if isinstance(hosts_above, str):
        hosts_above = json.loads(hosts_above)
    if isinstance(key_origins, str):
        key_origins = json.loads(key_origins)
    inputs = run_inputs.of(run_id, inputs)  # large ones are not in the claim's answer
    ir = graph(artifact_id)
    node = ir.nodes.get(node_id)
    timeout_ms = node.timeout_ms if node else None
    raw_config = node.config if node else {}
    refs = referenced_nodes(raw_config)
    spec = registry.get(node_type) if node else None
    if spec is not None and spec.reads_upstream:
        refs |= set(ir.predecessors(node_id))
    outputs = _outputs(run_id, ir, node_id, iteration, refs) if refs else {}
    # the config is resolved in ``execute``, where a config past its byte cap fails the node
    return NodeContext(run_id=str(run_id), node_run_id=node_run_id, node_id=node_id, node_type=node_type,
                       iteration=iteration, attempt=attempts, config=raw_config, raw_config=raw_config, inputs=inputs,
                       outputs=outputs, timeout_s=(timeout_ms / 1000) if timeout_ms else None, owner_id=owner_id,
                       definition={"retry": node.retry if node else None, "timeout_ms": timeout_ms},
                       owner_active=bool(owner_active), hosts=egress.binding(ir.metadata, hosts_above),
                       key_run_id=Run.key_run(run_id, key_origins, node_id, iteration),
                       goes_on=Run.goes_on(key_origins, node_id, iteration))


def _below_ended(run_id: Any, owner_id: int, parent: Any) -> bool:
    """Whether a sub-workflow's run, its node run just claimed, is in a tree that has ended: then it
    is cancelled here (``transitions.cancel_below_ended``), with the node run, before the node
    begins. A parent's cancel reaches its children later, on the maintenance queue: every next step
    of a child (dispatched by its decision, a gate's deadline, a grandchild's end, a retry, the
    sweeper) is claimed first. Asked of a run with a parent only: a top run's claim is one statement."""
    with transaction.atomic():
        status = locks.lock_run(run_id)  # the child first, then the runs above (locks.ended_above)
        if status is None or status in Run.FINISHED:
            return True  # ended (or removed) since the claim: its node runs were ended with it
        return transitions.cancel_below_ended(run_id, status, owner_id, parent=parent) is not None


def _outputs(run_id: Any, ir: Any, node_id: str, iteration: int, refs: set[str]) -> dict[str, Any]:
    """What a node run reads of the nodes it refers to: each one's latest node run (a node after a
    loop of thousands reads one row of it), but below the next pass of a loop that runs both again
    where one has begun (``planner.read_bound``: a payment reads the invoice of its own pass)."""
    backs = {start for ref in refs for start in planner.pass_starts(ir, node_id, ref)}
    nexts = dict(NodeRun.objects.filter(run_id=run_id, node_id__in=backs, iteration__gt=iteration).order_by()
                 .values("node_id").annotate(next=Min("iteration")).values_list("node_id", "next")) if backs else {}
    bounds = {ref: planner.read_bound(ir, node_id, ref, nexts.get) for ref in refs}
    latest = [ref for ref, bound in bounds.items() if bound is None]
    outputs = dict(NodeRun.objects.filter(run_id=run_id, node_id__in=latest).order_by("node_id", "-iteration")
                   .distinct("node_id").values_list("node_id", "output")) if latest else {}
    for ref, bound in bounds.items():
        if bound is not None:
            found = (NodeRun.objects.filter(run_id=run_id, node_id=ref, iteration__lt=bound).order_by("-iteration")
                     .values_list("output", flat=True)[:1])
            if found:
                outputs[ref] = found[0]
    return outputs


def _store_artifact(text: str) -> str:
    """Store an output already in ``canonical_json`` form; its id."""
    aid = text_id(text)
    keep_artifacts({aid: (Artifact.Kind.NODE_IO, text)})
    return aid


COMPLETE = """
WITH locked AS (  -- the run row first, then the node run (workflows/engine/locks.py)
    SELECT id FROM workflows_run WHERE id = %(run_id)s FOR UPDATE
), stored AS (
    INSERT INTO workflows_artifact (id, kind, content, size_bytes, created_at)
    VALUES (%(aid)s, 'node_io', %(output)s::jsonb, %(size)s, %(now)s) ON CONFLICT (id) DO NOTHING
), was AS (  -- its resolved input as counted before (an earlier attempt's, a pause's), read with the row
    SELECT COALESCE(input_bytes, 0) AS bytes FROM workflows_noderun WHERE id = %(id)s
), done AS (
    UPDATE workflows_noderun
       SET status = 'completed', finished_at = %(now)s, lease_expires_at = NULL, input = %(input)s::jsonb,
           output = %(output)s::jsonb, output_artifact_id = %(aid)s, attempt_log = attempt_log || %(entry)s::jsonb
     WHERE id = %(id)s AND status = 'running' AND attempts = %(attempt)s AND run_id IN (SELECT id FROM locked)
 RETURNING run_id, COALESCE(input_bytes, 0) AS input_bytes  -- as the database measured it (migration 0020)
), bumped AS (
    UPDATE workflows_run r SET event_seq = r.event_seq + 1, usage = {added}
      FROM done, was WHERE r.id = done.run_id
 RETURNING r.event_seq, r.status, r.current_artifact_id, r.patch_seq,
           (r.usage->>'output_bytes')::bigint AS output_bytes, r.budget ? %(within)s AS below
), appended AS (
    INSERT INTO workflows_event (run_id, seq, type, node_id, data, request_id, created_at)
    SELECT %(run_id)s, bumped.event_seq, %(event_type)s, %(node_id)s, %(data)s::jsonb, %(request_id)s, %(now)s
      FROM bumped
    RETURNING seq
)
SELECT appended.seq, bumped.status, bumped.current_artifact_id, bumped.patch_seq, bumped.output_bytes,
       bumped.below, {waiting} AS waiting  -- for its slot, now free (admission.py)
  FROM appended, bumped
""".replace("{waiting}", admission.WAITING).replace(
    "{added}", kept_added(OUTPUT_BYTES_ADDED, "done.input_bytes - was.bytes"))  # the owner's storage (storage.py)


def complete(ctx: NodeContext, output: Any, started: float) -> Completion | None:
    """Record the output once: artifact, ``running → completed`` (compare-and-set on this attempt)
    and ``node_completed``, in one statement. Returns what the coordinator needs to route it
    without reading it back (a ``Completion``); None when the result is discarded (the node run
    was cancelled or re-queued meanwhile). Raises ``OutputTooLarge`` before anything is written
    when the output passes ``AOB_MAX_NODE_OUTPUT_BYTES`` (measured on the text it stores)."""
    now = timezone.now()
    duration_ms = int((time.monotonic() - started) * 1000)
    text = canonical_json(output)
    size = size_of(text)
    refuse_large_output(size)
    aid = text_id(text)
    data = {"iteration": ctx.iteration, "attempt": ctx.attempt, "output_artifact_id": aid}
    request_id = current_request_id()
    params: dict[str, Any] = {
        "aid": aid, "output": text, "size": size, "now": now, "input": canonical_json(ctx.config),
        "entry": json.dumps([{"attempt": ctx.attempt, "status": "completed", "duration_ms": duration_ms}]),
        "id": ctx.node_run_id, "attempt": ctx.attempt, "run_id": ctx.run_id, "node_id": ctx.node_id,
        "data": json.dumps(data), "request_id": request_id, "event_type": Event.Type.NODE_COMPLETED.value,
        "owner_id": ctx.owner_id, "node_type": ctx.node_type, "within": Run.WITHIN}
    for last in (False, True):
        try:
            with connection.cursor() as cursor:  # autocommit: one statement, nothing half written
                cursor.execute(COMPLETE, params)
                row = cursor.fetchone()
            break
        except IntegrityError as exc:
            # An artifact with this output, stored before and referenced no more, was pruned between
            # the statement's insert (which found it) and the check of its reference: once more
            # stores it afresh, and the node's work is not done again by another attempt.
            if last or not isinstance(exc.__cause__, ForeignKeyViolation):
                raise
    NODE_DURATION.labels(ctx.node_type, "completed").observe(time.monotonic() - started)
    logger.info("node_run.completed", extra={"duration_ms": duration_ms, "applied": row is not None,
                                             "attempt": ctx.attempt, "iteration": ctx.iteration})
    if row is None:
        return None
    seq, run_status, artifact_id, patch_seq, output_bytes, below, waiting = row
    if waiting:  # a statement of its own, after this one committed: no lock held while it takes one
        try:
            admission.release(ctx.owner_id, ctx.node_type)
        except Exception:  # the sweeper releases it (admission.release_unreleased)
            logger.exception("admission.release_failed", extra={"node_type": ctx.node_type})
    events.push(ctx.run_id, ctx.owner_id, [events.frame(ctx.run_id, seq, Event.Type.NODE_COMPLETED, ctx.node_id, data,
                                                        request_id, now)])
    return Completion(node_run_id=ctx.node_run_id, run_id=ctx.run_id, node_id=ctx.node_id, node_type=ctx.node_type,
                      iteration=ctx.iteration, run_status=run_status, artifact_id=artifact_id, patch_seq=patch_seq,
                      output_bytes=output_bytes or 0, below=bool(below))


# An attempt that leaves ``running`` other than completed (``_finish``): its resolved input is kept
# (and counted for the owner's storage, by what it changed since it was last counted) as COMPLETE's.
FINISH = f"""
WITH was AS (
    SELECT COALESCE(input_bytes, 0) AS bytes FROM workflows_noderun WHERE id = %(id)s
), moved AS (
    UPDATE workflows_noderun
       SET status = %(status)s, finished_at = %(now)s, lease_expires_at = NULL, input = %(input)s::jsonb,
           attempt_log = attempt_log || %(entry)s::jsonb, error = %(error)s::jsonb,
           available_at = COALESCE(%(available_at)s, available_at),
           dispatched_at = COALESCE(%(dispatched_at)s, dispatched_at)
     WHERE id = %(id)s AND status = 'running' AND attempts = %(attempt)s
 RETURNING run_id, COALESCE(input_bytes, 0) AS input_bytes
), counted AS (
    UPDATE workflows_run r SET usage = {kept_added("r.usage", "moved.input_bytes - was.bytes")}
      FROM moved, was WHERE r.id = moved.run_id AND moved.input_bytes <> was.bytes
)
SELECT count(*) FROM moved
"""  # noqa: S608 - no input


def _finish(ctx: NodeContext, now: Any, *, status: str, entry: dict[str, Any], error: dict[str, Any] | None = None,
            available_at: Any = None, dispatched_at: Any = None) -> bool:
    """Leave ``running`` (this attempt only) with the attempt appended to the log in place."""
    transitions.check_node_run_move(NodeRun.Status.RUNNING, status)
    with connection.cursor() as cursor:
        cursor.execute(FINISH, {
            "status": status, "now": now, "input": canonical_json(ctx.config),
            "entry": json.dumps([entry], default=str),
            "error": json.dumps(error, default=str) if error is not None else None,
            "available_at": available_at, "dispatched_at": dispatched_at, "id": ctx.node_run_id,
            "attempt": ctx.attempt})
        return cursor.fetchone()[0] == 1


# An attempt's resolved input kept before it acts outside (``kept_before_sending``), counted for the
# owner's storage as FINISH counts it (the run's row first: workflows/engine/locks.py).
KEEP_INPUT = f"""
WITH locked AS (
    SELECT id FROM workflows_run WHERE id = %(run_id)s FOR UPDATE
), was AS (
    SELECT COALESCE(input_bytes, 0) AS bytes FROM workflows_noderun WHERE id = %(id)s
), kept AS (
    UPDATE workflows_noderun SET input = %(input)s::jsonb
     WHERE id = %(id)s AND status = 'running' AND attempts = %(attempt)s AND run_id IN (SELECT id FROM locked)
 RETURNING run_id, COALESCE(input_bytes, 0) AS input_bytes
), counted AS (
    UPDATE workflows_run r SET usage = {kept_added("r.usage", "kept.input_bytes - was.bytes")}
      FROM kept, was WHERE r.id = kept.run_id AND kept.input_bytes <> was.bytes
)
SELECT count(*) FROM kept
"""  # noqa: S608 - no input


def kept_before_sending(ctx: NodeContext) -> bool:
    """Keep this attempt's resolved input before it acts outside (its request goes out, its child
    starts: ``idempotency.decided_before_acting``): a node run stopped mid-request (its run failed
    or was cancelled beside it, its worker lost) keeps what it sent, which a replay compares its
    own with (``idempotency.going_on``). False when the node run is no longer this attempt's
    (cancelled, moved on): then nothing may be sent."""
    with connection.cursor() as cursor:
        cursor.execute(KEEP_INPUT, {"run_id": ctx.run_id, "id": ctx.node_run_id, "attempt": ctx.attempt,
                                    "input": canonical_json(ctx.config)})
        return cursor.fetchone()[0] == 1


def fail(ctx: NodeContext, error: dict[str, Any], started: float) -> str:
    """Record a failure; a transient one with attempts left goes back to the queue with backoff.
    Returns ``failed``, ``retrying`` or ``discarded``."""
    now = timezone.now()
    error = strict_json(error, non_finite="null")
    retry = (ctx.definition or {}).get("retry") or {}
    max_attempts = attempts_of(retry)
    entry = {"attempt": ctx.attempt, "status": "failed", "error": error,
             "duration_ms": int((time.monotonic() - started) * 1000)}
    NODE_DURATION.labels(ctx.node_type, "failed").observe(time.monotonic() - started)
    logger.info("node_run.failed", extra={"error_type": error.get("error_type"), "attempt": ctx.attempt})
    if time_limit.fired():  # it may have struck mid-statement: the failure is written on a fresh connection
        connection.close()
    with time_limit.held(), transaction.atomic():
        locks.lock_run(ctx.run_id)
        tried = tries(ctx.node_run_id, ctx.attempt) if error.get("transient") else ctx.attempt
        if error.get("transient") and tried < max_attempts:
            backoff_ms = max(backoff_ms_of(retry, tried), retry_after_ms(error))
            moved = _finish(ctx, None, status=NodeRun.Status.QUEUED, entry=entry, error=error,
                            available_at=now + timedelta(milliseconds=backoff_ms), dispatched_at=now)
            if not moved:
                return "discarded"
            events.append(ctx.run_id, ctx.owner_id, [(Event.Type.NODE_RETRYING, ctx.node_id, {
                "iteration": ctx.iteration, "attempt": ctx.attempt, "error": error, "backoff_ms": backoff_ms})])
            publish_after_commit([Dispatch(ctx.node_run_id, ctx.node_id, ctx.node_type, ctx.run_id,
                                           (ctx.definition or {}).get("timeout_ms"), countdown_s=backoff_ms / 1000)])
            admission.release(ctx.owner_id, ctx.node_type)  # its slot is free while it waits (the last lock)
            return "retrying"
        moved = _finish(ctx, now, status=NodeRun.Status.FAILED, entry=entry, error=error)
        if moved:
            events.append(ctx.run_id, ctx.owner_id, [(Event.Type.NODE_FAILED, ctx.node_id, {
                "iteration": ctx.iteration, "attempt": ctx.attempt, "error": error})])
            admission.release(ctx.owner_id, ctx.node_type)  # the last lock this transaction takes
    return "failed" if moved else "discarded"


# Whether this attempt's work was answered outside (``answered``), or its type's function returned:
# a timeout from there on ends the node for good where its type does not send its action again.
_ANSWERED: contextvars.ContextVar[bool] = contextvars.ContextVar("aob_answered", default=False)


def answered() -> None:
    """An executor's word that its request went out and was answered (an http node's response in
    hand): the node's ``timeout_ms`` firing from here on (its output made, its secrets masked, its
    JSON checked) fails it for good where its type does not repeat the request (``registry.repeats``),
    as a lost attempt's does. A retry sent a POST without a key again, its answer already in hand."""
    _ANSWERED.set(True)


def _timed_out(ctx: NodeContext) -> dict[str, Any]:
    """The failure of an attempt its ``timeout_ms`` stopped: the node's retry may run it again,
    unless its request was answered and its type does not repeat it. A type that does nothing
    outside (``registry.acts``: a transform on a worker) is run again as safely as the first time."""
    repeats = registry.repeats(ctx.node_type, ctx.config).flags
    if not _ANSWERED.get() or not registry.acts(ctx.node_type) or (repeats and repeats[0]):
        return error_payload(SoftTimeLimitExceeded())
    return {"error_type": "Timeout", "transient": False, "attempt": ctx.attempt,
            "message": "node exceeded its timeout_ms after its request was answered, while its output was made: "
                       "it is not run again, as this node does not repeat its request (an http node's: on_lost: "
                       "fail, or no idempotency key); raise timeout_ms, then replay or skip it"}


def error_payload(exc: BaseException) -> dict[str, Any]:
    """Why a node failed, as it is stored (``bounded_error``, strict JSON: a message may quote what
    ``jsonb`` refuses), on a worker and in the decision (``pure.evaluate``) alike."""
    if isinstance(exc, SoftTimeLimitExceeded):
        return {"error_type": "Timeout", "message": "node exceeded its timeout_ms", "transient": True}
    if isinstance(exc, AobError):
        error = {"error_type": exc.code, "message": exc.message, **exc.extra}
    else:
        error = {"error_type": type(exc).__name__, "message": str(exc) or type(exc).__name__, "transient": False}
    return strict_json(bounded_error(error), non_finite="null")


def prepared(ctx: NodeContext) -> tuple[NodeContext, Callable[[NodeContext], Any]]:
    """The node's context with the config resolved where its type asks, and the type's function:
    the one preparation of a node, on a worker and in the decision (``pure.evaluate``). Raises
    ``OwnerInactive`` for a run whose owner was deactivated since it began, ``AobError`` for a type
    with no executor, and what resolving raises."""
    if not ctx.owner_active:  # nothing of a run starts as an owner deactivated since it began
        raise owners.OwnerInactive.of(ctx.owner_id, f"node {ctx.node_id!r} of run {ctx.run_id} does not start")
    spec = registry.get(ctx.node_type)
    if spec is None or spec.run is None:
        raise AobError(f"no executor for node type {ctx.node_type!r}", code="UnknownNodeType")
    if spec.resolve_config:
        raw = {key: value for key, value in ctx.raw_config.items() if key in spec.raw_keys}
        config, resolved = resolve_counted({key: value for key, value in ctx.raw_config.items() if key not in raw},
                                           inputs=ctx.inputs, outputs=ctx.outputs)
        config.update(raw)
        problem = resolved_config_problem(ctx.node_type, config) if resolved else None
        if problem is not None:  # the type's bounds hold for what references bring, not only for the references
            where, rule, message = problem
            raise AobError(message, code="ConfigInvalid", extra={"path": where, "rule": rule, "transient": False})
        ctx = dataclasses.replace(ctx, config=config)
    return ctx, spec.run


def execute(node_run_id: int, timelimit: Any = None) -> str | list[Any]:
    """The body of every executor task: a status word, or for a completed node its
    ``Completion`` as a plain list (Celery hands it to the linked ``workflows.coordinate``).
    ``timelimit``: the limits the task's message enforces (Celery's ``(hard, soft)``), None when
    not called from one."""
    time_limit.begin()
    with time_limit.held():
        ctx = claim(node_run_id)
        if ctx is None:
            return "duplicate"
        if isinstance(ctx, str):  # CLAIM_HELD: it waits queued for a slot
            return ctx
        if not enforces(timelimit, ctx.node_type, (ctx.definition or {}).get("timeout_ms")):
            sent = send_again(ctx, timelimit)
            if sent is not None:
                return sent
        started = time.monotonic()
        _ANSWERED.set(False)
    try:
        if time_limit.fired():  # during the claim: the attempt is recorded as timed out, unrun
            raise SoftTimeLimitExceeded()
        ctx, run = prepared(ctx)
        with heartbeat.holding(ctx.node_run_id, ctx.attempt), egress.only(ctx.hosts):
            output = run(ctx)
            _ANSWERED.set(True)  # its work done: what is left is the engine's (the output checked, stored)
        if output is not WAITING:
            output = strict_json(output)  # a value JSON cannot hold fails the node here, by one rule
    except heartbeat.LeaseLost:
        # cancelled, or re-queued for another attempt: nothing of this attempt is written. The
        # interrupt may have landed mid-query: the connection is closed, and opened afresh next time.
        connection.close()
        logger.warning("node_run.lease_lost", extra={"attempt": ctx.attempt})
        return "lease_lost"
    except SoftTimeLimitExceeded:
        return fail(ctx, _timed_out(ctx), started)
    except AobError as exc:
        return fail(ctx, error_payload(exc), started)
    except Exception as exc:  # an executor bug fails its node with a visible reason
        logger.exception("node_run.crashed", extra={"run_id": ctx.run_id, "node_id": ctx.node_id})
        return fail(ctx, error_payload(exc), started)
    if output is WAITING:
        return "waiting"
    with time_limit.held():  # the output is in hand: a limit firing while it is recorded changes nothing
        events.hold_until_task_end()
        try:
            completion = complete(ctx, output, started)
        except OutputTooLarge as exc:  # nothing of it was written: the node fails, not retried
            return fail(ctx, error_payload(exc), started)
    return completion.as_message() if completion is not None else "discarded"


# What ``claim`` answers for a node run held for a slot (``admission``), and the executor's word
# for it: nothing finished, so its linked coordinator has nothing to decide.
CLAIM_HELD: Final = "held"

# The waits a node run is claimed again from, as a new attempt (the run's budget raised, or room
# freed): logged ``paused``, and not counted as tries. An approval's or a child run's wait ends in
# ``resume``, never in a claim.
CLAIMED_AGAIN = frozenset({"budget"})
PAUSED = "paused"
# An attempt given back unrun (``send_again``): no try either.
SENT_AGAIN = "sent_again"
NOT_TRIED = frozenset({PAUSED, SENT_AGAIN})
# An attempt whose worker died mid-node, as the sweeper logs it (``sweeper``): what ``AOB_MAX_ATTEMPTS_ON_LOST``
# counts, and what an http node that does not repeat its request reads before sending it again.
LOST = "lost"


def _logged(column: str, where: str) -> str:
    """SQL counting the entries ``past`` of a node run's ``attempt_log`` (``column``) that ``where``
    holds for, read in the database (a replay reads no log whole)."""
    return (f"(SELECT count(*) FROM jsonb_array_elements(CASE WHEN jsonb_typeof({column}) = 'array' THEN {column} "  # noqa: S608 - our column names
            f"ELSE '[]'::jsonb END) AS past WHERE {where})")


def given_back(column: str) -> str:
    """SQL counting the claims of a node run given back unrun (``send_again``) in its ``attempt_log``
    (``column``): attempts that never tried, so sent nothing (``NodeRun.acted`` counts its attempts
    without them)."""
    return _logged(column, f"past->>'status' = '{SENT_AGAIN}'")


def unsent(column: str) -> str:
    """SQL counting the tries of a node run in its ``attempt_log`` (``column``) that failed before
    anything was sent (their error ``sent``: false): ``NodeRun.acted`` reads a node run all of whose
    tries so failed as one that never acted."""
    return _logged(column, "past->'error'->'sent' = 'false'::jsonb")


def tries(node_run_id: int, attempt: int) -> int:
    """The attempts of a node run that were tries: its claims, less the pauses it was claimed
    again from (``CLAIMED_AGAIN``) and the claims given back unrun (``send_again``). A node's
    ``retry.max_attempts`` counts these."""
    log = NodeRun.objects.filter(pk=node_run_id).values_list("attempt_log", flat=True).first() or []
    return attempt - sum(1 for past in log if isinstance(past, dict) and past.get("status") in NOT_TRIED)


def disagrees(log: list[Any], patch_seq: int, sent_ms: int) -> bool:
    """Whether a message enforcing ``sent_ms`` is one ``send_again`` published under this patch
    (its entry notes the ``patch_seq`` and the ``timeout_ms`` it sent) that still differs from the
    claim's limit: the processes disagree on it, and the step runs under the message's."""
    return any(isinstance(past, dict) and past.get("status") == SENT_AGAIN and past.get("patch_seq") == patch_seq
               and past.get("timeout_ms") == sent_ms for past in log)


def send_again(ctx: NodeContext, timelimit: Any) -> str | None:
    """Give back a claim whose message enforces another time limit than the node's ``timeout_ms``
    as claimed (a patch changed it while the node was queued, lowering or raising it: the limit a
    Celery message enforces is set when it is published): ``running → queued`` unrun, logged
    ``sent_again`` with the reason (no try: ``tries``), and published again as a fresh dispatch,
    with the claimed definition's limits. The claim is the one place the enforced limit comes from.
    Every message whose limit is stale is given back so, a second copy of one already sent again
    too (put back after its process died, or the sweeper's): it never runs the step. Only a message
    that carries the limit a send of this patch published (``disagrees``) runs under it (None): its
    sender and this process disagree on the limit (``AOB_DEFAULT_NODE_TIMEOUT_MS`` set apart), and
    as a sent message is never sent again, the sends end."""
    timeout_ms = (ctx.definition or {}).get("timeout_ms")
    sent_ms = round(float(timelimit[1]) * 1000)
    limit_ms = task_timeout_ms(ctx.node_type, timeout_ms)
    reason = {"reason": "timeout_changed", "timeout_ms": limit_ms, "sent_ms": sent_ms}
    with transaction.atomic():
        locks.lock_run(ctx.run_id)
        patch_seq = Run.objects.values_list("patch_seq", flat=True).get(pk=ctx.run_id)
        log = NodeRun.objects.values_list("attempt_log", flat=True).get(pk=ctx.node_run_id) or []
        if disagrees(log, patch_seq, sent_ms):
            logger.warning("node_run.time_limit_disagrees", extra={"attempt": ctx.attempt, **reason})
            return None
        entry = {"attempt": ctx.attempt, "status": SENT_AGAIN, **reason, "patch_seq": patch_seq,
                 "message": f"its timeout_ms changed while it was queued: not run under the {sent_ms} ms its "
                            f"message enforced, sent again with {limit_ms} ms (no try)"}
        moved = transitions.move_node_run(
            ctx.node_run_id, NodeRun.Status.QUEUED, sources=[NodeRun.Status.RUNNING], guard={"attempts": ctx.attempt},
            run_id=ctx.run_id, owner_id=ctx.owner_id, event=(Event.Type.NODE_RETRYING, ctx.node_id, {
                "iteration": ctx.iteration, "attempt": ctx.attempt, "backoff_ms": 0, **reason}),
            lease_expires_at=None, dispatched_at=timezone.now(), attempt_log=CombinedExpression(
                F("attempt_log"), "||", Value([entry], output_field=JSONField())))
        if not moved:  # cancelled meanwhile
            return "discarded"
        logger.info("node_run.sent_again", extra={"attempt": ctx.attempt, **reason})
        publish_after_commit([Dispatch(ctx.node_run_id, ctx.node_id, ctx.node_type, ctx.run_id, timeout_ms)])
        admission.release(ctx.owner_id, ctx.node_type)  # its slot is free while it waits (the last lock)
    return SENT_AGAIN

WAITING = object()
"""Returned by an executor that parked its node run as ``waiting`` (a human decides later)."""


def park(ctx: NodeContext, create: Callable[[], list[tuple[str, str, dict[str, Any]]]],
         reason: str = "approval") -> bool:
    """``running → waiting`` for a node a person decides (``reason``: an approval, or the run's
    budget): ``create()`` writes the rows the wait is and returns the events to append, all in one
    transaction. The worker is free as soon as this returns; no task sleeps. The run's next status
    is the linked coordinator's decision; until it has run the node run is marked
    ``undecided_since``, so the sweeper asks for that decision again if the message is lost."""
    # a pause the node is claimed again from (the run's budget) is logged: that claim is no try of
    # its own (``tries``), where two pauses used a node's two attempts and its first error failed it
    logged = {"attempt_log": CombinedExpression(F("attempt_log"), "||", Value(
        [{"attempt": ctx.attempt, "status": PAUSED, "reason": reason}], output_field=JSONField()))
    } if reason in CLAIMED_AGAIN else {}
    with time_limit.held(), transaction.atomic():
        locks.lock_run(ctx.run_id)
        was = NodeRun.objects.values_list("input_bytes", flat=True).get(pk=ctx.node_run_id) or 0
        moved = transitions.move_node_run(ctx.node_run_id, NodeRun.Status.WAITING, sources=[NodeRun.Status.RUNNING],
                                          guard={"attempts": ctx.attempt}, lease_expires_at=None, input=ctx.config,
                                          wait_reason=reason, undecided_since=timezone.now(), **logged)
        if not moved:
            return False
        count_output(ctx.run_id, 0, inputs_of=[ctx.node_run_id], inputs_were=was)  # the owner's storage
        heartbeat.let_go(ctx.node_run_id)  # waiting is not a lost lease: nothing may stop what follows
        events.append(ctx.run_id, ctx.owner_id, create())
        admission.release(ctx.owner_id, ctx.node_type)  # a waiting node holds no worker (the last lock)
    return True


def resume(node_run_id: int, *, output: Any = None, error: dict[str, Any] | None = None,
           extra_events: list[tuple[str, str, dict[str, Any]]] | None = None) -> bool:
    """``waiting → completed | failed`` (a decision arrived, or its deadline passed), then the
    coordinator routes it. Call inside the caller's transaction; False if it was not waiting."""
    now = timezone.now()
    error = bounded_error(error) if error is not None else None
    with transaction.atomic():  # a savepoint in the caller's transaction
        if locks.lock_run_of(node_run_id) is None:
            return False
        nr = NodeRun.objects.select_related("run").filter(pk=node_run_id).first()
        if nr is None:
            return False
        fields: dict[str, Any] = {"finished_at": now}  # wait_reason goes with the finish (move_node_runs)
        size = 0
        if error is None:
            output = strict_json(output)
            text = canonical_json(output)
            size = size_of(text)
            try:
                refuse_large_output(size)
            except OutputTooLarge as exc:  # a child's outputs together, say: the node fails, nothing stored
                output, error, size = None, error_payload(exc), 0
        if error is None:
            aid = _store_artifact(text)
            fields.update(status=NodeRun.Status.COMPLETED, output=output, output_artifact_id=aid)
            event = (Event.Type.NODE_COMPLETED, nr.node_id, {"iteration": nr.iteration, "output_artifact_id": aid})
        else:
            error = strict_json(error, non_finite="null")
            fields.update(status=NodeRun.Status.FAILED, error=error)
            event = (Event.Type.NODE_FAILED, nr.node_id, {"iteration": nr.iteration, "error": error})
        moved = transitions.move_node_run(node_run_id, sources=[NodeRun.Status.WAITING], run_id=nr.run_id,
                                          owner_id=nr.run.owner_id, event=[*(extra_events or []), event], **fields)
        if not moved:
            return False
        count_output(nr.run_id, size)  # as a completion's is (COMPLETE): the run's cap, what its owner's runs keep
        coordinate_after_commit([node_run_id])
        return True

