"""Leases: a node that runs longer than its lease keeps it by heartbeat; deadlines come from the
database's clock; a heartbeat that finds its lease gone stops its executor; the sweeper re-queues
only what has lapsed at the moment of its update."""

from __future__ import annotations

import uuid

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone

from tests.conftest import stored_run, wait_for_run
from tests.engine.flow import http, submit, wait_until
from tests.engine.victim import http_victim, logged
from tests.support import faults
from workflows.engine import sweeper
from workflows.models import Event, NodeRun


@pytest.mark.faults_full  # a slow fault or its control: `make test-faults` only (tests/conftest.py)
def test_long_node_keeps_its_lease_and_runs_once(engine, api, remote):
    # the test stack's lease is 3 s and the sweeper runs every second: without renewals this node
    # would be re-queued and run again while the first attempt is still working
    definition = {"nodes": [{"id": "slow", "type": "http", "config": {"url": f"{remote.base}/sleep/8"}}], "edges": []}
    run = wait_for_run(api.post("/api/v1/runs", {"workflow": definition}, format="json").json()["run_id"], timeout=40)
    assert run.status == "completed", (run.error, list(NodeRun.objects.filter(run=run).values("attempts", "attempt_log")))
    node = NodeRun.objects.get(run=run, node_id="slow")
    assert node.attempts == 1
    assert len(remote.hits("/sleep")) == 1
    assert not Event.objects.filter(run=run, type="node_retrying").exists()


@pytest.mark.faults_full  # a slow fault or its control: `make test-faults` only (tests/conftest.py)
def test_negative_control_without_renewals_the_long_node_runs_again(engine, api, remote):
    """The trial above with its heartbeat renewing nothing (``aob:test:heartbeat_paused``): its
    lease lapses, the sweeper re-queues it and a second attempt sends the request again."""
    definition = {"nodes": [{"id": "slow", "type": "http", "config": {"url": f"{remote.base}/sleep/8"}}], "edges": []}
    run_id = api.post("/api/v1/runs", {"workflow": definition}, format="json").json()["run_id"]
    nr = NodeRun.objects.get(run_id=run_id, node_id="slow")
    HOOKS.set(f"aob:test:heartbeat_paused:{nr.pk}", 1)
    try:
        wait_until(lambda: len(remote.hits("/sleep")) == 2, timeout=15, what="the request sent again")
    finally:
        HOOKS.delete(f"aob:test:heartbeat_paused:{nr.pk}")
    run = wait_for_run(run_id, timeout=30)
    node = NodeRun.objects.get(pk=nr.pk)
    assert node.attempts == 2 and node.attempt_log[0]["status"] == "lost"  # doubled: the checks above detect it
    assert Event.objects.filter(run=run, type="node_retrying").exists()


# --- fenced leases --------------------------------------------------------------------------------


HOOKS = redis.Redis.from_url(settings.REDIS_URL)


def lose_the_lease(victim, api, remote) -> tuple[str, str]:
    """One trial: the victim runs a held GET; its heartbeat is cut off from the database until the
    sweeper gives the node to a second attempt, then restored. Returns (run id, hold key)."""
    key = uuid.uuid4().hex
    run_id = submit(api, {"nodes": [http("held", f"{remote.base}/hold/{key}")], "edges": []})
    wait_until(lambda: remote.hits(f"/hold/{key}"), what="the victim calling the remote")
    nr = NodeRun.objects.get(run_id=run_id, node_id="held")
    HOOKS.set(f"aob:test:heartbeat_paused:{nr.pk}", 1)
    try:
        wait_until(lambda: NodeRun.objects.filter(pk=nr.pk, status="queued").exists(), timeout=20,
                   what="the sweeper re-queueing the lapsed lease")
    finally:
        HOOKS.delete(f"aob:test:heartbeat_paused:{nr.pk}")
    wait_until(lambda: logged(victim, "lease.lost"), what="the victim's heartbeat finding its lease gone")
    return run_id, key


@pytest.mark.faults_full  # a slow fault or its control: `make test-faults` only (tests/conftest.py)
def test_a_heartbeat_that_finds_its_lease_gone_stops_its_request(engine, stack_env, api, remote):
    with http_victim(engine, stack_env) as victim:
        run_id, key = lose_the_lease(victim, api, remote)
        wait_until(lambda: remote.outcomes(key), timeout=10, what="the first request ending")
        assert remote.outcomes(key) == ["aborted"]  # stopped while the remote still held it
        wait_until(lambda: len(remote.hits(f"/hold/{key}")) == 2, what="the second attempt")
        remote.release(key)
        run = wait_for_run(run_id, timeout=30)
    assert run.status == "completed", run.error
    node = NodeRun.objects.get(run=run, node_id="held")
    assert node.attempts == 2
    assert [entry["status"] for entry in node.attempt_log] == ["lost", "completed"]
    assert remote.outcomes(key) == ["aborted", "answered"]  # the node's request ran to its end once
    assert Event.objects.filter(run=run, type="node_completed").count() == 1


