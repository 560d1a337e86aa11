"""Plain steps: the coordinator's decisions that need nothing but the graph and the facts the
executor's completion returned (``execution.completed_facts``: node run, run status, the run's
graph artifact and ``patch_seq``), made in one round trip with every check in SQL.

``CHAIN_STEP`` hands a node on to successors with one parent; ``JOIN_STEP`` to a join;
``END_STEP`` ends a branch and, when nothing is left, the run. Each writes nothing unless the run
is still running on that graph and the node run is still unconsumed, and returns no row then:
the caller falls back to the full decision (``coordinator._decide``), which reads everything
under the run lock. The semantics are the full decision's, for the cases each step takes.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from psycopg.pq import TransactionStatus

from aob_project.context import current_request_id
from workers import registry
from workflows.definition.ir import IR
from workflows.models import Run

from . import events, hooks
from .dispatch import Dispatch, publish_after_commit

# The plain step into nodes with one parent, in one statement: lock the run only if it is still
# running on the graph the decision was made from, consume the node run only if it is still
# unconsumed, and queue its successors only if it was consumed here. No row means one of those
# no longer holds.
CHAIN_STEP = """
WITH locked AS (
    SELECT id FROM workflows_run
     WHERE id = %(run_id)s AND status = 'running' AND current_artifact_id = %(artifact_id)s
       AND patch_seq = %(patch_seq)s
       FOR UPDATE
), consumed AS (
    UPDATE workflows_noderun SET consumed = true, taken = %(taken)s::jsonb
     WHERE id = %(id)s AND run_id IN (SELECT id FROM locked) AND node_id = %(node_id)s AND iteration = %(iteration)s
       AND status = 'completed' AND NOT consumed
 RETURNING run_id
), emitted AS (
    INSERT INTO workflows_noderun (run_id, node_id, iteration, node_type, status, attempts, attempt_log, consumed,
                                   reused, queued_at, dispatched_at, usage)
    SELECT consumed.run_id, successor.node_id, %(iteration)s, successor.node_type, 'queued', 0, '[]'::jsonb, false,
           false, %(now)s, %(now)s, '{}'::jsonb
      FROM consumed, jsonb_to_recordset(%(successors)s::jsonb) AS successor(node_id text, node_type text)
    ON CONFLICT (run_id, node_id, iteration) DO NOTHING
    RETURNING id, node_id, node_type
)
SELECT consumed.run_id, emitted.id, emitted.node_id, emitted.node_type FROM consumed LEFT JOIN emitted ON true
"""

# The plain step into a join (graphs without loops: every iteration is 0). Sent after the run is
# locked by its own statement, so that this one reads the other parents as the last decision
# committed them (a statement's snapshot predates the lock it waits for). A join runs once each
# parent is consumed (it delivered or its edge is dead; this one delivers). Parents finished but
# not yet consumed, whose only out-edge is the plain edge into the join, are consumed here too
# (``absorbable``): their own messages then find nothing to do, and the join starts one decision
# after its last parent rather than behind a queue of them.
JOIN_STEP = """
WITH successor AS (
    SELECT * FROM jsonb_to_recordset(%(successors)s::jsonb)
        AS s(node_id text, node_type text, others text[], absorbable text[])
), ready AS (
    SELECT successor.node_id, successor.node_type, successor.others FROM successor
     WHERE cardinality(successor.others) = (
           SELECT count(*) FROM workflows_noderun parent
            WHERE parent.run_id = %(run_id)s AND parent.iteration = 0 AND parent.node_id = ANY(successor.others)
              AND (parent.consumed OR (parent.status = 'completed' AND parent.node_id = ANY(successor.absorbable))))
), busy AS (
    -- another node run still moving (absorbed parents aside): the run stays running without a decision
    SELECT 1 FROM workflows_noderun other
     WHERE other.run_id = %(run_id)s AND other.id <> %(id)s
       AND (other.status IN ('queued', 'running')
            OR (NOT other.consumed AND other.status IN ('completed', 'failed', 'skipped', 'cancelled')
                AND NOT other.node_id = ANY(ARRAY(SELECT unnest(absorbable) FROM successor))))
     LIMIT 1
), consumed AS (
    UPDATE workflows_noderun SET consumed = true, taken = %(taken)s::jsonb
     WHERE id = %(id)s AND run_id = %(run_id)s AND node_id = %(node_id)s AND iteration = %(iteration)s
       AND status = 'completed' AND NOT consumed
       AND EXISTS (SELECT 1 FROM workflows_run WHERE id = %(run_id)s AND status = 'running'
                   AND current_artifact_id = %(artifact_id)s AND patch_seq = %(patch_seq)s)
       -- else only people are left to act (a join waits on a gate): the full decision settles the run
       AND (EXISTS (SELECT 1 FROM ready) OR EXISTS (SELECT 1 FROM busy))
 RETURNING run_id
), absorbed AS (
    UPDATE workflows_noderun parent SET consumed = true, taken = jsonb_build_array(successor.node_id)
      FROM consumed, successor
     WHERE parent.run_id = consumed.run_id AND parent.iteration = 0 AND parent.node_id = ANY(successor.absorbable)
       AND parent.status = 'completed' AND NOT parent.consumed
), emitted AS (
    INSERT INTO workflows_noderun (run_id, node_id, iteration, node_type, status, attempts, attempt_log, consumed,
                                   reused, queued_at, dispatched_at, usage)
    SELECT consumed.run_id, ready.node_id, 0, ready.node_type, 'queued', 0, '[]'::jsonb, false, false, queued.at,
           queued.at, '{}'::jsonb
      FROM consumed, ready, LATERAL (
           -- ``now`` was taken before the lock; a parent may have finished while this waited
           SELECT GREATEST(%(now)s, max(parent.finished_at)) AS at FROM workflows_noderun parent
            WHERE parent.run_id = consumed.run_id AND parent.iteration = 0 AND parent.node_id = ANY(ready.others)
      ) queued
    ON CONFLICT (run_id, node_id, iteration) DO NOTHING
    RETURNING id, node_id, node_type
)
SELECT consumed.run_id, emitted.id, emitted.node_id, emitted.node_type FROM consumed LEFT JOIN emitted ON true
"""


# The end of a branch (a node with no out-edge), sent after the run is locked like JOIN_STEP: the
# node run is consumed if some other node run is still busy (the run goes on), or if nothing is
# left at all and no patch awaits approval, in which case the run completes here. Anything else
# (only people left to decide, a held patch) is left to the full decision, which settles it.
END_STEP = """
WITH others AS (
    SELECT count(*) FILTER (WHERE status IN ('queued', 'running')
                              OR (NOT consumed AND status IN ('completed', 'failed', 'skipped', 'cancelled'))) AS busy,
           count(*) FILTER (WHERE status IN ('queued', 'running', 'waiting')
                              OR (NOT consumed AND status IN ('completed', 'failed', 'skipped', 'cancelled'))) AS open,
           -- ``now`` was taken before the lock; another branch may have finished while this waited
           GREATEST(%(now)s, max(finished_at)) AS at
      FROM workflows_noderun WHERE run_id = %(run_id)s AND id <> %(id)s
), consumed AS (
    UPDATE workflows_noderun SET consumed = true, taken = '[]'::jsonb
      FROM others
     WHERE id = %(id)s AND run_id = %(run_id)s AND node_id = %(node_id)s AND iteration = %(iteration)s
       AND status = 'completed' AND NOT consumed
       AND EXISTS (SELECT 1 FROM workflows_run WHERE id = %(run_id)s AND status = 'running'
                   AND current_artifact_id = %(artifact_id)s AND patch_seq = %(patch_seq)s)
       AND (others.busy > 0 OR (others.open = 0 AND NOT EXISTS (
            SELECT 1 FROM workflows_runpatch WHERE run_id = %(run_id)s AND status = 'pending_approval')))
 RETURNING run_id, others.open, others.at
), finished AS (
    UPDATE workflows_run r SET status = 'completed', finished_at = consumed.at, event_seq = r.event_seq + 1
      FROM consumed
     WHERE r.id = consumed.run_id AND consumed.open = 0
 RETURNING r.event_seq, r.owner_id, consumed.at,
           floor(extract(epoch FROM consumed.at - COALESCE(r.started_at, r.created_at)) * 1000)::bigint AS duration_ms
), appended AS (
    INSERT INTO workflows_event (run_id, seq, type, node_id, data, request_id, created_at)
    SELECT %(run_id)s, finished.event_seq, 'workflow_completed', '',
           jsonb_build_object('duration_ms', finished.duration_ms), %(request_id)s, finished.at
      FROM finished
    RETURNING seq, data, created_at
)
SELECT consumed.run_id, appended.seq, appended.data, finished.owner_id, appended.created_at
  FROM consumed LEFT JOIN finished ON true LEFT JOIN appended ON true
