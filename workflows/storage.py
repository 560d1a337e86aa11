"""How much one owner's runs keep, and the bound on it (``AOB_OWNER_STORAGE_BYTES``).

A run keeps its inputs and its node outputs until retention removes it; each run is bounded
(``AOB_MAX_RUN_INPUTS_BYTES``, ``AOB_MAX_RUN_OUTPUT_BYTES``) and starts are rate-limited, but what
one owner kept together was bounded only by rate × retention: at the default limits some terabytes
a month, on a disk every owner shares. A run's start is refused once the owner's runs keep the bound.

The count is the database's: the owner's finished runs' bytes, kept up to date by a trigger as runs
finish and are deleted (``OwnerStorage``, migration 0027), and the owner's unfinished runs' bytes,
summed at the start through a partial index on them. Nothing on a node's path writes it: a
completion updates only its run's ``usage.output_bytes``, as before. An unfinished run may still
grow after a start is judged (up to its own output bound), so the bound can be passed by what the
owner's runs already started store; every start after that is refused until some are removed.
"""

from __future__ import annotations

from django.conf import settings
from django.db import connection

from aob_project.exceptions import Conflict
from workflows.models import Run

# the run's statuses that are not finished, as the partial index ``run_owner_unfinished`` lists them
UNFINISHED = tuple(status for status in Run.Status.values if status not in Run.FINISHED)
STORED = f"""
SELECT COALESCE((SELECT finished_bytes FROM workflows_ownerstorage WHERE owner_id = %(owner)s), 0)
     + COALESCE((SELECT SUM(inputs_bytes + COALESCE((usage->>'output_bytes')::bigint, 0)) FROM workflows_run
                  WHERE owner_id = %(owner)s AND status IN ({", ".join(f"'{status}'" for status in UNFINISHED)})), 0)
"""  # noqa: S608 - the model's own status values, no input


def owner_stored_bytes(owner_id: int) -> int:
    """What ``owner_id``'s runs keep now: inputs and node outputs as stored, finished or not."""
    with connection.cursor() as cursor:
        cursor.execute(STORED, {"owner": owner_id})
        return int(cursor.fetchone()[0])


def owner_storage(owner_id: int) -> dict[str, int | None]:
    """What ``owner_id``'s runs keep, and the bound (None: no bound): ``GET /auth/me``, ``aob whoami``."""
    return {"stored_bytes": owner_stored_bytes(owner_id), "limit_bytes": settings.AOB_OWNER_STORAGE_BYTES or None}


def check_room(*, owner_id: int, username: str, adding: int) -> None:
    """Refuse a run that would start with the owner's runs keeping ``AOB_OWNER_STORAGE_BYTES`` or
    more (``adding``: what it starts with, its inputs' bytes and the outputs a replay reuses). 0: no bound."""
    limit = settings.AOB_OWNER_STORAGE_BYTES
    if not limit:
        return
    stored = owner_stored_bytes(owner_id)
    if stored + adding > limit:
        raise Conflict(
            f"{username!r}'s runs keep {stored} bytes of inputs and outputs, and what this run starts with "
            f"({adding} bytes: its inputs, and the outputs a replay reuses) would pass the bound of {limit} "
            "(AOB_OWNER_STORAGE_BYTES): delete runs you no longer need (POST /api/v1/runs/{id}/delete, or "
            "POST /api/v1/runs/delete with the runs list's filters), or wait for retention to remove them",
            code="owner_storage_full",
            extra={"rule": "owner_storage_bytes", "limit": limit, "stored": stored, "adding": adding})
