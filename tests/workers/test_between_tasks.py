"""A worker process whose connection an interrupt left inside a transaction starts its next task
on a clean one (aob_project/celery.py ``_between_tasks``), instead of failing every later task."""

import pytest
from django.db import DatabaseError, connection, connections, transaction

from aob_project.celery import _between_tasks


@pytest.mark.django_db(transaction=True)
def test_a_connection_left_in_an_atomic_block_is_replaced() -> None:
    broken = connections["default"]
    transaction.atomic().__enter__()  # an interrupt landed before the block could exit
    broken.close()  # as the executor does on a lost lease
    with pytest.raises(DatabaseError), broken.cursor() as cursor:
        cursor.execute("SELECT 1")  # what every later task met
    _between_tasks()
    fresh = connections["default"]
    assert fresh is not broken and not fresh.in_atomic_block
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)


@pytest.mark.django_db(transaction=True)
def test_a_healthy_connection_is_kept() -> None:
    kept = connections["default"]
    kept.ensure_connection()
    _between_tasks()
    assert connections["default"] is kept and kept.connection is not None
