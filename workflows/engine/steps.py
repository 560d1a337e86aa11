"""Plain steps: a plan the planner made in advance, applied in one round trip once SQL has
checked its premises.

``planner.plain_step(graph, node_id)`` plans what follows a completed node from a hypothetical
state (the run running, the node run unconsumed, no successor row yet, a join's other parents
consumed); it is computed once per graph and node. Here the executor's ``Completion`` (node run,
run status, the run's graph artifact and ``patch_seq``) names the node, and one statement checks
that the real state is that hypothesis and writes the plan: ``CHAIN_STEP`` queues successors
with one parent, ``JOIN_STEP`` a join, ``END_STEP`` ends a branch and, when nothing is left, the
run. A statement that finds a premise false writes nothing and returns no row: the caller falls
back to the full decision (``coordinator._decide``), which reads everything under the run lock
and plans. Nothing here decides; ``tests/engine/test_planner.py`` checks the derivation.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from aob_project.context import current_request_id
from workflows.definition.ir import IR
from workflows.models import Event, NodeRun, Run

from . import events, hooks, locks, planner, transitions
from .completion import Completion
from .dispatch import Dispatch, publish_after_commit

# The run a plain step was planned for: running, on the graph and patch its completion names, and
# its outputs within their cap (``planner.over_output_limit``'s rule, negated: past the cap the full
# decision fails the run, so no step may queue more after a sibling's output passed it).
RUN_AS_PLANNED = """status = 'running' AND current_artifact_id = %(artifact_id)s AND patch_seq = %(patch_seq)s
       AND COALESCE((usage->>'output_bytes')::bigint, 0) <= %(max_output_bytes)s"""

# The plain step into nodes with one parent, in one statement: lock the run only if it is still
# running on the graph the decision was made from, consume the node run only if it is still
# unconsumed, and queue its successors only if it was consumed here. No row means one of those
# no longer holds.
CHAIN_STEP = """
WITH locked AS (
    SELECT id FROM workflows_run WHERE id = %(run_id)s AND {run_as_planned} FOR UPDATE
), consumed AS (
    UPDATE workflows_noderun SET consumed = true, taken = %(taken)s::jsonb
     WHERE id = %(id)s AND run_id IN (SELECT id FROM locked) AND node_id = %(node_id)s AND iteration = %(iteration)s
       AND status = 'completed' AND NOT consumed
       AND NOT EXISTS (SELECT 1 FROM workflows_noderun s WHERE s.run_id = %(run_id)s
                        AND s.node_id = ANY(%(successor_ids)s) AND s.iteration >= %(iteration)s)
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
# after its last parent rather than behind a queue of them. A node run consumed before this
# statement (absorbed by a sibling's step, or a duplicate message) answers one row of NULLs: the
# message is done, with no full decision after it (``step_plain``).
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
       AND EXISTS (SELECT 1 FROM workflows_run WHERE id = %(run_id)s AND {run_as_planned})
       AND NOT EXISTS (SELECT 1 FROM workflows_noderun s WHERE s.run_id = %(run_id)s
                        AND s.node_id = ANY(%(successor_ids)s))
       -- else only people are left to act (a join waits on a gate): the full decision settles the run
       AND (EXISTS (SELECT 1 FROM ready) OR EXISTS (SELECT 1 FROM busy))
 RETURNING run_id
), absorbed AS (
    UPDATE workflows_noderun parent SET consumed = true, taken = planned.taken
      FROM consumed, jsonb_to_recordset(%(absorbed)s::jsonb) AS planned(node_id text, taken jsonb)
     WHERE parent.run_id = consumed.run_id AND parent.iteration = 0 AND parent.node_id = planned.node_id
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
UNION ALL
SELECT NULL, NULL, NULL, NULL FROM workflows_noderun WHERE id = %(id)s AND consumed
"""


# The end of a branch (a node with no out-edge), sent after the run is locked like JOIN_STEP: the
# node run is consumed if some other node run is still busy (the run goes on), or if nothing is
# left at all and no patch awaits approval, in which case the run completes here. Anything else
# (only people left to decide, a held patch) is left to the full decision, which settles it. A
# node run consumed before answers one row of NULLs, as in JOIN_STEP.
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
    UPDATE workflows_noderun SET consumed = true, taken = %(taken)s::jsonb
      FROM others
     WHERE id = %(id)s AND run_id = %(run_id)s AND node_id = %(node_id)s AND iteration = %(iteration)s
       AND status = 'completed' AND NOT consumed
       AND EXISTS (SELECT 1 FROM workflows_run WHERE id = %(run_id)s AND {run_as_planned})
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
    SELECT %(run_id)s, finished.event_seq, %(event_type)s, '',
           jsonb_build_object('duration_ms', finished.duration_ms), %(request_id)s, finished.at
      FROM finished
    RETURNING seq, data, created_at
)
SELECT consumed.run_id, appended.seq, appended.data, finished.owner_id, appended.created_at
  FROM consumed LEFT JOIN finished ON true LEFT JOIN appended ON true
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL FROM workflows_noderun WHERE id = %(id)s AND consumed
"""


def step_plain(completion: Completion, ir: IR) -> bool:
    """Apply the plan ``planner.plain_step`` made for the completed node (``ir``: the graph of the
    artifact the completion names), in one round trip, if its premises hold. False when the full
    decision must run instead: there is no plain plan for that node, the run is a sub-workflow's,
    the run moved on (patched, cancelled, failed, waiting), the node run was consumed already (a
    chain step's), or the state is not the one planned for. True also when a join or end step finds
    its node run consumed before it (absorbed by a sibling's join step, or a duplicate): nothing is
    left to do."""
    if (completion.status != NodeRun.Status.COMPLETED or completion.run_status != Run.Status.RUNNING
            or completion.below):
        return False  # a sub-workflow's: the full decision asks first whether its tree has ended
    limits = planner.Limits.from_settings()
    if planner.over_output_limit(completion.output_bytes, limits):
        return False  # the full decision fails the run
    step = planner.plain_step(ir, completion.node_id)
    if step is None:
        return False
    params: dict[str, Any] = {"run_id": completion.run_id, "artifact_id": completion.artifact_id,
                              "patch_seq": completion.patch_seq, "id": completion.node_run_id,
                              "node_id": completion.node_id, "iteration": completion.iteration, "now": timezone.now(),
                              "max_output_bytes": limits.max_output_bytes, **_encoded(step)}
    if step.ends:
        return _end_step(params)
    if any(s.others for s in step.successors):
        rows = _locked_statement(completion.run_id, JOIN_STEP, params, unconsumed=completion.node_run_id)
        if rows and all(run_id is None for run_id, *_ in rows):
            return True  # consumed before: absorbed by a sibling's join step, or a duplicate message
    else:
        with connection.cursor() as cursor:
            cursor.execute(CHAIN_STEP, params)
            rows = cursor.fetchall()
    if not rows:
        return False
    publish_after_commit(Dispatch(pk, successor, kind, completion.run_id, ir.nodes[successor].timeout_ms)
                         for _, pk, successor, kind in rows if pk is not None)
    return True


@functools.lru_cache(maxsize=4096)
def _encoded(step: planner.PlainStep) -> dict[str, Any]:
    """A plain step's own parameters, as its statement takes them: the same for every node run of
    that node (a join's lists grow with its parents), so encoded once."""
    return {"taken": json.dumps(list(step.taken)),
            "successors": json.dumps([asdict(s) for s in step.successors]),
            "successor_ids": [s.node_id for s in step.successors],
            "absorbed": json.dumps([{"node_id": p, "taken": list(t)} for p, t in step.absorbed])}


def _end_step(params: dict[str, Any]) -> bool:
    request_id = current_request_id() or ""
    kind = Event.Type.WORKFLOW_COMPLETED
    rows = _locked_statement(params["run_id"], END_STEP, {**params, "request_id": request_id, "event_type": kind.value},
                             unconsumed=params["id"])
    if not rows:
        return False
    _, seq, data, owner_id, created_at = rows[0]  # all NULL: consumed before, nothing to do
    if seq is not None:
        data = json.loads(data) if isinstance(data, str) else data
        frames = [events.frame(params["run_id"], seq, kind, "", data, request_id, created_at)]
        transaction.on_commit(lambda: events.push(params["run_id"], owner_id, frames))
        hooks.run_finished(params["run_id"], Run.Status.COMPLETED)
    return True


CHAIN_STEP, JOIN_STEP, END_STEP = (sql.replace("{run_as_planned}", RUN_AS_PLANNED)
                                   for sql in (CHAIN_STEP, JOIN_STEP, END_STEP))

# The moves these statements make in SQL, as the transition table allows them.
transitions.check_run_move(Run.Status.RUNNING, Run.Status.COMPLETED)

LOCK_RUN = "SELECT id FROM workflows_run WHERE id = %s FOR UPDATE"

# The run lock for a step whose node run may have been consumed already: taken only while it is
# not, so a message with nothing left to do (its node run absorbed by a sibling's join step, a
# duplicate) does not queue behind the decisions holding the lock. Its statement, sent unlocked
# then, writes nothing: it consumes only a node run it sees unconsumed, and a consumed node run
# becomes unconsumed again only when a patch that reopens a gate is applied, which moves the run to
# the patch's graph (a new ``current_artifact_id``; ``patch_seq`` moved when it was proposed), and
# the statement checks both against the message's completion.
LOCK_RUN_UNCONSUMED = """
SELECT id FROM workflows_run
 WHERE id = %s AND EXISTS (SELECT 1 FROM workflows_noderun WHERE id = %s AND NOT consumed)
   FOR UPDATE
"""


def _locked_statement(run_id: Any, sql: str, params: dict[str, Any],
                      unconsumed: int | None = None) -> list[tuple[Any, ...]]:
    """Lock the run, then run ``sql`` with a snapshot taken once the lock is held, in one
    transaction (``locks.pipelined``: one round trip in a worker). With ``unconsumed`` (a node
    run), the lock is taken only while that node run is unconsumed (``LOCK_RUN_UNCONSUMED``)."""
    lock_sql, lock_params = (LOCK_RUN, [run_id]) if unconsumed is None else (LOCK_RUN_UNCONSUMED, [run_id, unconsumed])
    return locks.pipelined(lock_sql, lock_params, sql, params)
