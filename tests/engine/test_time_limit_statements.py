"""A node's ``timeout_ms`` (the executor task's soft time limit) never interrupts the engine's own
statements: one that fires while the claim waits is recorded as the attempt's ``Timeout`` once the
claim is done, and the worker's connection is left usable for whatever it runs next. A ``workflow``
node's ``timeout_ms`` bounds the wait for its child, not the task that starts it."""

from __future__ import annotations

from django.db import connection, transaction

from tests.approvals.runs import submit as submit_as
from tests.engine.flow import http, node_runs, submit, transform, unique, wait_all, wait_until
from workflows.engine.dispatch import task_id
from workflows.models import NodeRun
from workflows.services.definitions import workflow_save

# What a worker logs when a limit struck mid-statement: the task escaped unrecorded, or a later
# task (any owner's) failed on the connection it left
BROKEN = ("another command is already in progress", "can't change 'autocommit' now",
          "raised unexpected: SoftTimeLimitExceeded")


def _broken(log: str) -> list[str]:
    return [line[:300] for line in log.splitlines() if any(b in line for b in BROKEN)]


def _claim_waits() -> bool:
    with connection.cursor() as cursor:
        # the claim (pipelined, its last statement is what the view shows)
        cursor.execute("SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
                       " AND pid <> pg_backend_pid()")
        return cursor.fetchone() is not None


def test_a_limit_firing_while_the_claim_waits_is_the_attempts_timeout(engine, api, remote):
    log = engine["worker"].log
    seen = len(log.read_text(errors="replace"))
    node_id = unique("claimed")
    run_id = submit(api, {"nodes": [http(node_id, f"{remote.base}/flaky/{node_id}/1", timeout_ms=1000,
                                         retry={"max_attempts": 2, "backoff_ms": 1500})], "edges": []})
    node = wait_until(lambda: NodeRun.objects.filter(run_id=run_id, node_id=node_id, status="queued",
                                                     attempts=1).first(), timeout=20, what="attempt 1 failed")
    with transaction.atomic():  # the second claim waits on the node run's row past its 1 s
        NodeRun.objects.select_for_update().get(pk=node.pk)
        wait_until(_claim_waits, timeout=20, what="the second claim waiting on the row")
        wait_until(lambda: f"Soft time limit (1.0s) exceeded for workers.execute[{task_id(run_id, node.pk)}"
                   in log.read_text(errors="replace")[seen:], timeout=20, what="its limit fired")
    run = wait_all([run_id], timeout=40)[0]
    after = submit(api, {"nodes": [transform(unique("after"), "1")], "edges": []})
    assert wait_all([after])[0].status == "completed"

    node.refresh_from_db()
    assert run.status == "failed"
    assert [(entry["status"], entry["error"]["error_type"]) for entry in node.attempt_log] == [
        ("failed", "HTTPRequestError"), ("failed", "Timeout")], node.attempt_log
    assert node.error["error_type"] == "Timeout"
    assert not _broken(log.read_text(errors="replace")[seen:])


def test_a_workflow_nodes_timeout_ms_bounds_the_wait_not_the_start(engine, user, make_user):
    log = engine["worker"].log
    seen = len(log.read_text(errors="replace"))
    quick = {"nodes": [{"id": "t", "type": "transform", "config": {"expression": "1"}}], "edges": []}
    workflow_save(owner=user, tag="quick", definition=quick)
    run_id = submit_as(user, {"nodes": [{"id": "child", "type": "workflow", "timeout_ms": 20,
                                         "config": {"tag": "quick"}}], "edges": []}, {})
    run = wait_all([run_id], timeout=60)[0]
    bob = make_user("bob")
    others = [submit_as(bob, quick, {}) for _ in range(3)]

    child = node_runs(run)["child"]
    assert child.attempts == 1, child.attempt_log  # started once, under the default limit
    # then its child ended within the 20 ms, or the wait ran out
    assert child.status == "completed" or child.error["error_type"] == "SubWorkflowTimeout", child.error
    assert {other.status for other in wait_all(others)} == {"completed"}
    assert not _broken(log.read_text(errors="replace")[seen:])
