"""The one lock order: a run's row first, then its node runs (then its approvals, patches and
events). Every transaction that writes more than one row of a run takes the run row first —
claim, complete, fail, park, resume, cancel, the coordinator's decision, the sweeper, an
approval's decision — so two of them queue on the run row instead of deadlocking.

The one-statement paths (claim, completion, the plain steps) take it with a ``locked`` CTE their
node-run update reads from: PostgreSQL evaluates the CTE, locking the run, before the update
reaches the node run row.
"""

from __future__ import annotations

from typing import Any

from django.db import connection

LOCK_RUN = "SELECT status FROM workflows_run WHERE id = %s FOR UPDATE"
LOCK_RUN_OF_NODE_RUN = ("SELECT id, status FROM workflows_run "
                        "WHERE id = (SELECT run_id FROM workflows_noderun WHERE id = %s) FOR UPDATE")


def _in_transaction() -> None:
    if not connection.in_atomic_block:
        raise RuntimeError("a run lock outside a transaction is released at once")


def lock_run(run_id: Any) -> str | None:
    """Lock the run row (inside the caller's transaction); its status, or None if there is no such run."""
    _in_transaction()
    with connection.cursor() as cursor:
        cursor.execute(LOCK_RUN, [run_id])
        row = cursor.fetchone()
    return row[0] if row else None


def lock_run_of(node_run_id: int) -> tuple[Any, str] | None:
    """Lock the row of the node run's run; ``(run id, status)``, or None."""
    _in_transaction()
    with connection.cursor() as cursor:
        cursor.execute(LOCK_RUN_OF_NODE_RUN, [node_run_id])
        row = cursor.fetchone()
    return (row[0], row[1]) if row else None
