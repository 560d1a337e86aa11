"""Redis flushed (FLUSHALL) and restarted — no persistence, so the broker's queues, the
unacknowledged messages, hooks and counters all go — while runs wait at a human approval and
decisions are pending: approvals already given whose coordinator messages sit in the queue (the
coordinator consumer paused). PostgreSQL holds the truth: the approvals can still be decided, and
the sweeper re-sends the decisions whose messages went with Redis."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from django.conf import settings

from aob.embedded import EmbeddedRedis
from aob_project.celery import COORDINATOR_QUEUE, app
from approvals.models import Approval
from tests.conftest import wait_for_run
from tests.engine.flow import submit, wait_all

from .harness import (
    Trial,
    Victim,
    fresh_connections,
    owned_server,
    pause_sweeper,
    record,
    resume_sweeper,
    supervise,
)
from .probe import Probe, account, settle

FAULT = "Redis flushed and restarted"
pytestmark = [pytest.mark.fault, pytest.mark.faults_full]
EXPECTED = {"a": "completed", "h": "completed", "c": "completed", "d": "completed"}


def gated(base: str, tag: str) -> Probe:
    """a (http) → h (hitl) → c (http) → d (transform)."""
    def n(node: str) -> str:
        return f"{node}_{tag}"

    paths = {node: f"/echo/fx/{tag}/{node}" for node in ("a", "c")}
    definition: dict[str, Any] = {
        "nodes": [{"id": n("a"), "type": "http", "config": {"url": f"{base}{paths['a']}", "method": "POST"}},
                  {"id": n("h"), "type": "hitl", "config": {"message": "go on?"}},
                  {"id": n("c"), "type": "http", "config": {"url": f"{base}{paths['c']}", "method": "POST"}},
                  {"id": n("d"), "type": "transform", "config": {"expression": f"nodes.{n('c')}.status_code"}}],
        "edges": [{"from": n("a"), "to": n("h")}, {"from": n("h"), "to": n("c"), "condition": "$.approved == true"},
                  {"from": n("c"), "to": n("d")}],
    }
    return Probe(tag, definition, paths)


@pytest.fixture(scope="module")
def coordinator(workers, stack_env):
    """The only consumer of the coordinator queue while this module runs, stopped to let
    decisions wait in the broker."""
    victim = Victim(workers, stack_env, [COORDINATOR_QUEUE])
    yield victim
    victim.close(workers)


def approve(api, run_id: str) -> None:
    approval = Approval.objects.get(run_id=run_id, status=Approval.Status.PENDING)
    response = api.post(f"/api/v1/approvals/{approval.pk}/decide", {"approve": True}, format="json")
    assert response.status_code == 200, response.json()


def flush_and_restart(trial: Trial, workers, stack_env, coordinator, api, remote, sweeper: bool) -> tuple[list[str], list[Probe], float]:
    server = owned_server(EmbeddedRedis)
    count = trial.randint("runs", 2, 4)
    pending = trial.randint("decided_before", 1, count - 1)  # approvals given before the flush
    down_s = trial.uniform("down_s", 0.0, 1.5)
    probes = [gated(remote.base, f"{trial.tag}r{i}") for i in range(count)]
    run_ids = [submit(api, p.definition) for p in probes]
    for run_id in run_ids:
        assert wait_for_run(run_id, statuses={"waiting_for_approval"}).status == "waiting_for_approval"
    coordinator.stop()  # decisions now wait in the broker
    for run_id in run_ids[:pending]:
        approve(api, run_id)
    redis.Redis.from_url(settings.REDIS_URL).flushall()
    fault_at = time.time()
    server.restart(down_s)
    if not sweeper:
        pause_sweeper()  # the flush took the switch with it
    fresh_connections(app)  # the old ones went with the server
    coordinator.restart()
    # Celery's worker can exit on the lost connection (kombu's Redis transport, restoring unacked
    # messages while closing, fails with AttributeError: "Unrecoverable error"): started again.
    trial.draw("restarted", supervise(workers, stack_env))
    for run_id in run_ids[pending:]:  # approvals waiting through the flush are decided now
        approve(api, run_id)
    return run_ids, probes, fault_at


def test_runs_finish_after_approval_and_nothing_is_lost(trial: Trial, engine, workers, stack_env, coordinator, api,
                                                           remote):
    run_ids, probes, fault_at = flush_and_restart(trial, workers, stack_env, coordinator, api, remote, sweeper=True)
    settle(run_ids, timeout=60)
    outcome = account(run_ids, probes, remote, fault_at, expected=EXPECTED)
    record(trial, outcome)
    assert outcome.clean, f"{trial}: {outcome.detail}"


def test_control_without_the_sweeper_the_pending_decisions_are_lost(control_trial: Trial, engine, workers,
                                                                    stack_env, coordinator, api, remote):
    run_ids, probes, fault_at = flush_and_restart(control_trial, workers, stack_env, coordinator, api, remote,
                                                         sweeper=False)
    settle(run_ids, timeout=8)
    outcome = account(run_ids, probes, remote, fault_at, expected=EXPECTED)
    record(control_trial, outcome)
    resume_sweeper()
    assert outcome.lost >= 1, f"{control_trial}: the control lost nothing, so the trial proves nothing"
    runs = wait_all(run_ids, timeout=60)
    assert {r.status for r in runs} == {"completed"}
