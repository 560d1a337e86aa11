"""A row the sweeper cannot handle (a poison row: its run's stored definition unreadable, a row a
trigger or a constraint refuses, a value a lowered bound now refuses) is that row's trouble alone.
The sweep logs it and goes on to everyone else's lost work in the same pass; after
``AOB_MAX_SWEEP_FAILURES`` sweeps that failed on it, its run fails saying why (``SweepFailed``),
each failure having said so on the run (a ``sweep_failed`` event), instead of the sweep stopping
at it on every pass, for every owner, while the health answer blamed beat.

The poison here is a PostgreSQL trigger that refuses every write of one node run (the republish's
compare-and-set among them), raised in the real sweeps of the stack's beat and worker. The
negative control: with the sweep's rows unguarded (``aob:test:sweep_rows_unguarded``) the first
error ends the pass, as before, and another owner's lost work is never recovered."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from tests.conftest import client_for, stored_run, wait_for_run
from tests.engine.flow import edge, submit, transform, unique, wait_until
from tests.test_observability import metric
from workflows.engine import sweeper
from workflows.models import Event, NodeRun, Run
from workflows.services.definitions import workflow_save

HOOKS = redis.Redis.from_url(settings.REDIS_URL)


@pytest.fixture
def poison_node(engine) -> Iterator[str]:
    """A node id for alice's poison row; the trigger that poisons it (``lost_message``) dropped after."""
    yield unique("poison")
    HOOKS.delete("aob:test:sweep_rows_unguarded")
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER IF EXISTS aob_test_refuse_write ON workflows_noderun")
        cursor.execute("DROP FUNCTION IF EXISTS aob_test_refuse_write()")


def lost_message(make_user: Any, node_id: str) -> str:
    """Alice's run whose first node's message was lost after its commit, a minute ago: queued, for
    the sweeper to publish again. In the same transaction a trigger comes to refuse every write of
    that node run (the republish's compare-and-set among them): the sweeps find it poisoned at once."""
    HOOKS.set(f"aob:test:drop_publish:{node_id}", 1)
    run_id = submit(client_for(make_user("alice")), {"nodes": [transform(node_id, "1")], "edges": []})
    wait_until(lambda: not HOOKS.exists(f"aob:test:drop_publish:{node_id}"), what="the publish dropped")
    with transaction.atomic(), connection.cursor() as cursor:
        NodeRun.objects.filter(run_id=run_id, node_id=node_id).update(
            dispatched_at=timezone.now() - timedelta(minutes=1))
        cursor.execute("""
            CREATE OR REPLACE FUNCTION aob_test_refuse_write() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'node run % refuses every write (test trigger)', OLD.id; END $$""")
        cursor.execute(f"""
            CREATE TRIGGER aob_test_refuse_write BEFORE UPDATE ON workflows_noderun FOR EACH ROW
            WHEN (OLD.node_id = '{node_id}') EXECUTE FUNCTION aob_test_refuse_write()""")
    return run_id


def lost_lease(make_user: Any) -> tuple[Run, NodeRun]:
    """Bob's run whose worker died mid-node: running, its lease lapsed, for the sweeper to queue again."""
    run = stored_run(make_user("bob"), {"nodes": [transform("b", "2")], "edges": []})
    Run.objects.filter(pk=run.pk).update(status="running", started_at=timezone.now())
    started = timezone.now() - timedelta(seconds=30)
    nr = NodeRun.objects.create(run=run, node_id="b", node_type="transform", status="running", attempts=1,
                                queued_at=started, started_at=started, lease_expires_at=started + timedelta(seconds=3))
    return run, nr


def test_a_poison_row_fails_its_run_saying_why_and_the_sweep_recovers_every_other_owners_lost_work(
        poison_node, make_user):
    alices = lost_message(make_user, poison_node)
    bobs, lost = lost_lease(make_user)

    # before: every sweep raised at alice's row, and bob's lost node was never queued again
    bob_run = wait_for_run(bobs.pk, timeout=20)
    assert bob_run.status == "completed", (bob_run.status, bob_run.error)
    assert NodeRun.objects.get(pk=lost.pk).attempts == 2  # queued again by the sweep, run by the worker

    alice_run = wait_for_run(alices, timeout=30)
    assert alice_run.status == "failed"
    error = alice_run.error
    assert error["error_type"] == "SweepFailed" and error["node_id"] == poison_node, error
    assert error["failures"] == settings.AOB_MAX_SWEEP_FAILURES, error
    assert "refuses every write (test trigger)" in error["message"], error
    said = list(Event.objects.filter(run_id=alices, type="sweep_failed", data__sweep="republish")
                .values_list("data", flat=True))
    assert len(said) == settings.AOB_MAX_SWEEP_FAILURES, said
    assert said[0]["sweep"] == "republish" and "refuses every write" in said[0]["error"]["message"], said[0]
    assert Event.objects.filter(run_id=alices, type="workflow_failed").count() == 1
    assert sweeper.sweeper_health() == "ok"  # the sweeps finished meanwhile: beat was never the trouble


