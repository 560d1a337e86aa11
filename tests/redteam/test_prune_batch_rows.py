"""Red team (run shapes): a prune's batch is counted in runs (AOB_RETENTION_BATCH_SIZE, 100), never in
the rows those runs hold. A run may hold AOB_MAX_NODE_RUNS_PER_RUN (10,000) node runs and several
events each, so one batch of one owner's big runs is a single transaction deleting millions of rows,
on the maintenance queue (beside the sweeper), and a staff prune over the API runs past
AOB_PRUNE_REQUEST_S because the deadline is only checked between batches."""

from __future__ import annotations

import time
from typing import Any

from django.db import connection
from django.utils import timezone

from tests.conftest import client_for, stored_run
from workflows.models import Event, NodeRun, Run

RUNS = 4
NODE_RUNS = 10_000  # AOB_MAX_NODE_RUNS_PER_RUN: what a loop of one run may reach
EVENTS = 10_000


def _big_old_runs(owner: Any) -> list[Run]:
    runs = [stored_run(owner) for _ in range(RUNS)]
    for run in runs:
        NodeRun.objects.bulk_create([NodeRun(run=run, node_id="body", iteration=i, node_type="transform",
                                             status="completed", consumed=True, attempts=1)
                                     for i in range(NODE_RUNS)], batch_size=5000)
        Event.objects.bulk_create([Event(run=run, seq=i, type="node_completed", node_id="body", data={})
                                   for i in range(EVENTS)], batch_size=5000)
    Run.objects.filter(pk__in=[r.pk for r in runs]).update(
        status="completed", finished_at=timezone.now() - timezone.timedelta(days=45))
    return runs


class _RowsPerTransaction:
    """Rows each DELETE removed, summed per transaction (the test's ``db`` wraps everything, so a
    prune's ``transaction.atomic`` is a savepoint: from SAVEPOINT to its RELEASE)."""

    def __init__(self) -> None:
        self.current = 0
        self.largest = 0

    def __call__(self, execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        head = sql.lstrip()[:20].upper()
        if head.startswith("SAVEPOINT"):
            self.current = 0
        elif head.startswith("DELETE"):
            self.current += max(context["cursor"].rowcount, 0)
            self.largest = max(self.largest, self.current)
        return result


def test_one_prune_batch_of_big_runs_is_one_unbounded_transaction(db: Any, make_user: Any, settings: Any) -> None:
    staff = make_user("ops", is_staff=True)
    runs = _big_old_runs(staff)
    settings.AOB_PRUNE_REQUEST_S = 1  # the smallest start-up allows
    tally = _RowsPerTransaction()

    started = time.monotonic()
    with connection.execute_wrapper(tally):
        answer = client_for(staff).post("/api/v1/prune", {}, format="json")
    elapsed = time.monotonic() - started

    assert answer.status_code == 200, answer.content
    # A batch is "AOB_RETENTION_BATCH_SIZE rows ... its own short transaction" (retention/services.py):
    # allow each run of a batch a hundred rows; four runs' 80,000 went in one transaction.
    bound = settings.AOB_RETENTION_BATCH_SIZE * 100
    assert tally.largest <= bound, (
        f"one prune transaction deleted {tally.largest} rows (bound {bound}); the API prune asked to stop after "
        f"{settings.AOB_PRUNE_REQUEST_S} s took {elapsed:.1f} s and answered {answer.json()}")
