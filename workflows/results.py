"""What a run produced and how long it took: its output, its duration and its timeline.

Read-only and computed when asked, from the rows the engine already writes (node runs, their
``attempt_log`` and the ``node_started`` events), so the engine's hot path pays nothing for them.

A run's **output** is, when its definition sets ``metadata.output``, that expression (CEL over
``inputs`` and ``nodes``) or template (``$nodes…`` / ``$inputs…`` references) evaluated over the
latest output of each node; otherwise the outputs of its terminal nodes (no outgoing edge) that
completed, keyed by node id. Only a completed run has an output.

``metadata.output`` is computed **once**, by a worker, after the run completes (``run_output_compute``
for ``services.runs.run_output_store``,
asked for by the decision that completes the run, and by the sweeper while it is pending): from at
most ``AOB_MAX_RESOLVED_CONFIG_BYTES`` of node outputs, under the CEL deadline, stored as an
artifact (or the error naming the rule it broke) with an ``output_computed`` event. No answer
evaluates it: clients poll ``GET /runs/{id}``, and an evaluation (converting 16 MiB of outputs to
CEL values takes seconds) in a web process would hold it for everyone. Until it is stored an
answer says ``output_pending`` (``Run.output_asked_at`` is set).

Clients poll ``GET /runs/{id}``, so what one answer costs is bounded whatever the run holds: only
the latest completed iteration of each terminal node is read (one statement), and its output only
within the answer's ``Page`` (``AOB_DETAILS_MAX_BYTES``), measured in the database first, else a
``left_out`` marker links to its artifact; a stored ``metadata.output`` goes in while it fits,
else the marker links to ``GET /runs/{id}/output``, which answers it whole (``run_output_text``).
An output that cannot be computed is an ``error`` naming the rule it broke, never an exception:
the run is still answered.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import JSONField
from django.db.models.expressions import RawSQL
from django.utils import timezone

from workflows import registry
from workflows.answers import Page, json_size, left_out, node_value_href
from workflows.definition.expressions import ExpressionError, evaluate, fields_read
from workflows.definition.ir import IR
from workflows.definition.references import ConfigTooLarge, ReferenceMissing, referenced_nodes, resolve
from workflows.engine import run_output
from workflows.engine.coordinator import load_ir
from workflows.engine.outputs import NonJSONOutput, strict_json
from workflows.limits import bounded_error
from workflows.models import Event, NodeRun, Run

logger = logging.getLogger(__name__)

# The most node runs a timeline lists (a loop of many iterations); the rest are counted, not sent.
TIMELINE_MAX_ITEMS = 2000
# What a timeline shows of an attempt's error: the start of its message, in characters (the bar's tooltip).
TIMELINE_ERROR_CHARS = 200
# A timeline's byte budget, in answers' budgets (AOB_DETAILS_MAX_BYTES): 2,000 node runs of one
# attempt each fit the default whole; ones of many failed attempts fill it sooner.
TIMELINE_BUDGETS = 4
# A node run's attempts as the timeline shows them, cut in the database: each entry's number,
# status, duration and the start of its error's message with the message's length. The log (up
# to 20 attempts of 8 KiB errors) is named once, so PostgreSQL reads it once: a strict path over
# an array's objects, silent (no rows) when the log is no array (a CASE on its type read it twice).
_ATTEMPTS_SHOWN = """(
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'attempt', e -> 'attempt', 'status', e -> 'status', 'duration_ms', e -> 'duration_ms',
               'message', left(e -> 'error' ->> 'message', %s), 'message_chars', length(e -> 'error' ->> 'message'))
           ORDER BY o), '[]'::jsonb)
    FROM jsonb_path_query(workflows_noderun.attempt_log, 'strict $[*] ? (@.type() == "object")', '{}', true)
         WITH ORDINALITY AS x(e, o))"""
# The starts of the listed node runs' attempts: their node_started events, and no other's.
_ATTEMPT_STARTS = """
    SELECT e.node_id, e.data ->> 'iteration', e.data ->> 'attempt', e.created_at
    FROM workflows_event e
    JOIN unnest(%s::text[], %s::text[]) AS listed(node_id, iteration)
      ON e.node_id = listed.node_id AND coalesce(e.data ->> 'iteration', '0') = listed.iteration
    WHERE e.run_id = %s AND e.type = %s"""


def ms_between(start: datetime | None, end: datetime | None) -> int | None:
    if start is None or end is None:
        return None
    return max(0, int((end - start).total_seconds() * 1000))


def run_duration_ms(run: Run) -> int | None:
    """From submission to the end; a run that has not ended has no duration yet."""
    return ms_between(run.created_at, run.finished_at) if run.finished_at else None


# The latest completed iteration of each node in ``node_ids`` (DISTINCT ON over the index, as
# details' ``_LATEST_PER_NODE``: the other iterations are never read), its output's size as the
# database measured it when it was written (``NodeRun.output_bytes``; bytes of its text, ``answers.stored_bytes``), and the output itself only while it fits ``budget``: with ``whole``, all
# of them or none (what ``metadata.output`` is computed from); else smallest first, each while
# the sum fits (the terminal nodes' outputs, each an entry of its own). A latest completion that
# is the pass-through marker of a node skipped for want of an executor is no output.
_LATEST_OUTPUTS = """
SELECT node_id, iteration, output_artifact_id, bytes, fits, CASE WHEN fits THEN output END FROM (
    SELECT n.node_id, n.iteration, n.output_artifact_id, n.output, measured.bytes,
           CASE WHEN %(whole)s THEN sum(measured.bytes) OVER ()
                ELSE sum(measured.bytes) OVER (ORDER BY measured.bytes, n.node_id) END <= %(budget)s AS fits
      FROM (SELECT DISTINCT ON (node_id) id FROM workflows_noderun
             WHERE run_id = %(run_id)s AND node_id = ANY(%(node_ids)s) AND status = 'completed'
             ORDER BY node_id, iteration DESC) latest
      JOIN workflows_noderun n ON n.id = latest.id
     CROSS JOIN LATERAL (SELECT COALESCE(n.output_bytes, octet_length(n.output::text), 4) AS bytes) measured
     WHERE NOT COALESCE(n.output @> '{"_passthrough": true}', false)
) latest_outputs ORDER BY node_id
"""


@dataclass(frozen=True)
class _Latest:
    node_id: str
    iteration: int
    artifact_id: str | None
    bytes: int
    text: str | None  # the output as JSON text; None when it was past the budget, and not read


def _latest(run: Run, node_ids: list[str], *, budget: int, whole: bool) -> list[_Latest]:
    if not node_ids:
        return []
    with connection.cursor() as cursor:
        cursor.execute(_LATEST_OUTPUTS, {"run_id": run.pk, "node_ids": node_ids, "budget": budget, "whole": whole})
        # jsonb arrives as its text (Django's loader); a SQL NULL output is JSON null
        return [_Latest(node_id, iteration, artifact_id, int(size), (text or "null") if fits else None)
                for node_id, iteration, artifact_id, size, fits, text in cursor.fetchall()]


@dataclass(frozen=True)
class Result:
    """A run's output as one answer carries it, or why it could not be computed (``error``:
    ``{error_type, rule, message}``). ``truncated``: the output, or a terminal node's entry in it,
    is a ``left_out`` marker."""

    output: Any = None
    error: dict[str, Any] | None = None
    truncated: bool = False
    pending: bool = False  # metadata.output is still to be computed (``services.runs.run_output_store``)


def output_href(run: Run) -> str:
    return f"/api/v1/runs/{run.pk}/output"


def _reads(ir: IR, spec: dict[str, Any]) -> list[str]:
    """The nodes whose outputs ``metadata.output`` reads: those its template or expression names,
    every node when an expression reads ``nodes`` whole. Raises ``ExpressionError``."""
    if "expression" in spec:
        named = fields_read(spec["expression"], "nodes")
        return sorted(ir.nodes if named is None else named)
    return sorted(referenced_nodes(spec["template"]))


def _failed(error_type: str, rule: str, message: str) -> dict[str, Any]:
    """Why the run's output cannot be computed, as stored (strict JSON: a CEL error may quote a NUL)."""
    return strict_json(bounded_error({"error_type": error_type, "rule": rule, "message": f"metadata.output: {message}"}),
                       non_finite="null")


