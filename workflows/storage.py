"""How much one owner's runs keep, and the bound on it (``AOB_OWNER_STORAGE_BYTES``).

A run keeps its inputs, its node outputs, and (``usage.kept_bytes``) its node runs' resolved
inputs, its computed ``metadata.output`` and the definition it runs (sent inline, a tag's version
or a replay's source's: it keeps it past the tag's delete), until retention removes it; each run is
bounded (``AOB_MAX_RUN_INPUTS_BYTES``, ``AOB_MAX_RUN_OUTPUT_BYTES``) and starts are rate-limited, but what
one owner kept together was bounded only by rate × retention: at the default limits some terabytes
a month, on a disk every owner shares. A run's start is refused once the owner's runs keep the bound.

The count is the database's: the owner's finished runs' bytes, kept up to date by a trigger as runs
finish and are deleted (``OwnerStorage``, migration 0027), and the owner's unfinished runs' bytes,
summed at the start through a partial index on them. Nothing on a node's path writes it: a
completion updates only its run's ``usage`` (``output_bytes``, ``kept_bytes``) in the statement
that stores its output. An unfinished run may still grow after a start is judged (its outputs up
to their bound, its node runs' inputs with each node run), so the bound can be passed by what the
owner's runs already started store; every start after that is refused until some are removed.

A node run's input is counted as the database measured it (``NodeRun.input_bytes``, its text as
stored) and counted again only by what a later write of it changed (a retry resolves it again);
the computed output and the definition by their artifact's ``size_bytes``, once per run that
keeps them (an artifact two runs share is stored once but counted for each: neither run can
remove it while the other keeps it). None of these count against ``AOB_MAX_RUN_OUTPUT_BYTES``.
"""

from __future__ import annotations

from django.conf import settings
from django.db import connection

from aob_project.exceptions import Conflict
from workflows.models import Run

# the run's statuses that are not finished, as the partial index ``run_owner_unfinished`` lists them
UNFINISHED = tuple(status for status in Run.Status.values if status not in Run.FINISHED)
# What one run keeps, in bytes: as migration 0032's trigger sums it for a finished run.
KEPT = ("(inputs_bytes + COALESCE((usage->>'output_bytes')::bigint, 0) "
        "+ COALESCE((usage->>'kept_bytes')::bigint, 0))")
STORED = f"""
SELECT COALESCE((SELECT finished_bytes FROM workflows_ownerstorage WHERE owner_id = %(owner)s), 0)
     + COALESCE((SELECT SUM{KEPT} FROM workflows_run
                  WHERE owner_id = %(owner)s AND status IN ({", ".join(f"'{status}'" for status in UNFINISHED)})), 0)
"""  # noqa: S608 - the model's own status values, no input


def kept_added(usage: str, size: str) -> str:
    """SQL: the run ``r``'s ``usage`` (or the expression ``usage`` made of it) with ``size`` (an SQL
    expression; negative: taken back) added to ``kept_bytes``. Added in SQL under the run's lock,
    as ``usage.output_bytes`` is (``engine.outputs.OUTPUT_BYTES_ADDED``), never written back from a
    value read before."""
    return f"jsonb_set({usage}, '{{kept_bytes}}', to_jsonb(COALESCE((r.usage->>'kept_bytes')::bigint, 0) + {size}))"


def owner_stored_bytes(owner_id: int) -> int:
    """What ``owner_id``'s runs keep now, finished or not: inputs, node outputs, node runs' inputs,
    computed outputs and inline definitions as stored."""
    with connection.cursor() as cursor:
        cursor.execute(STORED, {"owner": owner_id})
        return int(cursor.fetchone()[0])


def owner_storage(owner_id: int) -> dict[str, int | None]:
    """What ``owner_id``'s runs keep, and the bound (None: no bound): ``GET /auth/me``, ``aob whoami``."""
    return {"stored_bytes": owner_stored_bytes(owner_id), "limit_bytes": settings.AOB_OWNER_STORAGE_BYTES or None}


def check_room(*, owner_id: int, username: str, adding: int) -> None:
    """Refuse a run that would start with the owner's runs keeping ``AOB_OWNER_STORAGE_BYTES`` or
    more (``adding``: what it starts with: its inputs, its definition, and the node runs a replay
    reuses). 0: no bound."""
    limit = settings.AOB_OWNER_STORAGE_BYTES
    if not limit:
        return
    stored = owner_stored_bytes(owner_id)
    if stored + adding > limit:
        raise Conflict(
            f"{username!r}'s runs keep {stored} bytes (their inputs, outputs, node runs' inputs and definitions), "
            f"and what this run starts with ({adding} bytes: its inputs, its definition, and the node runs a "
            f"replay reuses) would pass the bound of {limit} "
            "(AOB_OWNER_STORAGE_BYTES): delete runs you no longer need (POST /api/v1/runs/{id}/delete, or "
            "POST /api/v1/runs/delete with the runs list's filters), or wait for retention to remove them",
            code="owner_storage_full",
            extra={"rule": "owner_storage_bytes", "limit": limit, "stored": stored, "adding": adding})
