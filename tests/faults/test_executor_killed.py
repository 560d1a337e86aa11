"""kill -9 of an executor mid-HTTP request: c's request is held at the remote while the worker
running it is killed — its Celery pool process, or the whole http worker (started again). The
node run stays ``running`` until its lease lapses; the sweeper queues it again and the request is
sent again, with the same ``Idempotency-Key`` (workers/http/idempotency.py): a remote that honours
it (``account(..., dedupe_by="Idempotency-Key")``, as ``tests/support/remote.py``'s ``/effect``)
applies one effect per node. The negative controls: the sweeper off loses the node; the key off
(``idempotency_header: false``, ``on_lost: repeat``) doubles its effect."""

from __future__ import annotations

import time

import psutil
import pytest

from tests.engine.flow import submit, wait_all
from workflows.models import NodeRun
from workflows.registry import queue_for

from .harness import Trial, Victim, kill9, pause_sweeper, record, resume_sweeper, wait_for
from .probe import account, hold_key, probe, settle

FAULT = "executor killed mid-HTTP request"
pytestmark = [pytest.mark.fault, pytest.mark.faults_full]


@pytest.fixture(scope="module")
def http_worker(workers, stack_env):
    """The only consumer of the http queue while this module runs, with one pool process: the
    one that holds the request."""
    victim = Victim(workers, stack_env, [queue_for("http")], concurrency=1)
    yield victim
    victim.close()


def kill_mid_request(trial: Trial, http_worker: Victim, api, remote, kills: list[str], *, keyed: bool = True
                     ) -> tuple[list[str], list, float]:
    kill = trial.choice("kill", kills)
    count = trial.randint("runs", 1, 3)
    victim_run = trial.randint("victim_run", 0, count - 1)
    probes = [probe(remote.base, f"{trial.tag}r{i}", hold_c=(i == victim_run), keyed=keyed) for i in range(count)]
    victim = probes[victim_run]
    run_ids = [submit(api, p.definition) for p in probes]
    wait_for(lambda: remote.hits(victim.effects["c"]), 30, "c's request at the remote")
    time.sleep(trial.uniform("hold_s", 0.0, 0.5))
    assert NodeRun.objects.get(run_id=run_ids[victim_run], node_id=victim.id("c")).status == "running"
    if kill == "child":
        [pool] = psutil.Process(http_worker.pid).children()
        kill9(pool.pid, inside=[http_worker.pid])
    else:
        http_worker.kill_all()
    fault_at = time.time()
    remote.release(hold_key(victim.tag))  # the dead worker's request is answered into the void
    if kill == "worker":
        http_worker.restart()
    return run_ids, probes, fault_at


def test_every_run_completes_and_every_effect_is_applied_once(trial: Trial, engine, http_worker, api, remote):
    run_ids, probes, fault_at = kill_mid_request(trial, http_worker, api, remote, ["child", "worker"])
    settle(run_ids, timeout=60)
    outcome = account(run_ids, probes, remote, fault_at, dedupe_by="Idempotency-Key")
    record(trial, outcome)
    assert outcome.clean, f"{trial}: {outcome.detail}"
    assert outcome.doubled == 0
    assert outcome.resent >= 1, f"{trial}: the killed request was not sent again"


def test_control_without_the_idempotency_key_the_effect_is_doubled(control_trial: Trial, engine, http_worker, api,
                                                                   remote):
    run_ids, probes, fault_at = kill_mid_request(control_trial, http_worker, api, remote, ["child", "worker"],
                                                 keyed=False)
    settle(run_ids, timeout=60)
    outcome = account(run_ids, probes, remote, fault_at, dedupe_by="Idempotency-Key")
    record(control_trial, outcome)
    assert outcome.lost == 0, f"{control_trial}: {outcome.detail}"
    assert outcome.doubled >= 1, f"{control_trial}: the control doubled nothing, so the trial proves nothing"


def test_control_without_the_sweeper_the_killed_node_is_lost(control_trial: Trial, engine, http_worker, api,
                                                             remote):
    pause_sweeper()
    run_ids, probes, fault_at = kill_mid_request(control_trial, http_worker, api, remote, ["child", "worker"])
    settle(run_ids, timeout=8)  # the lease (3 s) would have lapsed and the sweeper re-queued it
    outcome = account(run_ids, probes, remote, fault_at, dedupe_by="Idempotency-Key")
    record(control_trial, outcome)
    resume_sweeper()
    assert outcome.lost >= 1, f"{control_trial}: the control lost nothing, so the trial proves nothing"
    runs = wait_all(run_ids, timeout=60)
    assert {r.status for r in runs} == {"completed"}