def _read_for(run: Run, ir: IR, spec: dict[str, Any], budget: int) -> tuple[list[_Latest], dict[str, Any] | None]:
    """The latest outputs ``metadata.output`` is computed from, read while all of them fit
    ``budget``, or why it cannot be computed anywhere: past ``AOB_MAX_RESOLVED_CONFIG_BYTES`` of
    them (the bound on what a resolved config may take bounds what the result is taken from)."""
    try:
        rows = _latest(run, _reads(ir, spec), budget=budget, whole=True)
    except ExpressionError as exc:
        return [], _failed("OutputExpressionError", exc.rule, str(exc))
    read, ceiling = sum(r.bytes for r in rows), settings.AOB_MAX_RESOLVED_CONFIG_BYTES
    if read > ceiling:
        return [], _failed("OutputTooLarge", "max_resolved_config_bytes",
                           f"it reads {read} bytes of node outputs; at most {ceiling} are allowed "
                           "(AOB_MAX_RESOLVED_CONFIG_BYTES)")
    return rows, None


def _computed(spec: dict[str, Any], inputs: dict[str, Any], rows: list[_Latest]) -> tuple[Any, dict[str, Any] | None]:
    """``metadata.output`` over the outputs read, as strict JSON (``strict_json``, the one rule
    for what an output may hold), or the error naming the rule it broke."""
    outputs = {r.node_id: json.loads(r.text) for r in rows if r.text is not None}
    try:
        if "expression" in spec:
            value = evaluate(spec["expression"], {"inputs": inputs, "nodes": outputs})
        else:
            value = resolve(spec["template"], inputs=inputs, outputs=outputs)
        return strict_json(value), None
    except ExpressionError as exc:
        return None, _failed("OutputExpressionError", exc.rule, str(exc))
    except ConfigTooLarge as exc:
        return None, _failed(exc.code, "max_resolved_config_bytes", exc.message)
    except ReferenceMissing as exc:
        return None, _failed(exc.code, "reference_missing", exc.message)
    except NonJSONOutput as exc:
        return None, _failed(exc.code, "strict_json", exc.message)


