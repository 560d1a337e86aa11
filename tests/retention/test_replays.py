"""Retention and replays: a replay never loses its source to a prune, neither while it starts nor
while it runs."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import User
from django.db import connection, connections, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from retention.services import prune
from tests.agents.flows import agent, finish, start
from tests.approvals.runs import approval_of, decide
from tests.conftest import stored_run
from tests.engine.flow import wait_until
from tests.support.fake_llm import FakeLLM
from workflows.models import Artifact, NodeRun, Run

OLD = timedelta(days=60)  # past the 30-day default retention


def waiting_on_a_lock(pid: int) -> bool:
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # this connection is inside a transaction
        cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid])
        row = cursor.fetchone()
    return row is not None and row[0] == "Lock"


def test_a_replay_whose_source_a_prune_removes_as_it_starts_is_a_404_naming_the_run(transactional_db: Any,
                                                                                     api: APIClient,
                                                                                     user: User) -> None:
    source = stored_run(user)
    NodeRun.objects.create(run=source, node_id="a", node_type="transform", status="completed", output=1,
                           finished_at=timezone.now())
    Run.objects.filter(pk=source.pk).update(status="completed", finished_at=timezone.now() - OLD)
    Artifact.objects.update(created_at=timezone.now() - OLD)  # its version goes with it
    connection.ensure_connection()
    api_pid = connection.connection.info.backend_pid  # the connection the request will use
    pruned, counts = threading.Event(), {}

    def prune_and_commit_once_the_replay_waits() -> None:
        """A prune in a second connection that has removed the source but not committed yet: the
        request reads the source (still visible to it) and meets the prune's lock; then it commits."""
        try:
            with transaction.atomic():
                counts.update(prune())
                pruned.set()
                wait_until(lambda: waiting_on_a_lock(api_pid), what="the replay waiting on the prune's lock")
        finally:
            pruned.set()
            connection.close()

    pruning = threading.Thread(target=prune_and_commit_once_the_replay_waits)
    pruning.start()
    assert pruned.wait(timeout=30)
    api.raise_request_exception = False
    response = api.post(f"/api/v1/runs/{source.pk}/nodes/a/replay", {}, format="json")
    pruning.join()

    assert counts["runs"] == 1 and counts["artifacts"] >= 1
    assert response.status_code == 404, response.content
    body = response.json()
    assert body["error"] == "not_found"
    assert str(source.pk) in body["message"] and body["details"] == {"run_id": str(source.pk)}
    assert not Run.objects.exists()  # no half-made replay


def test_a_running_replay_keeps_its_source_so_reuse_llm_makes_no_model_call(engine: Any, api: APIClient,
                                                                           user: User, fake_llm: FakeLLM) -> None:
    # the gate asks again in the replay, which then waits, unfinished, while retention runs; the
    # agent's conversation is the source's (its upstream is a constant), so its response is reused
    nodes = [{"id": "review", "type": "hitl", "config": {"message": "Go?", "approvers": [user.username]}},
             {"id": "fixed", "type": "transform", "config": {"expression": "1"}}, agent(tools=[])]
    edges = [{"from": "review", "to": "fixed"}, {"from": "fixed", "to": "plan"}]
    fake_llm.reset([{"content": "Done."}])
    source_id = start(api, nodes, edges)
    assert decide(user, approval_of(source_id)).status_code == 200
    assert finish(source_id).status == "completed"
    assert len(fake_llm.requests) == 1
    Run.objects.filter(pk=source_id).update(finished_at=timezone.now() - OLD)

    fake_llm.reset([])  # any call now would be recorded (and answer "(script exhausted)")
    response = api.post(f"/api/v1/runs/{source_id}/nodes/plan/replay", {"reuse_llm": True}, format="json")
    assert response.status_code == 201, response.json()
    replay_id = response.json()["run_id"]
    gate = approval_of(replay_id)
    assert prune()["runs"] == 0  # the source is past retention, but its replay is not finished
    assert decide(user, gate).status_code == 200
    replay = finish(replay_id)

    assert replay.status == "completed", replay.error
    assert fake_llm.requests == []  # the source's recorded response stood in: no call, no spend
    assert replay.replay_of_id is not None and str(replay.replay_of_id) == source_id
    assert prune()["runs"] == 1  # its replay finished: the source goes now, the replay stays
    assert not Run.objects.filter(pk=source_id).exists()
    assert Run.objects.filter(pk=replay_id).exists()
