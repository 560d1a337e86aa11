"""A run's ``metadata.output`` is computed once, by a worker, after the run completes
(``services.runs.run_output_store``), and every answer reads what it stored: no web request evaluates it.
Converting 16 MiB of node outputs to CEL values takes seconds, and clients poll ``GET /runs/{id}``;
in a web process that would hold it for every other user. Real workers throughout; the lost ask
is found by the sweeper, with its negative control."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.conftest import client_for, stored_run, wait_for_run
from tests.engine.flow import events, submit, transform, unique, wait_until
from workflows.models import Artifact, NodeRun, Run

HOOKS = redis.Redis.from_url(settings.REDIS_URL)

def with_output(node_id: str) -> dict[str, Any]:
    return {"nodes": [transform(node_id, "inputs.n * 2")], "edges": [],
            "metadata": {"output": {"expression": f"{{'double': nodes.{node_id}, 'who': inputs.name}}"}}}


def test_the_output_is_computed_once_by_a_worker_and_every_answer_reads_it_stored(engine, api) -> None:
    node_id = unique("double")
    run = wait_for_run(submit(api, with_output(node_id), {"n": 21, "name": "Ada"}))

    assert run.status == "completed" and not run.output_pending
    assert Artifact.objects.get(pk=run.output_artifact_id).content == {"double": 42, "who": "Ada"}
    # its event names the artifact, which its owner reads
    [computed] = [e for e in events(run) if e.type == "output_computed"]
    assert api.get(f"/api/v1/artifacts/{computed.data['artifact_id']}").json()["content"] == {"double": 42,
                                                                                             "who": "Ada"}
    kinds = [e.type for e in events(run)]
    assert kinds[-2:] == ["workflow_completed", "output_computed"] and kinds.count("output_computed") == 1
    # what the answers carry is what was stored: the node's output changed since is not read again
    NodeRun.objects.filter(run=run, node_id=node_id).update(output=0)
    body = api.get(f"/api/v1/runs/{run.pk}").json()
    assert body["output"] == {"double": 42, "who": "Ada"} and body["output_pending"] is False
    assert api.get(f"/api/v1/runs/{run.pk}/details").json()["run"]["output"] == body["output"]
    assert api.get(f"/api/v1/runs/{run.pk}/output").json() == {
        "run_id": str(run.pk), "output": body["output"], "output_error": None, "output_pending": False}


def test_an_output_that_cannot_be_computed_is_stored_as_its_error(engine, api) -> None:
    definition = {**with_output(unique("double")), "metadata": {"output": {"expression": "nodes.nowhere.x"}}}
    run = wait_for_run(submit(api, definition, {"n": 1, "name": "Ada"}))

    assert run.status == "completed" and run.output_artifact_id is None
    assert run.output_error["error_type"] == "OutputExpressionError"
    body = api.get(f"/api/v1/runs/{run.pk}").json()
    assert body["output"] is None and body["output_error"] == run.output_error and body["output_pending"] is False


def test_while_it_is_pending_no_answer_evaluates_it(db, user) -> None:
    """A completed run whose output a worker has not stored yet (this test's transaction: no worker
    sees it): the answers say pending and read no node output."""
    run = stored_run(user, {"nodes": [{"id": "a", "type": "transform", "config": {"expression": "1"}}], "edges": [],
                            "metadata": {"output": {"expression": "nodes.a"}}})
    NodeRun.objects.create(run=run, node_id="a", node_type="transform", status="completed", attempts=1,
                           output={"pad": "x" * 100_000})
    now = timezone.now()
    Run.objects.filter(pk=run.pk).update(status="completed", finished_at=now, output_asked_at=now)
    client = client_for(user)

    with CaptureQueriesContext(connection) as statements:
        body = client.get(f"/api/v1/runs/{run.pk}").json()
        whole = client.get(f"/api/v1/runs/{run.pk}/output").json()
        details = client.get(f"/api/v1/runs/{run.pk}/details").json()

    assert (body["output"], body["output_error"], body["output_pending"]) == (None, None, True)
    assert whole == {"run_id": str(run.pk), "output": None, "output_error": None, "output_pending": True}
    assert details["run"]["output_pending"] is True
    assert not [q["sql"] for q in statements.captured_queries if "output_artifact_id, bytes, fits" in q["sql"]]


@pytest.mark.faults_full  # a slow fault or its control: `make test-faults` only (tests/conftest.py)
@pytest.mark.fault
def test_an_ask_lost_after_the_run_completed_is_sent_again_by_the_sweeper(engine, api) -> None:
    HOOKS.set("aob:test:drop_outputs", 1)  # the completing decision's ask is lost after its commit
    try:
        run_id = submit(api, with_output(unique("double")), {"n": 2, "name": "Ada"})
        wait_until(lambda: Run.objects.filter(pk=run_id, status="completed").exists(), what="completed")
    finally:
        HOOKS.delete("aob:test:drop_outputs")
    assert Run.objects.get(pk=run_id).output_pending
    run = wait_for_run(run_id, timeout=40)  # the sweeper asks past AOB_OUTPUT_TIME_LIMIT_S + republish delay
    assert run.output_asks == 1  # the one attempt that started
    assert Artifact.objects.get(pk=run.output_artifact_id).content == {"double": 4, "who": "Ada"}
    assert [e.type for e in events(run)].count("output_computed") == 1


@pytest.mark.faults_full  # a slow fault or its control: `make test-faults` only (tests/conftest.py)
@pytest.mark.fault
def test_negative_control_without_the_sweeper_s_pass_the_lost_ask_stays_pending(engine, api) -> None:
    HOOKS.set("aob:test:output_sweep_off", 1)
    HOOKS.set("aob:test:drop_outputs", 1)
    try:
        run_id = submit(api, with_output(unique("double")), {"n": 2, "name": "Ada"})
        wait_until(lambda: Run.objects.filter(pk=run_id, status="completed").exists(), what="completed")
        HOOKS.delete("aob:test:drop_outputs")
        with pytest.raises(AssertionError, match="still completed"):
            wait_for_run(run_id, timeout=10)  # past the 6 s after which the sweeper would ask
        assert Run.objects.get(pk=run_id).output_pending
    finally:
        HOOKS.delete("aob:test:output_sweep_off", "aob:test:drop_outputs")
    assert wait_for_run(run_id, timeout=40).output_artifact_id is not None


def test_an_output_that_fails_for_a_reason_of_ours_is_stated_not_asked_for_forever(db, user) -> None:
    """A fault in computing it (here: a stored definition the compiler rejects) ends as the run's
    ``OutputFailed`` output error, so the sweeper does not ask for it again and again."""
    from workflows.services.runs import run_output_store

    run = stored_run(user, {"nodes": "not a list", "edges": [], "metadata": {"output": {"expression": "1"}}})
    now = timezone.now()
    Run.objects.filter(pk=run.pk).update(status="completed", finished_at=now, output_asked_at=now)

    assert run_output_store(run_id=str(run.pk)) is True
    run.refresh_from_db()
    assert not run.output_pending and run.output_artifact_id is None
    assert (run.output_error["error_type"], run.output_error["rule"]) == ("OutputFailed", "internal")
    assert run_output_store(run_id=str(run.pk)) is False  # stored: a repeated ask changes nothing



@pytest.mark.faults_full  # a slow fault or its control: `make test-faults` only (tests/conftest.py)
@pytest.mark.fault
def test_an_output_whose_worker_dies_every_time_ends_as_an_error_after_the_last_attempt(engine, api) -> None:
    """The worker process computing it dies each time (``os._exit`` as it starts: the broker hands
    the message back, acks late): each attempt is counted as it starts, and the one past
    AOB_MAX_ATTEMPTS_ON_LOST ends it as ``OutputFailed``/``worker_lost`` instead of dying again,
    so the run does not say pending forever. (A long queue counts nothing: only attempts that
    started.)"""
    HOOKS.set("aob:test:output_crash", 1)
    try:
        run_id = submit(api, with_output(unique("double")), {"n": 2, "name": "Ada"})
        run = wait_for_run(run_id, timeout=90)
    finally:
        HOOKS.delete("aob:test:output_crash")
    assert run.output_asks == settings.AOB_MAX_ATTEMPTS_ON_LOST + 1 and run.output_artifact_id is None
    assert (run.output_error["error_type"], run.output_error["rule"]) == ("OutputFailed", "worker_lost")
    body = api.get(f"/api/v1/runs/{run.pk}").json()
    assert body["output_pending"] is False and body["output_error"]["rule"] == "worker_lost"
    assert [e.type for e in events(run)].count("output_computed") == 1


@pytest.mark.faults_full  # a slow fault or its control: `make test-faults` only (tests/conftest.py)
@pytest.mark.fault
def test_negative_control_without_the_attempt_limit_an_output_whose_worker_dies_stays_pending(engine, api) -> None:
    """The trial above with ``run_output_store`` as if AOB_MAX_ATTEMPTS_ON_LOST were unreachable
    (``aob:test:output_attempts_unbounded``): the attempt past the limit computes again and dies,
    and the one after it too; the output still says pending."""
    from workflows.services import runs

    limit = settings.AOB_MAX_ATTEMPTS_ON_LOST
    HOOKS.set("aob:test:output_attempts_unbounded", 1)
    HOOKS.set("aob:test:output_crash", 1)
    try:
        run_id = submit(api, with_output(unique("double")), {"n": 2, "name": "Ada"})
        wait_until(lambda: Run.objects.filter(pk=run_id, output_asks__gte=limit + 2).exists(), timeout=45,
                   what="an attempt past the one that ends it with the limit on")
        run = Run.objects.get(pk=run_id)
        assert run.output_pending and run.output_error is None  # still pending, and asked for again
    finally:
        HOOKS.delete("aob:test:output_crash", "aob:test:output_attempts_unbounded")
    runs.run_output_store(run_id=run_id)  # the limit back on: it ends now, not at the sweeper's next ask
    assert wait_for_run(run_id).output_error["rule"] == "worker_lost"


def test_a_run_completed_before_outputs_were_stored_has_its_output_asked_for_on_its_first_read(engine, user) -> None:
    """No backfill: such a run (or one a worker of that version completed during a deploy) has no
    output, no error and no ask; its first read asks, once, and a worker stores it."""
    run = stored_run(user, {"nodes": [{"id": "a", "type": "transform", "config": {"expression": "1"}}], "edges": [],
                            "metadata": {"output": {"expression": "nodes.a + 1"}}})
    NodeRun.objects.create(run=run, node_id="a", node_type="transform", status="completed", attempts=1, output=41,
                           consumed=True, taken=[])
    Run.objects.filter(pk=run.pk).update(status="completed", finished_at=timezone.now())
    client = client_for(user)

    first = client.get(f"/api/v1/runs/{run.pk}").json()

    assert (first["output"], first["output_pending"]) == (None, True)
    assert wait_for_run(run.pk).output_asks == 1  # asked once, by that read; stored by a worker
    assert client.get(f"/api/v1/runs/{run.pk}").json()["output"] == 42
    assert [e.type for e in events(run)] == ["output_computed"]


@pytest.mark.django_db
def test_the_sweeper_waits_longer_to_ask_again_while_the_output_queue_has_a_backlog(user: Any, settings: Any) -> None:
    """An ask waiting its turn in a long queue is not lost: asking again would only add duplicates
    to that queue. The queue judged is the outputs' own (``wf.output``); it was the transform
    queue's, where outputs no longer go."""
    from workflows import registry
    from workflows.engine import sweeper

    settings.AOB_OUTPUT_TIME_LIMIT_S, settings.AOB_REPUBLISH_AFTER_S, settings.AOB_REPUBLISH_BACKLOG_S = 1, 1, 3600
    now = timezone.now()
    run = stored_run(user)
    asked_at = now - timezone.timedelta(seconds=60)  # past the plain wait, within the backlog's
    Run.objects.filter(pk=run.pk).update(status="completed", output_asked_at=asked_at)

    assert sweeper.ask_for_outputs(now, backlog={registry.OUTPUT_QUEUE}) == 0
    assert Run.objects.get(pk=run.pk).output_asked_at == asked_at
    assert sweeper.ask_for_outputs(now, backlog={registry.queue_for("transform")}) == 1  # not the outputs' queue
    assert Run.objects.get(pk=run.pk).output_asked_at == now