def run_result(run: Run, *, page: Page | None = None) -> Result:
    """The run's output as an answer carries it: what fits ``page`` (the answer's budget, shared
    with what else it carries; by default ``AOB_DETAILS_MAX_BYTES`` after the run's inputs, as
    ``GET /runs/{id}`` answers), markers for the rest. ``metadata.output`` is read as stored."""
    if run.status != Run.Status.COMPLETED:
        return Result()
    if page is None:  # after the inputs the answer carries (``selectors.run_get``: them, or their marker)
        page = Page(settings.AOB_DETAILS_MAX_BYTES)
        shown = run.inputs_shown if hasattr(run, "inputs_shown") else run.inputs
        page.fits(json_size(shown))
    ir = load_ir(run)
    if ir.output_spec is not None:
        return _stored(run, page)
    output: dict[str, Any] = {}
    truncated = False
    for row in _latest(run, ir.ends, budget=page.left(), whole=False):
        if row.text is not None and page.fits(row.bytes):
            output[row.node_id] = json.loads(row.text)
        else:
            truncated = True
            output[row.node_id] = _left_out(run, row)
    return Result(output, truncated=truncated)


def _left_out(run: Run, row: _Latest) -> dict[str, Any]:
    """A terminal node's output an answer does not carry: the marker linking to its artifact,
    which answers it whole."""
    return left_out(row.bytes, node_value_href(run_id=run.pk, node_id=row.node_id, iteration=row.iteration,
                                               field="output", artifact_id=row.artifact_id))


# A stored output's size, and its JSON text while it fits what is left of the answer
_STORED = "SELECT size_bytes, CASE WHEN size_bytes <= %s THEN content::text END FROM workflows_artifact WHERE id = %s"


def _stored(run: Run, page: Page) -> Result:
    run_output.ask_unasked(run)  # a run completed before outputs were stored: pending from now
    if run.output_pending:
        return Result(pending=True)
    if run.output_artifact_id is None:
        return Result(error=run.output_error)
    with connection.cursor() as cursor:
        cursor.execute(_STORED, [page.left(), run.output_artifact_id])
        size, text = cursor.fetchone()
    if text is not None and page.fits(size):
        return Result(json.loads(text))
    return Result(left_out(size, output_href(run)), truncated=True)


