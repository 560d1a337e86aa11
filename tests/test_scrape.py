"""/metrics' database gauges count what is in flight and read only those rows; a gauge whose
statement is slow is left out of the scrape, never a web thread held."""

from __future__ import annotations

import logging

import psycopg
import pytest
from django.db import connection

from aob_project import scrape
from aob_project.scrape import StateCollector
from tests.conftest import stored_run

FINISHED = 20_000


def rows_read(table: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT COALESCE(seq_tup_read, 0) + COALESCE(idx_tup_fetch, 0) "
                       "FROM pg_stat_xact_user_tables WHERE relname = %s", [table])
        row = cursor.fetchone()
    return row[0] if row else 0


def add_node_runs(run_id: int, count: int, status: str, node_type: str = "transform", wait_reason: str = "") -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO workflows_noderun (run_id, node_id, iteration, node_type, status, attempts, attempt_log,"
            " consumed, reused, queued_at, usage, wait_reason)"
            " SELECT %s, %s, g, %s, %s, 1, '[]', false, false, now(), '{}', %s FROM generate_series(1, %s) AS g",
            [run_id, f"{node_type}-{status}", node_type, status, wait_reason, count])


@pytest.mark.django_db
def test_a_scrape_reads_the_node_runs_in_flight_not_every_one_kept(make_user):
    """Each scrape grouped every node run kept, finished or not (a red team's measure: 200,000
    finished ones, 0.2 s of a web thread a scrape, growing with what tenants ran for as long as the
    retention keeps it). The gauge counts the queued, running and waiting ones, through the partial
    indexes holding them; what finished is aob_node_duration_seconds_count's."""
    run = stored_run(make_user("tenant"))
    add_node_runs(run.pk, FINISHED, "completed")
    add_node_runs(run.pk, 3, "queued")
    add_node_runs(run.pk, 2, "running")
    add_node_runs(run.pk, 4, "waiting", wait_reason="approval")
    add_node_runs(run.pk, 1, "waiting", node_type="made-up", wait_reason="workflow")
    before = rows_read("workflows_noderun")

    families = {family.name: family for family in StateCollector().collect()}

    read = rows_read("workflows_noderun") - before
    assert read <= 10, f"one scrape read {read} node runs for 10 in flight"
    counted = {(s.labels["type"], s.labels["status"]): s.value for s in families["aob_node_runs"].samples}
    assert counted[("transform", "queued")] == 3 and counted[("transform", "running")] == 2
    assert counted[("transform", "waiting")] == 4 and counted[("other", "waiting")] == 1
    assert counted[("http", "queued")] == 0  # nothing of a type in flight reads 0, not a gap
    assert {status for _, status in counted} == {"queued", "running", "waiting"}
    assert {s.labels["status"] for s in families["aob_runs"].samples} == {"queued", "running", "waiting_for_approval"}


@pytest.mark.django_db
def test_a_gauge_that_does_not_answer_in_time_is_left_out_and_logged(make_user, monkeypatch, caplog):
    """A gauge's statement runs under a short statement_timeout: a table locked by a migration (or
    a database too slow to answer) leaves that gauge out of the scrape, the others answered."""
    monkeypatch.setattr(scrape, "GAUGE_TIMEOUT_MS", 100, raising=False)
    params = {k: v for k, v in connection.get_connection_params().items()
              if k in ("dbname", "host", "port", "user", "password")}
    with psycopg.connect(**params) as locker, caplog.at_level(logging.WARNING, logger="aob_project.scrape"):
        locker.execute("LOCK TABLE workflows_runpatch IN ACCESS EXCLUSIVE MODE NOWAIT")
        with connection.cursor() as cursor:  # a scrape that waits on regardless fails here, not hangs
            cursor.execute("SET LOCAL statement_timeout = 5000")
        names = [family.name for family in StateCollector().collect()]
        locker.rollback()

    assert names == ["aob_runs", "aob_node_runs", "aob_approvals_pending"]
    timed_out = [r for r in caplog.records if r.getMessage() == "metrics.gauge_timed_out"]
    assert [(r.metric, r.limit_ms) for r in timed_out] == [("aob_run_patches", 100)]
    with connection.cursor() as cursor:  # the timeout ended with the gauge's statement
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] == "5s"
