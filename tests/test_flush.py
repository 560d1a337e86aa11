"""The suite's own teardown (``tests/conftest.py``): a transactional test's flush that PostgreSQL
picks as a deadlock victim, as when a session worker still holds a table, is tried again; Django's
flush alone leaves the rows behind (the control)."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest
from django.core.management.color import no_style
from django.db import connection
from django.test import TransactionTestCase

from workflows.models import Artifact

WAIT_S = 20


def flush_order() -> list[str]:
    """The tables in the order the flush's TRUNCATE names (and locks) them."""
    tables = connection.introspection.django_table_names(only_existing=True, include_views=False)
    [truncate] = connection.ops.sql_flush(no_style(), tables)
    return [name.strip('"') for name in truncate.removeprefix("TRUNCATE ").rstrip(";").split(", ")]


def waiting_truncate(watch: psycopg.Connection) -> bool:
    row = watch.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event_type = 'Lock' AND query LIKE 'TRUNCATE%%'").fetchone()
    return bool(row and row[0])


def flush_against_a_reader(teardown: Any) -> list[BaseException]:
    """Flush while another session holds the last table TRUNCATE locks and then asks for its first:
    each waits for the other, and the flush, waiting longer, is the victim."""
    tables = flush_order()
    params = {k: v for k, v in connection.get_connection_params().items() if k in ("dbname", "host", "port", "user", "password")}
    errors: list[BaseException] = []
    with psycopg.connect(**params) as reader, psycopg.connect(**params, autocommit=True) as watch:
        reader.execute(f'SELECT 1 FROM "{tables[-1]}" LIMIT 1')  # noqa: S608 - a table name

        def flush() -> None:
            from django.db import connections
            try:
                teardown(TransactionTestCase(methodName="__init__"))
            except BaseException as exc:  # noqa: BLE001 - handed to the test
                errors.append(exc)
            finally:
                connections.close_all()

        thread = threading.Thread(target=flush)
        thread.start()
        deadline = time.monotonic() + WAIT_S
        while not waiting_truncate(watch):
            assert time.monotonic() < deadline, "the flush never waited for the reader"
            time.sleep(0.01)
        reader.execute(f'SELECT 1 FROM "{tables[0]}" LIMIT 1')  # noqa: S608 - waits until the victim gives up
        reader.commit()
        thread.join(WAIT_S)
        assert not thread.is_alive()
    return errors


@pytest.mark.parametrize("retried", [True, False], ids=["suite-teardown", "control-django-flush"])
def test_a_flush_that_is_a_deadlock_victim_is_tried_again(transactional_db: Any, retried: bool) -> None:
    from tests import conftest

    Artifact.objects.create(id="sha256:flush-probe", kind=Artifact.Kind.NODE_IO, content={}, size_bytes=2)
    teardown = TransactionTestCase._fixture_teardown if retried else conftest.DJANGO_FLUSH

    errors = flush_against_a_reader(teardown)

    if retried:
        assert errors == []
        assert not Artifact.objects.filter(id="sha256:flush-probe").exists()
    else:
        assert len(errors) == 1 and conftest._is_deadlock(errors[0]), errors
        assert Artifact.objects.filter(id="sha256:flush-probe").exists()