def failed_count(client: Any, settings: Any) -> float:
    settings.AOB_METRICS_TOKEN = "scraper-token"
    client.defaults["HTTP_AUTHORIZATION"] = "Bearer scraper-token"
    return metric(client.get("/metrics").content.decode(), "aob_runs_finished_total", status="failed")


def test_a_run_a_poison_row_failed_is_counted_as_it_ends(poison_node, make_user, client, settings):
    """A poison's fail ended the run without the run-finished hooks (``hooks.run_finished``): not
    counted in ``aob_runs_finished_total``, its hooks left to their own sweeps. Here the fail's
    fallback (the trigger refuses the cancel of its node run too)."""
    before = failed_count(client, settings)
    run = wait_for_run(lost_message(make_user, poison_node), timeout=30)

    assert run.status == "failed" and run.error["error_type"] == "SweepFailed", run.error
    assert failed_count(client, settings) == before + 1


def test_a_child_a_poison_decision_failed_wakes_its_parent_at_once(engine, user, api, client, settings):
    """The child's end calls the run-finished hooks: the parent's ``workflow`` node is woken by the
    hook, with ``subflows.sweep``, its backstop, off (before, the parent waited on it for ever)."""
    poisoned = unique("poisoned")
    workflow_save(owner=user, tag="poisoned", definition={
        "nodes": [transform(poisoned, "1"), transform("after", "2")], "edges": [edge(poisoned, "after")]})
    HOOKS.set(f"aob:test:poison_decision:{poisoned}", 1, ex=120)
    HOOKS.set("aob:test:subflows_sweep_off", 1)
    try:
        before = failed_count(client, settings)
        run_id = submit(api, {"nodes": [{"id": "child", "type": "workflow", "config": {"tag": "poisoned"}}],
                              "edges": []})
        run = wait_for_run(run_id, timeout=20)
    finally:
        HOOKS.delete("aob:test:subflows_sweep_off", f"aob:test:poison_decision:{poisoned}")

    assert run.status == "failed" and run.error["error_type"] == "SubWorkflowFailed", (run.status, run.error)
    child = Run.objects.get(pk=run.error["child_run_id"])
    assert child.status == "failed" and child.error["error_type"] == "DecisionFailed", child.error
    assert failed_count(client, settings) == before + 2  # the child and its parent


@pytest.mark.faults_full  # a slow fault's control: `make test-faults` only (tests/conftest.py)
def test_negative_control_unguarded_the_poison_row_stops_every_sweep_and_bobs_lost_work_stays_lost(
        poison_node, make_user):
    HOOKS.set("aob:test:sweep_rows_unguarded", 1)
    alices = lost_message(make_user, poison_node)
    bobs, lost = lost_lease(make_user)

    with pytest.raises(AssertionError, match="still running"):
        wait_for_run(bobs.pk, timeout=10)  # the protected test's bob finishes in a few seconds
    assert NodeRun.objects.get(pk=lost.pk).status == "running"
    assert Run.objects.get(pk=alices).status == "queued"  # and nothing on it says why

    HOOKS.delete("aob:test:sweep_rows_unguarded")
    assert wait_for_run(bobs.pk, timeout=20).status == "completed"


@pytest.mark.django_db(transaction=True)  # the sweep's own connection handling, outside a test's transaction
def test_a_fault_not_the_row_s_ends_the_pass_and_a_row_s_is_said_at_its_own_pace(make_user):
    """A statement every row fails (a column a rolling deploy has not migrated yet), or the
    database away, ends the pass as an outage does, counted against no row; a statement timeout
    is the row's. A row failing again a moment later is not said again (a sweep every few seconds
    wrote an event each time): its run fails only once it has failed over AOB_SWEEP_FAILED_AFTER_S."""
    from django.db import OperationalError, ProgrammingError

    from workflows.engine import poison

    with pytest.raises(ProgrammingError), transaction.atomic(), poison.sweep_row("republish", run_id="r", node_id="a"):
        with connection.cursor() as cursor:
            cursor.execute("SELECT no_such_column FROM workflows_run")
    with pytest.raises(OperationalError), poison.sweep_row("republish", run_id="r", node_id="a"):
        raise OperationalError("the connection is closed")
    with transaction.atomic(), connection.cursor() as cursor:  # a statement timeout: the row's, said
        cursor.execute("SET LOCAL statement_timeout = 1")
        with pytest.raises(OperationalError) as timeout:
            cursor.execute("SELECT pg_sleep(1)")
    assert not poison.unavailable(timeout.value)

    run = stored_run(make_user("a"), {"nodes": [transform("a", "1")], "edges": []})
    said = [poison.sweep_row_failed("republish", ValueError("poison"), run_id=run.pk, node_id="a") for _ in range(3)]
    assert said == ["recorded", "said", "said"], said
    assert Event.objects.filter(run=run, type="sweep_failed").count() == 1
    assert Run.objects.get(pk=run.pk).status not in Run.FINISHED
