"""The one lock order: a run's row first, then its node runs (then its approvals, patches and
events). Every transaction that writes more than one row of a run takes the run row first —
claim, complete, fail, park, resume, cancel, the coordinator's decision, the sweeper, an
approval's decision — so two of them queue on the run row instead of deadlocking.

The one-statement paths (claim, completion, the plain steps) take it with a ``locked`` CTE their
node-run update reads from: PostgreSQL evaluates the CTE, locking the run, before the update
reaches the node run row.

Before all of them, a claim takes its owner's slot lock for the node's type (``OWNER_SLOTS``,
``engine/admission.py``), only while the owner's slots are limited: nothing else takes it, and
nothing is held when it is asked for. The one lock taken out of this order is a release's
(``admission.RELEASE``): another run's held node run, ``SKIP LOCKED`` (it never waits), as the
last thing its transaction locks.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from psycopg.pq import TransactionStatus

from workflows.models import Run

LOCK_RUN = "SELECT status FROM workflows_run WHERE id = %s FOR UPDATE"
LOCK_RUN_OF_NODE_RUN = ("SELECT id, status FROM workflows_run "
                        "WHERE id = (SELECT run_id FROM workflows_noderun WHERE id = %s) FOR UPDATE")
# the run a sub-workflow's spend counts against, its parent (``Run.WITHIN``, as ``runs_below`` reads it)
ABOVE_OF = "SELECT budget->>%s FROM workflows_run WHERE id = %s"
SHARE_RUN = "SELECT status, budget->>%s FROM workflows_run WHERE id = %s FOR SHARE"


def bound_frozen_holders(sender: Any, connection: Any, **kwargs: Any) -> None:
    """On each new database connection (``connection_created``): a transaction left idle past
    ``AOB_DB_IDLE_IN_TRANSACTION_S`` is ended by the server. A process frozen while it holds a run's
    lock (a paused VM or container, a SIGSTOP) sends nothing, and before, every transaction that
    needed that run waited as long as it stayed frozen: the sweeper's pass for every owner, beat's
    deadlines, other decisions. Its half-done work is rolled back (a transaction is all or nothing)
    and its next statement fails when it wakes. A ``SET`` rather than a startup option, which
    PgBouncer refuses."""
    seconds = settings.AOB_DB_IDLE_IN_TRANSACTION_S
    if seconds and connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('idle_in_transaction_session_timeout', %s, false)",
                           [f"{max(1, round(seconds * 1000))}ms"])


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


def ended_above(run_id: Any, *, parent: Any = None) -> str | None:
    """The status of the nearest run above ``run_id`` (a sub-workflow's parent, theirs, up the
    nesting) that has ended, or None. A parent's end cancels its children later, in bounded batches
    on the maintenance queue (``subflows.cancel_children``): until then a child's own status says
    nothing of it. Each run above is share-locked up to the one that ended, after the child (a
    child before its parent, as ``runs_below_locked`` takes them): called while the caller holds
    the child's lock, a parent's cancel is committed before this reads it, or waits for the
    caller's transaction. One query for a top run, one more a level; ``parent``, the run's
    ``Run.WITHIN`` where the caller read it, saves the first."""
    _in_transaction()
    with connection.cursor() as cursor:
        if parent is None:
            cursor.execute(ABOVE_OF, [Run.WITHIN, run_id])
            row = cursor.fetchone()
            above = row[0] if row else None
        else:
            above = parent
        for _ in range(settings.AOB_SUBWORKFLOW_MAX_DEPTH + 1):
            try:
                above_id = uuid.UUID(str(above)) if above else None
            except ValueError:
                above_id = None
            if above_id is None:
                return None
            cursor.execute(SHARE_RUN, [Run.WITHIN, above_id])
            row = cursor.fetchone()
            if row is None:  # removed: a finished run's prune
                return None
            status, above = row
            if status in Run.FINISHED:
                return str(status)
    return None


def lock_run_of(node_run_id: int) -> tuple[Any, str] | None:
    """Lock the row of the node run's run; ``(run id, status)``, or None."""
    _in_transaction()
    with connection.cursor() as cursor:
        cursor.execute(LOCK_RUN_OF_NODE_RUN, [node_run_id])
        row = cursor.fetchone()
    return (row[0], row[1]) if row else None


def pipelined(lock_sql: str, lock_params: Any, sql: str, params: Any) -> list[tuple[Any, ...]]:
    """Take a lock (``lock_sql``), then run ``sql`` with a snapshot taken once the lock is held,
    in one transaction (a statement's snapshot predates a lock it waits for; the next statement's
    does not). In autocommit (a worker) ``BEGIN; lock; sql; COMMIT`` go out pipelined, one round
    trip; inside a caller's transaction, as a savepoint."""
    if connection.in_atomic_block:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(lock_sql, lock_params)
            cursor.execute(sql, params)
            return cursor.fetchall()
    connection.ensure_connection()
    raw = connection.connection
    try:
        with connection.wrap_database_errors, raw.cursor() as lock, raw.cursor() as step:
            with raw.pipeline():
                lock.execute("BEGIN")
                lock.execute(lock_sql, lock_params)
                step.execute(sql, params)
                lock.execute("COMMIT")
            return step.fetchall()
    except Exception:
        with contextlib.suppress(Exception):
            raw.execute("ROLLBACK")
        if raw.closed or raw.info.transaction_status != TransactionStatus.IDLE:
            connection.close()  # never hand a half-open transaction (holding a lock) to the next task
        raise
