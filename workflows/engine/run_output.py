"""A completed run's ``metadata.output``: the decision that completes the run sets
``output_asked_at`` (``planner.settle``) and asks a worker after its commit
(``dispatch.compute_output_after_commit``); the worker computes and stores it
(``services.runs.run_output_store``); the sweeper asks again past its time
(``sweeper.ask_for_outputs``); past ``AOB_MAX_ATTEMPTS_ON_LOST`` attempts a worker died in, the
worker that starts the next one ends it as ``lost`` instead. Either way it
ends here: one compare-and-set on ``output_asked_at``, so a repeat changes nothing, and one
``output_computed`` event. A run completed before outputs were stored (or by a worker of that
version during a deploy) is asked for on its first read (``ask_unasked``)."""

from __future__ import annotations

import json
from typing import Any

from django.db import connection
from django.utils import timezone

from workflows.models import Event, Run
from workflows.storage import kept_added

from . import events
from .dispatch import compute_output_after_commit

# The output settled once (a compare-and-set on ``output_asked_at``), its bytes counted in the
# run's ``usage.kept_bytes`` (what its owner's runs keep, ``workflows.storage``) in place of an
# output it held before, if any.
SETTLED = f"""
UPDATE workflows_run r
   SET output_asked_at = NULL, output_artifact_id = %(artifact_id)s, output_error = %(error)s::jsonb,
       usage = {kept_added("r.usage", "%(size)s - COALESCE((SELECT a.size_bytes FROM workflows_artifact a "
                                      "WHERE a.id = r.output_artifact_id), 0)")}
 WHERE r.id = %(run_id)s AND r.output_asked_at IS NOT NULL
"""  # noqa: S608 - no input


def settle(run_id: Any, owner_id: int, *, artifact_id: str | None, error: dict[str, Any] | None,
           size: int = 0) -> bool:
    """Store the output's artifact (``size`` bytes) or ``error``, in the caller's transaction;
    False when it was no longer pending."""
    with connection.cursor() as cursor:
        cursor.execute(SETTLED, {"artifact_id": artifact_id, "error": json.dumps(error) if error is not None else None,
                                 "size": size if artifact_id else 0, "run_id": run_id})
        if not cursor.rowcount:
            return False
    data = {"error_type": error["error_type"]} if error else {"artifact_id": artifact_id, "bytes": size}
    events.append(run_id, owner_id, [(Event.Type.OUTPUT_COMPUTED, "", data)])
    return True


def lost(attempts: int) -> dict[str, Any]:
    """The error of an output whose every attempt a worker died in."""
    return {"error_type": "OutputFailed", "rule": "worker_lost",
            "message": f"metadata.output: {attempts} attempts to compute it ended with their worker lost "
                       "(AOB_MAX_ATTEMPTS_ON_LOST)"}


def ask_unasked(run: Run) -> bool:
    """Ask for the output of a completed run that has none stored, no error and was never asked
    for (it completed before outputs were stored); any other run is left as it is. Once per run:
    the ask is a compare-and-set; the caller's ``run`` says pending afterwards whoever asked (a
    concurrent read, or this one), and the next read shows what a worker stored meanwhile."""
    if run.output_pending or run.output_artifact_id is not None or run.output_error is not None:
        return False
    now = timezone.now()
    asked = Run.objects.filter(pk=run.pk, output_asked_at__isnull=True, output_artifact__isnull=True,
                               output_error__isnull=True).update(output_asked_at=now)
    run.output_asked_at = now
    if asked:
        compute_output_after_commit(str(run.pk))
    return bool(asked)
