"""``steps._locked_statement`` on a worker's autocommit connection: ``BEGIN; lock the run;
statement; COMMIT`` pipelined in one round trip. The statement runs under the run lock, and
whatever happens, the connection is handed back with no transaction open."""

from __future__ import annotations

import psycopg
import pytest
from django.db import DatabaseError, connection
from psycopg.pq import TransactionStatus

from tests.conftest import stored_run
from workflows.engine import steps
from workflows.models import Run

pytestmark = pytest.mark.django_db(transaction=True)

LOCKED_BY_ME = """
SELECT xmax::text::bigint = pg_current_xact_id()::text::bigint %% 4294967296
  FROM workflows_run WHERE id = %(run_id)s
"""


def lockable_from_elsewhere(run: Run) -> bool:
    """Whether another session could lock the run row right now."""
    params = connection.get_connection_params()
    with psycopg.connect(**params, autocommit=False) as other:
        try:
            other.execute("SELECT id FROM workflows_run WHERE id = %s FOR UPDATE NOWAIT", [run.pk])
            return True
        except psycopg.errors.LockNotAvailable:
            return False


def test_the_statement_runs_under_the_run_lock_and_commits(user):
    run = stored_run(user)
    assert connection.get_autocommit() and not connection.in_atomic_block
    rows = steps._locked_statement(str(run.pk), LOCKED_BY_ME, {"run_id": str(run.pk)})
    assert rows == [(True,)]
    assert connection.connection.info.transaction_status == TransactionStatus.IDLE
    assert lockable_from_elsewhere(run)


def test_a_failing_statement_rolls_back_and_leaves_a_usable_connection(user):
    run = stored_run(user)
    with pytest.raises(DatabaseError):  # Django's exception, as from any other query
        steps._locked_statement(str(run.pk), "SELECT 1 / 0", {})
    assert lockable_from_elsewhere(run)  # the lock went with the rolled-back transaction
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
    assert connection.connection.info.transaction_status == TransactionStatus.IDLE
