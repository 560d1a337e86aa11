"""One lock order (workflows/engine/locks.py): claims and completions on the workers, cancels and
approvals through the API, all at once on the same runs — no deadlock and no 500."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from typing import Any

import redis
from django.conf import settings
from django.db import OperationalError, connection, transaction

from approvals.models import Approval
from tests.conftest import client_for, wait_for_run
from tests.engine.flow import edge, http, submit, transform, unique, wait_all, wait_until
from workflows.engine import locks
from workflows.engine.dispatch import Dispatch, publish_now
from workflows.models import NodeRun, Run

HOOKS = redis.Redis.from_url(settings.REDIS_URL)


def fan_out() -> dict[str, Any]:
    branches = [f"b{i}" for i in range(8)]
    return {"nodes": [transform("a", "1"), *[transform(b, "nodes.a + 1") for b in branches],
                      {"id": "review", "type": "hitl", "config": {"message": "go?"}},
                      transform("join", " + ".join(f"nodes.{b}" for b in branches)),
                      transform("done", "1")],
            "edges": [edge("a", "review"), *[edge("a", b) for b in branches], *[edge(b, "join") for b in branches],
                      edge("review", "done", "$.approved == true")]}


def deadlocks() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        return int(cursor.fetchone()[0])


def hammer(engine: dict[str, Any], api: Any, user: Any, seed: int, runs: int = 60) -> tuple[Counter[int], list[Any]]:
    """Start ``runs`` runs and, while the workers claim and complete their nodes, cancel and approve
    them from threads (some runs both at once). Returns the API's status codes and the runs."""
    rng = random.Random(seed)
    codes: Counter[int] = Counter()
    lock = threading.Lock()

    def act(run_id: str, what: str, delay: float) -> None:
        client = client_for(user)
        try:
            time.sleep(delay)  # spread the requests over the runs' lifetimes (timing is not asserted)
            if what == "approve":
                wait_until(lambda: Approval.objects.filter(run_id=run_id).exists()
                           or Run.objects.filter(pk=run_id, status__in=Run.FINISHED).exists(),
                           timeout=30, what="the approval, or the run cancelled before it")
                approval = Approval.objects.filter(run_id=run_id).first()
                if approval is None:
                    return  # cancelled before its gate was reached: nothing to decide
                answer = client.post(f"/api/v1/approvals/{approval.pk}/decide", {"approve": True}, format="json")
            else:
                answer = client.post(f"/api/v1/runs/{run_id}/cancel")
            with lock:
                codes[answer.status_code] += 1
        finally:
            connection.close()

    threads, run_ids = [], []
    for _ in range(runs):
        run_id = submit(api, fan_out())
        run_ids.append(run_id)
        for what in {"cancel": ["cancel"], "approve": ["approve"], "both": ["approve", "cancel"]}[
                rng.choice(["cancel", "approve", "both"])]:
            threads.append(threading.Thread(target=act, args=(run_id, what, rng.random() * 0.3)))
            threads[-1].start()
    for t in threads:
        t.join()
    return codes, wait_all(run_ids, timeout=120)


def test_claim_complete_cancel_and_approve_at_once_never_deadlock(engine, api, user):
    before, log_at = deadlocks(), len(engine["worker"].log.read_text(errors="replace"))
    codes, runs = hammer(engine, api, user, seed=17)
    assert set(codes) <= {200, 409}, codes  # never a 500
    assert codes[200] >= len(runs)
    assert {r.status for r in runs} <= {"completed", "cancelled"}, [r.error for r in runs if r.status == "failed"]
    log = engine["worker"].log.read_text(errors="replace")[log_at:]
    assert "deadlock detected" not in log.lower()
    assert deadlocks() == before


# --- each path takes the run row first: probed while the test holds it ---------------------------


def others_waiting_on_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # a fresh look inside this transaction
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                       "AND datname = current_database() AND pid <> pg_backend_pid()")
        return cursor.fetchone()[0] > 0


def row_free(table: str, pk: int) -> bool:
    """Nobody holds the row: it can be locked at once (NOWAIT), in a savepoint."""
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"SELECT 1 FROM {table} WHERE id = %s FOR UPDATE NOWAIT", [pk])  # noqa: S608
        return True
    except OperationalError:
        return False


def test_a_claim_waiting_for_the_run_row_holds_no_node_run(engine, api):
    entry = unique("entry")
    HOOKS.set(f"aob:test:drop_publish:{entry}", 1)  # the test publishes it, while it holds the run
    run_id = submit(api, {"nodes": [transform(entry, "1")], "edges": []})
    nr = NodeRun.objects.get(run_id=run_id, node_id=entry)
    with transaction.atomic():
        locks.lock_run(run_id)
        publish_now(Dispatch(nr.pk, entry, "transform", run_id, None))
        wait_until(others_waiting_on_a_lock, what="the claim waiting for the run row")
        assert row_free("workflows_noderun", nr.pk)
    assert wait_for_run(run_id).status == "completed"


def test_a_completion_waiting_for_the_run_row_holds_no_node_run(engine, api, remote):
    key = unique("hold")
    run_id = submit(api, {"nodes": [http("held", f"{remote.base}/hold/{key}")], "edges": []})
    wait_until(lambda: remote.hits(f"/hold/{key}"), what="the request")
    nr = NodeRun.objects.get(run_id=run_id, node_id="held")
    with transaction.atomic():
        locks.lock_run(run_id)
        remote.release(key)
        wait_until(others_waiting_on_a_lock, what="the completion waiting for the run row")
        assert row_free("workflows_noderun", nr.pk)
    assert wait_for_run(run_id).status == "completed"


def test_a_decision_waiting_for_the_run_row_holds_no_approval(engine, api, user):
    run_id = submit(api, {"nodes": [{"id": "review", "type": "hitl", "config": {"message": "ok?"}}], "edges": []})
    approval = wait_until(lambda: Approval.objects.filter(run_id=run_id).first(), what="the approval")
    answers: list[int] = []

    def decide() -> None:
        try:
            answers.append(client_for(user).post(f"/api/v1/approvals/{approval.pk}/decide", {"approve": True},
                                                 format="json").status_code)
        finally:
            connection.close()

    with transaction.atomic():
        locks.lock_run(run_id)
        thread = threading.Thread(target=decide)
        thread.start()
        wait_until(others_waiting_on_a_lock, what="the decision waiting for the run row")
        assert row_free("approvals_approval", approval.pk)
        assert row_free("workflows_noderun", approval.node_run_id)
    thread.join()
    assert answers == [200]
    assert wait_for_run(run_id).status == "completed"