def run_output_text(run: Run) -> tuple[str, dict[str, Any] | None]:
    """The run's output whole, as JSON text, or why it could not be computed (``GET
    /runs/{id}/output``, where the markers of ``run_result`` lead): ``null`` until it is stored.
    The terminal nodes' outputs, and a stored ``metadata.output``, are the database's JSON text,
    never parsed. The terminal nodes' outputs go in smallest first while their sum (sizes of the
    database's text, as ``run_result`` measures) fits ``AOB_MAX_NODE_OUTPUT_BYTES``, what one node's
    output may be; the rest are the markers ``run_result`` shows, linking to their artifacts. So the
    answer is bounded by one node's output, not by the run's (``AOB_MAX_RUN_OUTPUT_BYTES``)."""
    if run.status != Run.Status.COMPLETED:
        return "null", None
    ir = load_ir(run)
    if ir.output_spec is None:
        rows = _latest(run, ir.ends, budget=settings.AOB_MAX_NODE_OUTPUT_BYTES, whole=False)
        texts = ((r.node_id, r.text if r.text is not None else json.dumps(_left_out(run, r))) for r in rows)
        return "{" + ",".join(f"{json.dumps(node_id)}:{text}" for node_id, text in texts) + "}", None
    run_output.ask_unasked(run)  # a run completed before outputs were stored: pending from now
    if run.output_artifact_id is None:
        return "null", None if run.output_pending else run.output_error
    with connection.cursor() as cursor:
        cursor.execute("SELECT content::text FROM workflows_artifact WHERE id = %s", [run.output_artifact_id])
        return cursor.fetchone()[0], None


def run_output_compute(run: Run) -> tuple[Any, dict[str, Any] | None]:
    """``metadata.output`` over the run's latest node outputs (at most
    ``AOB_MAX_RESOLVED_CONFIG_BYTES`` of them), or why it cannot be computed: a worker's work
    (``services.runs.run_output_store``), never an answer's. Past the task's soft time limit, and
    for a fault of ours, the error says so (asking again would end the same way); a database
    error is raised, for the sweeper to ask again."""
    try:
        ir = load_ir(run)
        spec = ir.output_spec
        if spec is None:
            return None, None
        rows, error = _read_for(run, ir, spec, settings.AOB_MAX_RESOLVED_CONFIG_BYTES)
        if error is not None:
            return None, error
        return _computed(spec, run.inputs, rows)
    except SoftTimeLimitExceeded:
        return None, _failed("OutputTimeout", "time_limit", f"not computed within the worker's "
                             f"{settings.AOB_OUTPUT_TIME_LIMIT_S} s (AOB_OUTPUT_TIME_LIMIT_S)")
    except DatabaseError:
        raise
    except Exception as exc:
        logger.exception("results.output_failed", extra={"run_id": str(run.pk)})
        return None, _failed("OutputFailed", "internal", f"{type(exc).__name__}: {exc}")


def waiting_for_each(rows: Iterable[tuple[Any, str, str, str]]) -> dict[Any, str]:
    """What each of ``rows`` (node run id, node type, status, wait_reason) waits for, in words: its
    reason's (``NodeRun.waiting_for``), or its type's own where that says more (``NodeType.waiting_for``:
    a gate nobody can decide), asked once per type for all of its node runs that wait."""
    said: dict[Any, str] = {}
    waiting: dict[str, list[Any]] = {}
    for pk, node_type, status, reason in rows:
        said[pk] = NodeRun.waiting_for(status, reason)
        if said[pk]:
            waiting.setdefault(node_type, []).append(pk)
    for node_type, pks in waiting.items():
        spec = registry.get(node_type)
        if spec is not None and spec.waiting_for is not None:
            said.update({pk: words for pk, words in spec.waiting_for(pks).items() if pk in said})
    return said


