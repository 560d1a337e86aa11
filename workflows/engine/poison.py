"""Poison decisions end: a decision that keeps raising fails its run instead of holding a
coordinator slot forever (the sweeper would otherwise re-send it without end)."""

from __future__ import annotations

import json
import logging

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from workflows.limits import bounded_error
from workflows.models import Event, NodeRun, Run

from . import events, locks, transitions
from .coordinator import cancel_approvals
from .dispatch import coordinate_later

logger = logging.getLogger(__name__)

DECISION_FAILED = "decision_failed"


def decision_failed(node_run_id: int, exc: BaseException) -> str:
    """A decision about ``node_run_id`` raised (rolled back). Record it in the node run's
    attempt log; below ``AOB_MAX_DECISION_FAILURES`` ask again after a backoff (the sweeper
    would too), at the limit fail the run with ``DecisionFailed`` so a poison message ends
    instead of holding a coordinator slot forever. Returns ``retrying``, ``failed`` or ``gone``."""
    connection.close_if_unusable_or_obsolete()
    error = bounded_error({"error_type": type(exc).__name__, "message": str(exc) or type(exc).__name__})
    now = timezone.now()
    entry = {"status": DECISION_FAILED, "error": error, "at": now.isoformat()}
    with transaction.atomic():
        locks.lock_run_of(node_run_id)  # the run row first (workflows/engine/locks.py)
        with connection.cursor() as cursor:
            cursor.execute(
                """
                UPDATE workflows_noderun SET attempt_log = attempt_log || %s::jsonb
                 WHERE id = %s AND NOT consumed
             RETURNING run_id, node_id,
                       jsonb_array_length(jsonb_path_query_array(attempt_log, '$[*] ? (@.status == "decision_failed")'))
                """, [json.dumps([entry]), node_run_id])
            row = cursor.fetchone()
        if row is None:
            return "gone"  # consumed meanwhile, or no such node run
        run_id, node_id, failures = row
        limit = settings.AOB_MAX_DECISION_FAILURES
        logger.error("decision.failed", extra={"run_id": str(run_id), "node_id": node_id, "failures": failures,
                                               "error_type": error["error_type"]}, exc_info=exc)
        if failures < limit:
            transaction.on_commit(lambda: coordinate_later(node_run_id, countdown_s=min(2.0 ** failures / 4, 30.0)))
            return "retrying"
        run = Run.objects.select_for_update().filter(pk=run_id).first()
        NodeRun.objects.filter(pk=node_run_id).update(consumed=True, taken=[])
        if run is None or run.status in Run.FINISHED:
            return "gone"
        run.error = {"error_type": "DecisionFailed", "node_id": node_id, "failures": failures,
                     "message": f"deciding what follows {node_id!r} failed {failures} times: "
                                f"{error['error_type']}: {error['message']}"}
        transitions.move_run(run_id, Run.Status.FAILED, sources=[run.status], error=run.error, finished_at=now)
        transitions.cancel_active(run_id, now)
        cancel_approvals(run_id, now)
        events.append(run_id, run.owner_id, [(Event.Type.WORKFLOW_FAILED, node_id, {"error": run.error})])
    return "failed"
