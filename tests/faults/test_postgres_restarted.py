"""PostgreSQL restarted mid-run: the session's embedded server is stopped (fast shutdown: every
connection of every worker, beat and this process is cut) and started again on its port, while
runs are between steps or their http node is waiting on the remote. What was mid-statement fails;
a node whose completion could not be written stays ``running`` until its lease lapses, a message
whose task failed on the database is gone, and the sweeper puts both back once the server is up."""

from __future__ import annotations

import time

import pytest
from django.db import connections

from aob.embedded import EmbeddedPostgres
from tests.engine.flow import submit, wait_all

from .harness import Trial, owned_server, pause_sweeper, record, resume_sweeper, supervise, wait_for
from .probe import account, hold_key, probe, settle

FAULT = "PostgreSQL restarted mid-run"
pytestmark = [pytest.mark.fault, pytest.mark.faults_full]


def restart_mid_run(trial: Trial, workers, stack_env, api, remote, moments: list[str]
                    ) -> tuple[list[str], list, float]:
    postgres = owned_server(EmbeddedPostgres)
    moment = trial.choice("moment", moments)
    count = trial.randint("runs", 1, 3)
    down_s = trial.uniform("down_s", 0.2, 3.0)
    release = trial.choice("release", ["while_down", "after"])
    probes = [probe(remote.base, f"{trial.tag}r{i}", hold_c=True) for i in range(count)]
    run_ids = [submit(api, p.definition) for p in probes]
    if moment == "mid_request":  # every c is waiting on the remote
        wait_for(lambda: all(remote.hits(p.effects["c"]) for p in probes), 30, "c's requests at the remote")
    else:
        time.sleep(trial.uniform("after_s", 0.0, 1.0))
    connections.close_all()
    fault_at = time.time()
    if release == "while_down":
        postgres.stop()
        for p in probes:
            remote.release(hold_key(p.tag))
        time.sleep(down_s)
        postgres.restart(0)  # stop is idempotent: this starts it on its port
    else:
        postgres.restart(down_s)
        for p in probes:
            remote.release(hold_key(p.tag))
    restarted = trial.draw("restarted", supervise(workers, stack_env, settle_s=1.0))  # any process it ended
    # beat (and with it the sweeper) outlives the restart: its schedule reload keeps what it had
    # loaded and reads again on the next tick (aob_project/beat.py)
    assert "beat" not in restarted, f"{trial}: the PostgreSQL restart ended beat"
    return run_ids, probes, fault_at


def test_runs_still_finish(trial: Trial, engine, workers, stack_env, api, remote):
    run_ids, probes, fault_at = restart_mid_run(trial, workers, stack_env, api, remote, ["mid_request", "early"])
    settle(run_ids, timeout=90)
    # c's request may be sent again (its worker could not record the answer), with its
    # Idempotency-Key, which the remote honours (one effect).
    outcome = account(run_ids, probes, remote, fault_at, dedupe_by="Idempotency-Key")
    record(trial, outcome)
    assert outcome.clean, f"{trial}: {outcome.detail}"
    assert outcome.doubled == 0


def test_control_without_the_sweeper_the_interrupted_node_is_lost(control_trial: Trial, engine, workers, stack_env,
                                                                  api, remote):
    """Only restarts while every c is waiting on the remote are drawn: the restart then always
    cuts a node's completion, which nothing but the sweeper puts back."""
    pause_sweeper()
    run_ids, probes, fault_at = restart_mid_run(control_trial, workers, stack_env, api, remote, ["mid_request"])
    settle(run_ids, timeout=10)
    outcome = account(run_ids, probes, remote, fault_at, dedupe_by="Idempotency-Key")
    record(control_trial, outcome)
    resume_sweeper()
    assert outcome.lost >= 1, f"{control_trial}: the control lost nothing, so the trial proves nothing"
    runs = wait_all(run_ids, timeout=90)
    assert {r.status for r in runs} == {"completed"}
