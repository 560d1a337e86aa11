"""Work that kills its own process every time it runs (the kernel's OOM killer on a large decision, a
crashing C extension): it raises nothing. A coordinator decision's message is put back by Celery
(``task_reject_on_worker_lost``) and taken again at once by the next process, which dies too; a row
of the sweeper's is read first again by the next pass, which dies at it, and every row after it,
another owner's lost publish, waits for ever. Each death is counted now as a raise is, by a mark
in Redis set as the work begins and cleared as it ends (``poison._began``): the decision's run fails
saying so after ``AOB_MAX_DECISION_FAILURES`` deaths, the row is left after
``AOB_MAX_SWEEP_FAILURES`` (said on its run, which fails) and the pass goes on to the others.
The controls switch the marks off (``aob:test:deaths_uncounted``): the deaths go on without end."""

from __future__ import annotations

import time

import pytest
from django.conf import settings

from aob_project.celery import COORDINATOR_QUEUE, MAINTENANCE_QUEUE
from tests.engine.flow import edge, submit, transform, unique, wait_all, wait_until
from workflows.models import Event, NodeRun, Run

from .harness import Victim, hooks

pytestmark = pytest.mark.fault


@pytest.fixture
def coordinator(workers, stack_env):
    """The only consumer of the coordinator queue while a test runs: its pool processes die."""
    victim = Victim(workers, stack_env, [COORDINATOR_QUEUE])
    yield victim
    victim.close(workers)
    hooks().delete("aob:test:deaths_uncounted")


@pytest.fixture
def maintenance(workers, stack_env):
    """The only consumer of the maintenance queue (the sweeper's) while a test runs."""
    victim = Victim(workers, stack_env, [MAINTENANCE_QUEUE])
    yield victim
    victim.close(workers)
    hooks().delete("aob:test:deaths_uncounted")


def kills(node_id: str) -> int:
    return int(hooks().get(f"aob:test:kills:{node_id}") or 0)


def test_a_decision_that_kills_its_process_every_time_fails_its_run_saying_so(engine, api, coordinator):
    a, b = unique("a"), unique("b")
    hooks().set(f"aob:test:decision_kill:{a}", 1)
    run_id = submit(api, {"nodes": [transform(a, "1"), transform(b, "2")], "edges": [edge(a, b)]})
    try:
        [run] = wait_all([run_id], timeout=60)
    finally:
        hooks().delete(f"aob:test:decision_kill:{a}")

    limit = settings.AOB_MAX_DECISION_FAILURES
    assert run.status == "failed" and run.error["error_type"] == "DecisionFailed", (run.status, run.error)
    assert run.error["node_id"] == a and run.error["failures"] == limit, run.error
    assert f"ProcessDied: the process deciding it died {limit} times" in run.error["message"], run.error
    # the first delivery and each one put back after a death; a message the sweeper sent meanwhile
    # dies once uncounted (a first delivery is not marked: its death is inferred from its redelivery)
    assert limit <= kills(a) <= 2 * limit, kills(a)
    assert not NodeRun.objects.filter(run_id=run_id, node_id=b).exists()
    assert Event.objects.filter(run_id=run_id, type="workflow_failed").count() == 1


@pytest.mark.faults_full  # a control: `make test-faults` only (tests/conftest.py)
def test_control_deaths_uncounted_the_decision_kills_one_process_after_another(engine, api, coordinator):
    hooks().set("aob:test:deaths_uncounted", 1)
    a, b = unique("a"), unique("b")
    hooks().set(f"aob:test:decision_kill:{a}", 1)
    run_id = submit(api, {"nodes": [transform(a, "1"), transform(b, "2")], "edges": [edge(a, b)]})
    try:
        wait_until(lambda: kills(a) >= 2 * settings.AOB_MAX_DECISION_FAILURES, timeout=60,
                   what="the decision's processes killed past the limit")
        run = Run.objects.get(pk=run_id)
        assert (run.status, run.error) == ("running", None)  # and nothing on it says why
    finally:
        hooks().delete(f"aob:test:decision_kill:{a}")
    assert wait_all([run_id], timeout=60)[0].status == "completed"  # the next delivery decides


def test_a_row_that_kills_the_sweeper_every_time_is_left_and_another_owners_lost_work_recovers(
        engine, api, maintenance):
    p, v = unique("p"), unique("v")
    hooks().set(f"aob:test:sweep_kill:{p}", 1)
    hooks().set(f"aob:test:drop_publish:{p}", 1)
    hooks().set(f"aob:test:drop_publish:{v}", 1)
    poisoned = submit(api, {"nodes": [transform(p, "1")], "edges": []})
    time.sleep(0.2)  # the sweeper reads the oldest first: the poisoned row before the other
    victim = submit(api, {"nodes": [transform(v, "2")], "edges": []})
    try:
        done = wait_all([poisoned, victim], timeout=90)
    finally:
        hooks().delete(f"aob:test:sweep_kill:{p}")

    status = {str(r.pk): r for r in done}
    assert status[victim].status == "completed"
    run = status[poisoned]
    assert run.status == "failed" and run.error["error_type"] == "SweepFailed", (run.status, run.error)
    assert "ProcessDied: the process handling it died" in run.error["message"], run.error
    assert kills(p) == settings.AOB_MAX_SWEEP_FAILURES


@pytest.mark.faults_full  # a control: `make test-faults` only (tests/conftest.py)
def test_control_deaths_uncounted_the_row_kills_every_pass_and_the_other_stays_lost(engine, api, maintenance):
    hooks().set("aob:test:deaths_uncounted", 1)
    p, v = unique("p"), unique("v")
    hooks().set(f"aob:test:sweep_kill:{p}", 1)
    hooks().set(f"aob:test:drop_publish:{p}", 1)
    hooks().set(f"aob:test:drop_publish:{v}", 1)
    poisoned = submit(api, {"nodes": [transform(p, "1")], "edges": []})
    time.sleep(0.2)
    victim = submit(api, {"nodes": [transform(v, "2")], "edges": []})
    try:
        wait_until(lambda: kills(p) >= 2 * settings.AOB_MAX_SWEEP_FAILURES, timeout=90,
                   what="the sweeper's processes killed past the limit")
        assert Run.objects.get(pk=victim).status == "queued"  # its lost publish never sent again
        assert not Event.objects.filter(run_id=poisoned, type="sweep_failed").exists()  # nothing said
    finally:
        hooks().delete(f"aob:test:sweep_kill:{p}")
    assert {r.status for r in wait_all([poisoned, victim], timeout=60)} == {"completed"}
