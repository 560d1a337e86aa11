"""kill -9 of the http worker, whole, while a node that has already used two of its attempts on
ordinary timeouts is in its third. The sweeper gives a node ``AOB_MAX_ATTEMPTS_ON_LOST`` (3)
attempts lost to a dead worker, and it counted every attempt: one lost worker failed a node with
retries left, recorded as "lost 3 times; giving up" (a red team's find). It counts the attempts
the log shows lost (``sweeper.times_lost``; its control: ``aob:test:lost_by_attempts``)."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import wait_for_run
from tests.engine.flow import submit
from workflows.models import NodeRun
from workflows.registry import queue_for

from .harness import Victim, hooks, wait_for

pytestmark = [pytest.mark.fault]


@pytest.fixture
def http_worker(engine, stack_env):
    victim = Victim(engine, stack_env, [queue_for("http")], concurrency=1)
    yield victim
    victim.close()


def test_one_lost_worker_after_two_timeouts_leaves_the_node_its_retries(engine, http_worker, api, remote):
    key = f"lost{uuid.uuid4().hex[:8]}"
    node = {"id": "fetch", "type": "http", "config": {"url": f"{remote.base}/hold/{key}", "timeout_ms": 1500},
            "retry": {"max_attempts": 5, "backoff_ms": 100}}
    run_id = submit(api, {"nodes": [node], "edges": []})
    # attempts 1 and 2 time out (an ordinary, retried failure); the third is in flight
    wait_for(lambda: len(remote.hits(f"/hold/{key}")) >= 3, 30, "the third attempt at the remote")
    http_worker.kill_all()  # a deploy's SIGKILL, mid-request
    remote.release(key)  # from now on the remote answers at once
    http_worker.restart()

    run = wait_for_run(run_id, timeout=90)
    fetch = NodeRun.objects.get(run_id=run_id, node_id="fetch")
    log = [(entry.get("attempt"), entry.get("status")) for entry in fetch.attempt_log]
    assert run.status == "completed", (
        f"one lost worker failed a node with retries left: {fetch.error} (its attempts: {log})")
    assert [status for _, status in log] == ["failed", "failed", "lost", "completed"], log


@pytest.mark.faults_full  # a control: `make test-faults` only
def test_control_every_attempt_counted_as_lost_fails_the_node(engine, http_worker, api, remote):
    hooks().set("aob:test:lost_by_attempts", 1)
    try:
        with pytest.raises(AssertionError, match="one lost worker failed a node with retries left"):
            test_one_lost_worker_after_two_timeouts_leaves_the_node_its_retries(engine, http_worker, api, remote)
    finally:
        hooks().delete("aob:test:lost_by_attempts")