def run_timeline(*, run: Run) -> dict[str, Any]:
    """Each node run with its queue wait and run time, and each attempt's start and duration: the
    run page's Gantt bars. Times are ISO instants; ``*_ms`` are offsets from the run's creation.

    Bounded whatever the run holds (up to AOB_MAX_NODE_RUNS_PER_RUN node runs of up to 20 attempts
    each, an error of up to 8 KiB per attempt): at most ``TIMELINE_MAX_ITEMS`` node runs are read,
    each attempt's error as the start of its message (``TIMELINE_ERROR_CHARS``, cut in the database;
    the whole error is in the node run's attempt log), only the ``node_started`` events of the node
    runs listed, and items go in while they fit ``TIMELINE_BUDGETS`` answers' budgets
    (``AOB_DETAILS_MAX_BYTES``); past either bound ``truncated`` is true."""
    origin = run.created_at
    shown = RawSQL(_ATTEMPTS_SHOWN, [TIMELINE_ERROR_CHARS], output_field=JSONField())  # noqa: S611 - a constant
    node_runs = list(NodeRun.objects.filter(run=run).order_by("queued_at", "id").annotate(attempts_shown=shown)
                     .values("id", "node_id", "node_type", "iteration", "status", "queued_at", "started_at",
                             "finished_at", "attempts", "attempts_shown", "wait_reason")[:TIMELINE_MAX_ITEMS + 1])
    truncated = len(node_runs) > TIMELINE_MAX_ITEMS
    node_runs = node_runs[:TIMELINE_MAX_ITEMS]
    waiting = waiting_for_each((nr["id"], nr["node_type"], nr["status"], nr["wait_reason"]) for nr in node_runs)
    starts: dict[tuple[str, int, int], datetime] = {}
    if node_runs:
        with connection.cursor() as cursor:
            cursor.execute(_ATTEMPT_STARTS, [[nr["node_id"] for nr in node_runs],
                                             [str(nr["iteration"]) for nr in node_runs], run.pk,
                                             Event.Type.NODE_STARTED.value])
            for node_id, iteration, attempt, at in cursor.fetchall():
                try:
                    starts[(node_id, int(iteration), int(attempt or 1))] = at
                except (TypeError, ValueError):
                    continue
    page = Page(TIMELINE_BUDGETS * settings.AOB_DETAILS_MAX_BYTES)
    now = timezone.now()
    items = []
    for nr in node_runs:
        attempts = []
        for entry in nr["attempts_shown"] or []:
            number = int(entry.get("attempt") or 0) if isinstance(entry.get("attempt"), int) else 0
            started = starts.get((nr["node_id"], nr["iteration"], number))
            message, chars = entry.get("message"), entry.get("message_chars") or 0
            if message is not None and chars > len(message):
                message = f"{message}… ({chars} characters in all)"
            attempts.append({"attempt": number, "status": str(entry.get("status") or ""),
                             "started_at": started, "start_ms": ms_between(origin, started),
                             "duration_ms": entry.get("duration_ms"), "error": message})
        end = nr["finished_at"] or (now if nr["status"] in NodeRun.ACTIVE else None)
        item = {
            "node_id": nr["node_id"], "type": nr["node_type"], "iteration": nr["iteration"], "status": nr["status"],
            "wait_reason": nr["wait_reason"], "waiting_for": waiting[nr["id"]],
            "attempts": nr["attempts"],
            "queued_at": nr["queued_at"], "started_at": nr["started_at"], "finished_at": nr["finished_at"],
            "queued_ms": ms_between(origin, nr["queued_at"]),
            "started_ms": ms_between(origin, nr["started_at"]),
            "finished_ms": ms_between(origin, nr["finished_at"]),
            "queue_wait_ms": ms_between(nr["queued_at"], nr["started_at"]),
            "run_ms": ms_between(nr["started_at"], end),
            "attempt_log": attempts,
        }
        if not page.fits(json_size(item)):
            truncated = True
            break
        items.append(item)
    span_end = run.finished_at or now
    return {"run_id": run.pk, "status": run.status, "created_at": run.created_at, "started_at": run.started_at,
            "finished_at": run.finished_at, "duration_ms": run_duration_ms(run),
            "span_ms": ms_between(origin, span_end), "items": items, "truncated": truncated}
