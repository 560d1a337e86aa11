"""What a run produced and how long it took: its output, its duration and its timeline.

Read-only and computed when asked, from the rows the engine already writes (node runs, their
``attempt_log`` and the ``node_started`` events), so the engine's hot path pays nothing for them.

A run's **output** is, when its definition sets ``metadata.output``, that expression (CEL over
``inputs`` and ``nodes``) or template (``$nodes…`` / ``$inputs…`` references) evaluated over the
latest output of each node; otherwise the outputs of its terminal nodes (no outgoing edge) that
completed, keyed by node id. Only a completed run has an output. Only the latest completed
iteration of each node it reads is read (one statement), however many a loop ran: clients poll
``GET /runs/{id}``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.db import connection
from django.utils import timezone

from workflows.definition.expressions import ExpressionError, evaluate, fields_read
from workflows.definition.ir import IR
from workflows.definition.references import referenced_nodes, resolve
from workflows.engine.coordinator import load_ir
from workflows.models import Event, NodeRun, Run

# The most node runs a timeline lists (a loop of many iterations); the rest are counted, not sent.
TIMELINE_MAX_ITEMS = 2000


def ms_between(start: datetime | None, end: datetime | None) -> int | None:
    if start is None or end is None:
        return None
    return max(0, int((end - start).total_seconds() * 1000))


def run_duration_ms(run: Run) -> int | None:
    """From submission to the end; a run that has not ended has no duration yet."""
    return ms_between(run.created_at, run.finished_at) if run.finished_at else None


# The latest completed iteration of each node in ``node_ids`` (DISTINCT ON over the index, as
# details' ``_LATEST_PER_NODE``: the other iterations are never read). A latest completion that is
# the pass-through marker of a node skipped for want of an executor is no output.
_LATEST_OUTPUTS = """
SELECT n.node_id, n.output
  FROM (SELECT DISTINCT ON (node_id) id FROM workflows_noderun
         WHERE run_id = %(run_id)s AND node_id = ANY(%(node_ids)s) AND status = 'completed'
         ORDER BY node_id, iteration DESC) latest
  JOIN workflows_noderun n ON n.id = latest.id
 WHERE NOT COALESCE(n.output @> '{"_passthrough": true}', false)
 ORDER BY n.node_id
"""


def _latest_outputs(run: Run, node_ids: list[str]) -> dict[str, Any]:
    """The latest completed output of each node of ``node_ids``, one row per node."""
    if not node_ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(_LATEST_OUTPUTS, {"run_id": run.pk, "node_ids": node_ids})
        # jsonb arrives as its text (Django's loader); a SQL NULL output is JSON null
        return {node_id: None if text is None else json.loads(text) for node_id, text in cursor.fetchall()}


def _reads(ir: IR, spec: dict[str, Any]) -> list[str]:
    """The nodes whose outputs ``metadata.output`` reads: those its template or expression names,
    every node when an expression reads ``nodes`` whole. Raises ``ExpressionError``."""
    if "expression" in spec:
        named = fields_read(spec["expression"], "nodes")
        return sorted(ir.nodes if named is None else named)
    return sorted(referenced_nodes(spec["template"]))


def run_output(run: Run) -> tuple[Any, dict[str, Any] | None]:
    """``(output, error)``: the run's result, or why ``metadata.output`` could not be computed."""
    if run.status != Run.Status.COMPLETED:
        return None, None
    ir = load_ir(run)
    spec = (ir.metadata or {}).get("output")
    if isinstance(spec, dict) and ("expression" in spec or "template" in spec):
        try:
            outputs = _latest_outputs(run, _reads(ir, spec))
            if "expression" in spec:
                return evaluate(spec["expression"], {"inputs": run.inputs, "nodes": outputs}), None
        except ExpressionError as exc:
            return None, {"error_type": "OutputExpressionError", "message": f"metadata.output: {exc}"}
        return resolve(spec["template"], inputs=run.inputs, outputs=outputs), None
    terminal = sorted(node_id for node_id, edges in ir.out_edges.items() if not edges)
    return _latest_outputs(run, terminal), None


def run_timeline(*, run: Run) -> dict[str, Any]:
    """Each node run with its queue wait and run time, and each attempt's start and duration: the
    run page's Gantt bars. Times are ISO instants; ``*_ms`` are offsets from the run's creation."""
    origin = run.created_at
    node_runs = list(NodeRun.objects.filter(run=run).order_by("queued_at", "id")
                     .values("node_id", "node_type", "iteration", "status", "queued_at", "started_at",
                             "finished_at", "attempts", "attempt_log", "wait_reason")[:TIMELINE_MAX_ITEMS + 1])
    truncated = len(node_runs) > TIMELINE_MAX_ITEMS
    node_runs = node_runs[:TIMELINE_MAX_ITEMS]
    starts: dict[tuple[str, int, int], datetime] = {}
    for node_id, data, at in (Event.objects.filter(run=run, type=Event.Type.NODE_STARTED)
                              .values_list("node_id", "data", "created_at")):
        data = data or {}
        starts[(node_id, int(data.get("iteration", 0)), int(data.get("attempt", 1)))] = at
    now = timezone.now()
    items = []
    for nr in node_runs:
        attempts = []
        for entry in nr["attempt_log"] or []:
            if not isinstance(entry, dict):
                continue
            number = int(entry.get("attempt") or 0)
            started = starts.get((nr["node_id"], nr["iteration"], number))
            attempts.append({"attempt": number, "status": str(entry.get("status", "")),
                             "started_at": started, "start_ms": ms_between(origin, started),
                             "duration_ms": entry.get("duration_ms"),
                             "error": (entry.get("error") or {}).get("message") if isinstance(
                                 entry.get("error"), dict) else None})
        end = nr["finished_at"] or (now if nr["status"] in NodeRun.ACTIVE else None)
        items.append({
            "node_id": nr["node_id"], "type": nr["node_type"], "iteration": nr["iteration"], "status": nr["status"],
            "wait_reason": nr["wait_reason"], "attempts": nr["attempts"],
            "queued_at": nr["queued_at"], "started_at": nr["started_at"], "finished_at": nr["finished_at"],
            "queued_ms": ms_between(origin, nr["queued_at"]),
            "started_ms": ms_between(origin, nr["started_at"]),
            "finished_ms": ms_between(origin, nr["finished_at"]),
            "queue_wait_ms": ms_between(nr["queued_at"], nr["started_at"]),
            "run_ms": ms_between(nr["started_at"], end),
            "attempt_log": attempts,
        })
    span_end = run.finished_at or now
    return {"run_id": run.pk, "status": run.status, "created_at": run.created_at, "started_at": run.started_at,
            "finished_at": run.finished_at, "duration_ms": run_duration_ms(run),
            "span_ms": ms_between(origin, span_end), "items": items, "truncated": truncated}