"""


@dataclass(frozen=True)
class Successor:
    node_id: str
    node_type: str
    others: tuple[str, ...] = ()  # its other parents, when it is a join
    absorbable: tuple[str, ...] = ()  # those of them whose only out-edge is the plain edge into it


def plain_successors(ir: IR, node_id: str) -> list[Successor] | None:
    """What a finished ``node_id`` hands on to when routing it needs nothing but the graph and its
    successors' other parents: every out-edge unconditional, each target a worker node, and a
    join only where the graph has no loop. None for anything else (branch rules, loops, inline
    types, and a node with no out-edge, which ``step_plain`` hands to ``END_STEP``)."""
    node = ir.nodes.get(node_id)
    if node is None or node.type == "loop":
        return None
    edges = ir.out_edges[node_id]
    if not edges or any(e.condition for e in edges):
        return None
    successors = []
    for target in dict.fromkeys(e.target for e in edges):
        kind = ir.nodes[target].type
        if kind in ("conditional", "loop") or registry.get(kind) is None:
            return None
        others = tuple(sorted({e.source for e in ir.in_edges[target]} - {node_id}))
        if others and ir.loops:
            return None
        absorbable = tuple(p for p in others if [(e.target, e.condition) for e in ir.out_edges[p]] == [(target, None)])
        successors.append(Successor(target, kind, others, absorbable))
    return successors


def step_plain(facts: dict[str, Any], ir: IR) -> bool:
    """Route a completed node run from the facts its executor returned (``ir``: the graph of the
    artifact they name), in one round trip, when ``plain_successors`` allows it. False when the
    full decision must run instead: the run moved on (patched, cancelled, failed, waiting), the
    node run was consumed already, or the graph there needs more than the facts."""
    if facts.get("status") != "completed" or facts.get("run_status") != Run.Status.RUNNING:
        return False
    if facts.get("output_bytes", 0) > settings.AOB_MAX_RUN_OUTPUT_BYTES:
        return False  # the full decision fails the run (``Decision._over_limits``)
    node_id = facts["node_id"]
    params = {"run_id": facts["run_id"], "artifact_id": facts["artifact_id"], "patch_seq": facts["patch_seq"],
              "id": facts["node_run_id"], "node_id": node_id, "iteration": facts["iteration"], "now": timezone.now()}
    if node_id in ir.nodes and ir.nodes[node_id].type != "loop" and not ir.out_edges[node_id]:
        return _end_step(params)
    successors = plain_successors(ir, node_id)
    if successors is None:
        return False
    params.update(taken=json.dumps([s.node_id for s in successors]),
                  successors=json.dumps([asdict(s) for s in successors]))
    if any(s.others for s in successors):
        rows = _locked_statement(facts["run_id"], JOIN_STEP, params)
    else:
        with connection.cursor() as cursor:
            cursor.execute(CHAIN_STEP, params)
            rows = cursor.fetchall()
    if not rows:
        return False
    publish_after_commit(Dispatch(pk, successor, kind, facts["run_id"], ir.nodes[successor].timeout_ms)
                         for _, pk, successor, kind in rows if pk is not None)
    return True


def _end_step(params: dict[str, Any]) -> bool:
    request_id = current_request_id() or ""
    rows = _locked_statement(params["run_id"], END_STEP, {**params, "request_id": request_id})
    if not rows:
        return False
    _, seq, data, owner_id, created_at = rows[0]
    if seq is not None:
        data = json.loads(data) if isinstance(data, str) else data
        frames = [events.frame(params["run_id"], seq, "workflow_completed", "", data, request_id, created_at)]
        transaction.on_commit(lambda: events.push(params["run_id"], owner_id, frames))
        hooks.run_finished(params["run_id"], Run.Status.COMPLETED)
    return True


LOCK_RUN = "SELECT id FROM workflows_run WHERE id = %s FOR UPDATE"


def _locked_statement(run_id: str, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Lock the run, then run ``sql`` with a snapshot taken once the lock is held, in one
    transaction. In autocommit (a worker) ``BEGIN; lock; sql; COMMIT`` go out pipelined, one
    round trip; inside a caller's transaction, as a savepoint."""
    if connection.in_atomic_block:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(LOCK_RUN, [run_id])
            cursor.execute(sql, params)
            return cursor.fetchall()
    connection.ensure_connection()
    raw = connection.connection
    try:
        with connection.wrap_database_errors, raw.cursor() as lock, raw.cursor() as step:
            with raw.pipeline():
                lock.execute("BEGIN")
                lock.execute(LOCK_RUN, [run_id])
                step.execute(sql, params)
                lock.execute("COMMIT")
            return step.fetchall()
    except Exception:
        with contextlib.suppress(Exception):
            raw.execute("ROLLBACK")
        if raw.closed or raw.info.transaction_status != TransactionStatus.IDLE:
            connection.close()  # never hand a half-open transaction (holding the run lock) to the next task
        raise