@pytest.mark.faults_full  # a slow fault or its control: `make test-faults` only (tests/conftest.py)
def test_negative_control_without_the_stop_two_attempts_run_the_request_to_its_end(engine, stack_env, api, remote):
    HOOKS.set("aob:test:lease_stop_off", 1)
    try:
        with http_victim(engine, stack_env) as victim:
            run_id, key = lose_the_lease(victim, api, remote)
            assert remote.outcomes(key) == []  # the stale attempt is still in flight
            remote.release(key)
            run = wait_for_run(run_id, timeout=30)
    finally:
        HOOKS.delete("aob:test:lease_stop_off")
    assert run.status == "completed", run.error
    assert remote.outcomes(key) == ["answered", "answered"]  # doubled: the check above detects it
    assert Event.objects.filter(run=run, type="node_completed").count() == 1  # the completion stays fenced


def skewed_sweep(api, remote, monkeypatch) -> tuple[str, str, int]:
    """One trial: a held GET running with a live lease, and one sweep by a host whose clock runs an
    hour fast (the live sweeps paused meanwhile). Returns (run id, hold key, node runs re-queued)."""
    key = uuid.uuid4().hex
    run_id = submit(api, {"nodes": [http("held", f"{remote.base}/hold/{key}")], "edges": []})
    wait_until(lambda: remote.hits(f"/hold/{key}"), what="the worker calling the remote")
    with connection.cursor() as cursor:
        cursor.execute("SELECT lease_expires_at - clock_timestamp() FROM workflows_noderun "
                       "WHERE run_id = %s AND node_id = 'held'", [run_id])
        left = cursor.fetchone()[0].total_seconds()
    assert 0 < left <= settings.AOB_LEASE_S
    HOOKS.set("aob:test:sweeper_paused", 1)  # only the skewed sweep below runs meanwhile
    try:
        with monkeypatch.context() as skew:
            skewed = timezone.now() + timezone.timedelta(hours=1)
            skew.setattr(sweeper.timezone, "now", lambda: skewed)
            skew.setattr(settings, "AOB_SWEEPER_ENABLED", True)
            requeued = faults.unwrapped(sweeper, "sweep")()["requeued"]  # this sweep ignores the pause
    finally:
        HOOKS.delete("aob:test:sweeper_paused")
    return run_id, key, requeued


def test_lease_deadlines_are_judged_by_the_database_clock(engine, api, remote, monkeypatch):
    """A sweeper host whose clock runs an hour fast re-queues nothing whose lease is live by the
    database's clock; the claim took its deadline from that clock too."""
    run_id, key, requeued = skewed_sweep(api, remote, monkeypatch)
    assert requeued == 0
    assert NodeRun.objects.get(run_id=run_id, node_id="held").attempts == 1
    remote.release(key)
    assert wait_for_run(run_id).status == "completed"


@pytest.mark.faults_full  # a slow fault or its control: `make test-faults` only (tests/conftest.py)
def test_negative_control_judged_by_the_sweeper_s_clock_a_live_lease_is_taken_away(engine, api, remote, monkeypatch):
    """The trial above with the sweeper judging leases by its host's clock
    (``aob:test:lease_host_clock``): the live attempt is re-queued and the request sent again."""
    HOOKS.set("aob:test:lease_host_clock", 1)
    try:
        run_id, key, requeued = skewed_sweep(api, remote, monkeypatch)
    finally:
        HOOKS.delete("aob:test:lease_host_clock")
    assert requeued == 1
    wait_until(lambda: len(remote.hits(f"/hold/{key}")) == 2, what="a second attempt sending the request again")
    remote.release(key)
    run = wait_for_run(run_id)
    assert run.status == "completed", run.error
    node = NodeRun.objects.get(run=run, node_id="held")
    assert node.attempts == 2 and node.attempt_log[0]["status"] == "lost"


@pytest.mark.parametrize("renewed", [False, True])
def test_the_sweepers_update_rereads_the_lease(engine, user, renewed):
    """A heartbeat that renewed the lease after the sweeper read it wins: the UPDATE's own
    condition, not the earlier read, decides."""
    run = stored_run(user)
    with connection.cursor() as cursor:  # a finished run: the live sweeper and workers leave it alone
        cursor.execute("UPDATE workflows_run SET status = 'completed' WHERE id = %s", [run.pk])
    nr = NodeRun.objects.create(run=run, node_id="a", node_type="transform", status="running", attempts=1,
                                lease_expires_at=timezone.now() - timezone.timedelta(seconds=5))
    read = NodeRun.objects.select_related("run").get(pk=nr.pk)  # what the sweeper's query saw: lapsed
    if renewed:
        with connection.cursor() as cursor:  # the heartbeat's renewal lands in between
            cursor.execute("UPDATE workflows_noderun SET lease_expires_at = clock_timestamp() + interval '3 s' "
                           "WHERE id = %s", [nr.pk])
    sweeper._recover_lost(read, timezone.now())
    after = NodeRun.objects.get(pk=nr.pk)
    assert after.status == ("running" if renewed else "queued")
    assert [e["status"] for e in after.attempt_log] == ([] if renewed else ["lost"])
