"""The hourly prune, as beat sends it to a real worker: in slices of ``AOB_PRUNE_TASK_S``, each
sending the next at once, so a backlog never holds a process of the maintenance worker (which the
coordinator shares) for longer than a slice, and all of it still goes."""

from __future__ import annotations

import json
from typing import Any

from aob_project.celery import app
from tests.faults.harness import Victim, wait_for
from tests.retention.test_prune_bounds import big_old_runs
from workflows.models import Run
from workflows.registry import MAINTENANCE_QUEUE


def _slices(log: str) -> list[dict[str, Any]]:
    """The ``retention.pruned`` lines of the worker's log, as logged (JSON)."""
    found = []
    for line in log.splitlines():
        start = line.find("{")
        if "retention.pruned" in line and start >= 0:
            try:
                found.append(json.loads(line[start:]))
            except ValueError:
                continue
    return found


def test_the_hourly_prune_goes_in_slices_each_sending_the_next(engine: Any, stack_env: dict[str, str],
                                                                make_user: Any) -> None:
    owner = make_user("pruned")
    runs = big_old_runs(owner, 24, node_runs=20, events=40)
    # one run a batch, a second a slice: 24 runs of 60 rows each take several (about five a slice here)
    maintenance = Victim(engine, {**stack_env, "AOB_PRUNE_TASK_S": "1", "AOB_RETENTION_BATCH_SIZE": "1",
                                  "AOB_RETENTION_CHUNK_ROWS": "10"}, [MAINTENANCE_QUEUE], concurrency=1)
    try:
        app.send_task("retention.prune")
        wait_for(lambda: not Run.objects.filter(pk__in=[r.pk for r in runs]).exists(), 120,
                 "every run past retention pruned")
        wait_for(lambda: any(s.get("finished") for s in _slices(maintenance.proc.log.read_text())), 30,
                 "the last slice's line")
        slices = _slices(maintenance.proc.log.read_text())
    finally:
        maintenance.close()
    assert len(slices) >= 2, f"one prune took the whole backlog: {slices}"
    assert [s["finished"] for s in slices] == [False] * (len(slices) - 1) + [True], slices
    assert sum(s["runs"] for s in slices) >= len(runs)


def test_a_prune_finding_another_running_leaves_it_alone(engine: Any, stack_env: dict[str, str],
                                                         make_user: Any) -> None:
    """Beat's next tick while a chain of slices is still going started a second chain, a process of
    the maintenance worker each; it now finds the chain's lock held and does nothing."""
    from django.db import connection

    from retention.tasks import PRUNE_LOCK

    runs = big_old_runs(make_user("pruned"), 3, node_runs=2, events=2)
    maintenance = Victim(engine, stack_env, [MAINTENANCE_QUEUE], concurrency=1)
    try:
        with connection.cursor() as cursor:  # a prune holding the lock, as a slice does
            cursor.execute("SELECT pg_advisory_lock(%s)", [PRUNE_LOCK])
        try:
            app.send_task("retention.prune")
            wait_for(lambda: "retention.prune_skipped" in maintenance.proc.log.read_text(), 30, "the tick skipped")
            assert Run.objects.filter(pk__in=[r.pk for r in runs]).count() == 3
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [PRUNE_LOCK])
        app.send_task("retention.prune")
        wait_for(lambda: not Run.objects.filter(pk__in=[r.pk for r in runs]).exists(), 60, "the next one pruned")
    finally:
        maintenance.close()
