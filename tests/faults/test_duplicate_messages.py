"""The same coordinator message many times at once. A node's own coordinator message (the
executor's link, carrying its facts) is held at the start of its decision while N copies of it —
link-style with the facts, or by id as the sweeper sends them — are published together and taken
by the coordinator worker's free processes concurrently; then the held one goes on, late. The
node run is consumed once (the plain step's compare-and-set on ``consumed``, the full decision's
check under the run lock) and the unique node-run key absorbs a second emit."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from django.db import connection

from aob_project.celery import COORDINATOR_QUEUE, app
from tests.engine.flow import submit, wait_all, wait_drained
from workflows.engine.completion import Completion
from workflows.engine.dispatch import coordinate_now
from workflows.models import NodeRun, Run
from workflows.services.runs import run_cancel

from .harness import Trial, Victim, hooks, mark_stall, record, wait_for, wait_stalled
from .probe import account, probe, settle

FAULT = "duplicate concurrent coordinator messages"
pytestmark = pytest.mark.fault

NODES = ["a", "b", "c", "j", "d"]  # chain step, join steps, the full decision, the end step
CONSTRAINT = "node_run_token_unique"


@pytest.fixture(scope="module")
def coordinator(workers, stack_env):
    """Four coordinator processes of their own, so copies really are decided at the same time."""
    victim = Victim(workers, stack_env, [COORDINATOR_QUEUE], concurrency=4)
    yield victim
    victim.close()


def facts_of(nr: NodeRun) -> dict:
    """The link message's first argument: the executor's ``Completion`` as a dict."""
    run = Run.objects.get(pk=nr.run_id)
    return Completion(node_run_id=nr.pk, run_id=str(nr.run_id), node_id=nr.node_id, node_type=nr.node_type,
                      iteration=nr.iteration, run_status=run.status, artifact_id=run.current_artifact_id,
                      patch_seq=run.patch_seq, status=nr.status).as_message()


def duplicate(trial: Trial, api, remote, nodes: list[str], kinds: list[str]) -> tuple[list[str], list, float]:
    count = trial.randint("runs", 1, 2)
    victim_run = trial.randint("victim_run", 0, count - 1)
    node = trial.choice("node", nodes)
    copies = trial.randint("copies", 4, 12)
    probes = [probe(remote.base, f"{trial.tag}r{i}") for i in range(count)]
    target = probes[victim_run].id(node)
    mark_stall("decision", target)
    run_ids = [submit(api, p.definition) for p in probes]
    wait_stalled("decision", target)
    nr = NodeRun.objects.get(run_id=run_ids[victim_run], node_id=target)
    facts = facts_of(nr)
    messages = [trial.rng.choice(kinds) for _ in range(copies)]
    trial.draw("messages", "".join("f" if m == "facts" else "i" for m in messages))

    def send(kind: str) -> None:
        if kind == "facts":
            app.send_task("workflows.coordinate", args=[facts, nr.pk])
        else:
            coordinate_now(nr.pk)

    threads = [threading.Thread(target=send, args=(kind,)) for kind in messages]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sent_at = time.time()
    wait_for(lambda: NodeRun.objects.filter(pk=nr.pk, consumed=True).exists(), 30, f"{target} consumed")
    time.sleep(trial.uniform("late_s", 0.0, 0.5))
    hooks().set(f"aob:test:stall_release:decision:{target}", 1)  # the original, late
    return run_ids, probes, sent_at


def test_nothing_is_doubled(trial: Trial, engine, coordinator, api, remote):
    run_ids, probes, sent_at = duplicate(trial, api, remote, NODES, ["facts", "id"])
    settle(run_ids, timeout=60)
    wait_drained(list(NodeRun.objects.filter(run_id__in=run_ids).values_list("pk", flat=True)))  # the copies' stragglers
    outcome = account(run_ids, probes, remote, sent_at)
    record(trial, outcome)
    assert outcome.clean, f"{trial}: {outcome.detail}"


@pytest.fixture
def unfenced(engine) -> Iterator[list[str]]:
    """The control's switch: the plain chain step stops checking ``consumed`` and its successors'
    rows (test hook ``aob:test:unfenced_steps``) and the node-run key loses its unique constraint. Both come back,
    the doubled rows of the control's runs removed first, whatever the test did."""
    run_ids: list[str] = []
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE workflows_noderun DROP CONSTRAINT {CONSTRAINT}")
    hooks().set("aob:test:unfenced_steps", 1)
    yield run_ids
    hooks().delete("aob:test:unfenced_steps")
    for run_id in run_ids:
        cancel(run_id)
    wait_all(run_ids, timeout=60)
    wait_drained(list(NodeRun.objects.filter(run_id__in=run_ids).values_list("pk", flat=True)))  # none re-adds a row
    NodeRun.objects.filter(run_id__in=run_ids).delete()
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE workflows_noderun ADD CONSTRAINT {CONSTRAINT} UNIQUE (run_id, node_id, iteration)")


def cancel(run_id: str) -> None:
    run = Run.objects.get(pk=run_id)
    if run.status not in ("completed", "failed", "cancelled"):
        run_cancel(run=run, user=run.owner)


def test_control_without_the_consumed_check_and_the_unique_key_copies_double_the_work(
        control_trial: Trial, coordinator, unfenced, api, remote):
    """Only a's copies with its facts are drawn: a's fan-out is the plain chain step the switch
    opens. Each copy then queues b and c again, and c's request reaches the remote again."""
    run_ids, probes, sent_at = duplicate(control_trial, api, remote, ["a"], ["facts"])
    unfenced.extend(run_ids)
    victim = control_trial.drawn["victim_run"]
    c = probes[victim].id("c")
    wait_for(lambda: NodeRun.objects.filter(run_id=run_ids[victim], node_id=c).count() > 1, 30, "c queued again")
    wait_for(lambda: len(remote.hits(probes[victim].effects["c"])) > 1, 30, "c's request sent again")
    outcome = account(run_ids, probes, remote, sent_at)
    record(control_trial, outcome)
    assert outcome.doubled >= 1, f"{control_trial}: the control doubled nothing, so the trial proves nothing"
