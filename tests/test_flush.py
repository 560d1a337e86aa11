"""The suite's own teardown (``tests/conftest.py``): a transactional test's flush (``emptied``)
that PostgreSQL picks as a deadlock victim, as when a session worker still writes a table, is tried
again; the flush alone leaves the rows behind (the control). It waits for a writer's rows and
deletes them, as Django's TRUNCATE did, and leaves the content types as they were."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest
from django.db import connection
from django.test import TransactionTestCase

from tests import conftest
from workflows.models import Artifact

WAIT_S = 20


def flush_order() -> list[str]:
    """The tables in the order the flush locks them."""
    tables = connection.introspection.django_table_names(only_existing=True, include_views=False)
    return sorted(set(tables) - conftest.KEPT_TABLES)


def waiting_flush(watch: psycopg.Connection) -> bool:
    row = watch.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event_type = 'Lock' AND query LIKE 'LOCK TABLE%%'").fetchone()
    return bool(row and row[0])


def flush_while_written(teardown: Any, hold: Any, release: Any) -> list[BaseException]:
    """``teardown`` run in a thread while another session writes (``hold(writer)``), until the flush
    waits for it; then ``release(writer)``. The errors the flush raised."""
    params = {k: v for k, v in connection.get_connection_params().items() if k in ("dbname", "host", "port", "user", "password")}
    errors: list[BaseException] = []
    with psycopg.connect(**params) as writer, psycopg.connect(**params, autocommit=True) as watch:
        hold(writer)

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
        while not waiting_flush(watch):
            assert time.monotonic() < deadline, "the flush never waited for the writer"
            time.sleep(0.01)
        release(writer)
        thread.join(WAIT_S)
        assert not thread.is_alive()
    return errors


def flush_against_a_writer(teardown: Any) -> list[BaseException]:
    """Flush while another session writes the last table the flush locks and then asks for its
    first: each waits for the other, and the flush, waiting longer, is the victim."""
    tables = flush_order()

    def release(writer: psycopg.Connection) -> None:
        writer.execute(f'LOCK TABLE "{tables[0]}" IN ROW EXCLUSIVE MODE')  # waits until the victim gives up
        writer.commit()

    return flush_while_written(teardown, lambda writer: writer.execute(
        f'LOCK TABLE "{tables[-1]}" IN ROW EXCLUSIVE MODE'), release)  # as an INSERT takes it


@pytest.mark.parametrize("retried", [True, False], ids=["suite-teardown", "control-django-flush"])
def test_a_flush_that_is_a_deadlock_victim_is_tried_again(transactional_db: Any, retried: bool) -> None:
    Artifact.objects.create(id="sha256:flush-probe", kind=Artifact.Kind.NODE_IO, content={}, size_bytes=2)
    teardown = TransactionTestCase._fixture_teardown if retried else conftest.emptied

    errors = flush_against_a_writer(teardown)

    if retried:
        assert errors == []
        assert not Artifact.objects.filter(id="sha256:flush-probe").exists()
    else:
        assert len(errors) == 1 and conftest._is_deadlock(errors[0]), errors
        assert Artifact.objects.filter(id="sha256:flush-probe").exists()


def test_rows_a_writer_commits_while_the_flush_waits_are_deleted_and_content_types_are_kept(transactional_db: Any) -> None:
    """A session worker still writing when the test ends (an INSERT not yet committed): the flush
    waits for it, as TRUNCATE did, and its row is gone after; the content types keep their ids (the
    admin's log and the workers' caches name them)."""
    from django.contrib.auth.models import Group
    from django.contrib.contenttypes.models import ContentType

    types = dict(ContentType.objects.values_list("id", "model"))
    errors = flush_while_written(TransactionTestCase._fixture_teardown,
                                 lambda writer: writer.execute("INSERT INTO auth_group (name) VALUES ('straggler')"),
                                 lambda writer: writer.commit())

    assert errors == []
    assert not Group.objects.filter(name="straggler").exists()
    assert dict(ContentType.objects.values_list("id", "model")) == types
