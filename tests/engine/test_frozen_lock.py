"""A process frozen while it holds a run's lock (a VM paused, a container paused, a debugger, a
SIGSTOP) keeps its transaction open: PostgreSQL sees a session idle in a transaction, and every
transaction that needs that run waits on it, the sweeper's among them (one pass for every owner's
lost work). The server ends such a session after ``AOB_DB_IDLE_IN_TRANSACTION_S``: its locks go, and
what the frozen transaction had half done is rolled back, never applied when the process wakes."""

from __future__ import annotations

import threading

import pytest
from django.db import DatabaseError, connection, connections, transaction
from django.utils import timezone

from tests.conftest import stored_run
from tests.engine.flow import wait_until
from tests.support.races import blocked_on
from workflows.engine import locks, sweeper
from workflows.models import NodeRun, Run

pytestmark = pytest.mark.django_db(transaction=True)


def frozen_holder(run_id: object) -> tuple[threading.Event, list[int], list[BaseException]]:
    """A thread that locks the run, half writes a decision, then freezes (sends nothing) until told
    to wake; returns (wake, its backend pid, what its commit raised)."""
    wake, pid, raised = threading.Event(), [], []
    holding = threading.Event()

    def hold() -> None:
        try:
            with transaction.atomic():
                locks.lock_run(run_id)
                Run.objects.filter(pk=run_id).update(error={"half": "done"})
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_backend_pid()")
                    pid.append(cursor.fetchone()[0])
                holding.set()
                wake.wait(30)
        except Exception as exc:  # noqa: BLE001 - the test reads it
            raised.append(exc)
        finally:
            connections.close_all()

    threading.Thread(target=hold, daemon=True).start()
    assert holding.wait(15)
    return wake, pid, raised


def lapsed_behind_a_frozen_holder(user) -> tuple[NodeRun, threading.Event, list[int], list[BaseException], list[str]]:
    """A node run whose lease lapsed, its run's lock held by a frozen process, and the sweeper's
    recovery of it started (in a thread): (node run, wake, holder's pid, what its commit raised,
    what the sweep answered)."""
    run = stored_run(user)
    Run.objects.filter(pk=run.pk).update(status="completed")  # the live sweeper and workers leave it alone
    lost = NodeRun.objects.create(run=run, node_id="a", node_type="transform", status="running", attempts=1,
                                  lease_expires_at=timezone.now() - timezone.timedelta(seconds=5))
    wake, pid, raised = frozen_holder(run.pk)
    swept: list[str] = []

    def sweep() -> None:
        try:
            swept.append(sweeper._recover_lost(NodeRun.objects.select_related("run").get(pk=lost.pk), timezone.now()))
        finally:
            connections.close_all()

    threading.Thread(target=sweep, daemon=True).start()
    return lost, wake, pid, raised, swept


def test_a_frozen_lock_holder_stalls_the_sweeper_only_until_the_server_ends_its_session(user, settings):
    settings.AOB_DB_IDLE_IN_TRANSACTION_S = 1
    lost, wake, pid, raised, swept = lapsed_behind_a_frozen_holder(user)
    run = lost.run
    try:
        wait_until(lambda: swept, timeout=10, what="the sweep past the frozen holder's lock")
    finally:
        wake.set()  # the frozen process wakes
    assert NodeRun.objects.get(pk=lost.pk).status == "queued"
    wait_until(lambda: raised, timeout=10, what="the woken holder's commit failing")
    assert isinstance(raised[0], DatabaseError) and "idle-in-transaction" in str(raised[0])
    assert Run.objects.get(pk=run.pk).error != {"half": "done"}  # its half-done decision was never applied
    assert pid and not blocked_on(pid)


def test_negative_control_without_the_bound_the_sweeper_waits_as_long_as_the_holder_is_frozen(user, settings):
    settings.AOB_DB_IDLE_IN_TRANSACTION_S = 0
    lost, wake, pid, raised, swept = lapsed_behind_a_frozen_holder(user)
    try:
        wait_until(lambda: blocked_on(pid), timeout=10, what="the sweep waiting on the frozen holder's lock")
        threading.Event().wait(2)  # twice the bound above: still waiting
        assert not swept and blocked_on(pid)
    finally:
        wake.set()
    wait_until(lambda: swept, timeout=10, what="the sweep once the holder woke and committed")
    assert not raised


@pytest.mark.parametrize(("value", "starts"), [("2147483", True), ("2147484", False)])
def test_a_bound_postgresql_cannot_take_refuses_start_up(value: str, starts: bool) -> None:
    """PostgreSQL takes at most 2^31 - 1 ms: past it every new connection failed on its ``SET``
    (``DataError``), each request a 500 and each task a failure, while every process started."""
    import os
    import subprocess
    import sys

    from django.conf import settings

    probe = "import django; django.setup(); from django.conf import settings; print(settings.AOB_DB_IDLE_IN_TRANSACTION_S)"
    started = subprocess.run([sys.executable, "-c", probe], cwd=settings.BASE_DIR, capture_output=True, text=True,
                             env={**os.environ, "AOB_DB_IDLE_IN_TRANSACTION_S": value}, timeout=60)
    assert (started.returncode == 0) is starts, started.stderr[-2000:]
    if not starts:
        assert "AOB_DB_IDLE_IN_TRANSACTION_S must be a number at least 0 and at most 2147483, not '2147484'" in started.stderr
