"""A crash between a commit and the publish that should follow it. Two windows, drawn per trial:
``callback`` — an executor's completion is committed and its process is killed (by PID, from
here) just before Celery publishes the linked coordinator message; ``publish`` — a decision
committed the node runs it emitted and the executor message of one is never sent (the publish
dropped after commit, as a crash there would). The node run is left finished-but-unconsumed, or
queued with no message: the sweeper finds either and sends it again."""

from __future__ import annotations

import time

import psutil
import pytest

from tests.engine.flow import submit, wait_all
from workflows.registry import queue_for

from .harness import (
    Trial,
    Victim,
    hooks,
    kill9,
    mark_stall,
    pause_sweeper,
    record,
    resume_sweeper,
    wait_for,
    wait_stalled,
)
from .probe import account, probe, settle

FAULT = "crash between commit and publish"
pytestmark = [pytest.mark.fault, pytest.mark.faults_full]  # test_durability.py keeps one of each in `make test`

EXECUTED = ["a", "b", "c", "j", "d"]  # the probe's nodes that run on a worker


@pytest.fixture(scope="module")
def executors(workers, stack_env):
    """The only consumer of the http and transform queues while this module runs."""
    victim = Victim(workers, stack_env, [queue_for("http"), queue_for("transform")])
    yield victim
    victim.close()


def inject(trial: Trial, executors: Victim, api, remote, windows: list[str], kills: list[str],
           nodes: list[str] = EXECUTED) -> tuple[list[str], list, float]:
    window = trial.choice("window", windows)
    count = trial.randint("runs", 1, 3)
    victim_run = trial.randint("victim_run", 0, count - 1)
    node = trial.choice("node", nodes)
    probes = [probe(remote.base, f"{trial.tag}r{i}") for i in range(count)]
    target = probes[victim_run].id(node)
    if window == "publish":
        hooks().set(f"aob:test:drop_publish:{target}", 1)
        run_ids = [submit(api, p.definition) for p in probes]
        wait_for(lambda: not hooks().exists(f"aob:test:drop_publish:{target}"), 30, f"{target}'s publish dropped")
        return run_ids, probes, time.time()
    kill = trial.choice("kill", kills)
    mark_stall("callback", target)
    run_ids = [submit(api, p.definition) for p in probes]
    pid = wait_stalled("callback", target)
    time.sleep(trial.uniform("hold_s", 0.0, 0.3))
    if kill == "child":
        kill9(pid, inside=[executors.pid])
        return run_ids, probes, time.time()
    assert executors.pid in {p.pid for p in psutil.Process(pid).parents()}
    executors.kill_all()
    fault_at = time.time()
    executors.restart()
    return run_ids, probes, fault_at


def test_every_run_completes_and_every_node_is_applied_once(trial: Trial, engine, executors, api, remote):
    run_ids, probes, fault_at = inject(trial, executors, api, remote, ["callback", "publish"], ["child", "worker"])
    settle(run_ids, timeout=60)
    # A worker killed whole may take another node's request with it, mid-flight: that one is sent
    # again with its Idempotency-Key, which the remote honours (one effect).
    outcome = account(run_ids, probes, remote, fault_at, dedupe_by="Idempotency-Key")
    record(trial, outcome)
    assert outcome.clean, f"{trial}: {outcome.detail}"
    assert outcome.doubled == 0


def test_control_without_the_sweeper_the_lost_message_is_detected(control_trial: Trial, engine, executors, api,
                                                                  remote):
    """The sweeper switched off, the same crash loses the run. Not drawn here: a pool process
    killed alone, whose executor message Celery puts back (its second delivery finds the node run
    finished and its link still sends the coordinator message), and b or c, which the other
    parent's join step consumes along with itself: both recover without the sweeper."""
    pause_sweeper()
    run_ids, probes, fault_at = inject(control_trial, executors, api, remote, ["callback", "publish"], ["worker"],
                                       ["a", "j", "d"])
    settle(run_ids, timeout=8)  # the sweeper would have sent it again after 3 s
    outcome = account(run_ids, probes, remote, fault_at, dedupe_by="Idempotency-Key")
    record(control_trial, outcome)
    resume_sweeper()
    assert outcome.lost >= 1, f"{control_trial}: the control lost nothing, so the trial proves nothing"
    runs = wait_all(run_ids, timeout=60)
    assert {r.status for r in runs} == {"completed"}
