"""A node run no worker claims, though a worker consumes its queue and its list is empty, is said on
its run and sent again under a new id (``sweeper.UNCLAIMED``, ``AOB_UNCLAIMED_AFTER_S``).

The case that made it: a worker drops a message whose task id was revoked, and the sweeper sent it
again under the same id, dropped again, for as long as workers remember the revoke (hours). An
operator's Revoke in Flower does that to a queued node; so did a primary key that came back after
a sequence restart, before task ids carried the run (tests/engine/test_task_ids.py). The run stayed
``queued`` with no ``wait_reason`` and nothing in its events. Here a node's message is revoked by
hand, as Flower would, while no worker consumes its queue, so no worker takes it before the revoke.

Negative control: with the mechanism off (``aob:test:unclaimed_off``), the same run stays queued.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
from django.conf import settings

from aob_project.celery import app
from tests.conftest import wait_for_run
from tests.engine.flow import http, submit, wait_until
from tests.engine.victim import control
from workflows.engine.dispatch import task_id
from workflows.models import Event, NodeRun, Run

HOOKS = redis.Redis.from_url(settings.REDIS_URL)


def revoked_while_queued(engine: dict[str, Any], api: Any, remote: Any) -> str:
    """A run whose one http node's message is revoked by its id before any worker could take it."""
    worker = engine["worker"].node_name
    control(worker, "cancel_consumer", "wf.tasks.http")
    try:
        run_id = submit(api, {"nodes": [http("fetch", f"{remote.base}/echo/unclaimed")], "edges": []})
        node = NodeRun.objects.get(run_id=run_id, node_id="fetch")
        app.control.revoke(task_id(run_id, node.pk))
        replies = app.control.inspect(destination=[worker], timeout=5).revoked() or {}
        assert task_id(run_id, node.pk) in replies.get(worker, [])
    finally:
        control(worker, "add_consumer", "wf.tasks.http")
    return run_id


@pytest.fixture
def unclaimed_after_2s(engine: dict[str, Any]) -> Any:
    HOOKS.set("aob:test:unclaimed_after_s", 2)
    yield
    HOOKS.delete("aob:test:unclaimed_after_s", "aob:test:unclaimed_off")


def test_a_node_whose_message_was_revoked_is_said_unclaimed_and_runs_under_a_new_id(engine, api, remote,
                                                                                   unclaimed_after_2s):
    run_id = revoked_while_queued(engine, api, remote)

    run = wait_for_run(run_id, timeout=60)

    assert run.status == Run.Status.COMPLETED, run.error
    assert len(remote.hits("/echo/unclaimed")) == 1  # sent again, applied once
    [said] = Event.objects.filter(run_id=run_id, type=Event.Type.NODE_UNCLAIMED)
    assert said.node_id == "fetch" and said.data["queue"] == "wf.tasks.http"
    assert "revoked" in said.data["message"] and "new id" in said.data["message"]
    assert NodeRun.objects.get(run_id=run_id, node_id="fetch").wait_reason == ""  # the claim cleared it


@pytest.mark.faults_full  # waits out its bound: `make test-faults` (tests/conftest.py)
def test_negative_control_without_it_the_revoked_node_s_run_stays_queued_saying_nothing(engine, api, remote,
                                                                                       unclaimed_after_2s):
    HOOKS.set("aob:test:unclaimed_off", 1)
    run_id = revoked_while_queued(engine, api, remote)

    with pytest.raises(AssertionError, match="still queued"):
        wait_for_run(run_id, timeout=20)  # the sweeper re-published it every 3 s, under the revoked id

    assert remote.hits("/echo/unclaimed") == []
    assert not Event.objects.filter(run_id=run_id, type=Event.Type.NODE_UNCLAIMED).exists()
    assert NodeRun.objects.get(run_id=run_id, node_id="fetch").wait_reason == ""
    HOOKS.delete("aob:test:unclaimed_off")
    wait_until(lambda: Event.objects.filter(run_id=run_id, type=Event.Type.NODE_UNCLAIMED).exists(), timeout=30,
               what="the run said unclaimed once the mechanism is back")
    assert wait_for_run(run_id, timeout=60).status == Run.Status.COMPLETED
