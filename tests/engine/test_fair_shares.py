"""Fair shares of the workers between owners (``workflows/engine/admission.py``): one owner's slow
fan-out holds no more of a type's workers than ``AOB_OWNER_MAX_RUNNING``; another owner's node
of that type runs beside it, not after all of it. What waits says why (``wait_reason`` ``slot``,
a ``node_held`` event), each node still runs once, a finish (completed or failed) gives its slot to
the oldest held node, and a slot freed without a finish (a cancel) is given on by the sweeper.

The stack's worker (three processes) runs with the limit at 1 (``aob:test:slots``). The negative
controls: with the limit switched off, the first owner's three held requests take all
three processes and the other owner waits for them; without the sweeper's release, a slot freed by
a cancel stays idle."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis
from django.conf import settings
from django.utils import timezone

from tests.conftest import client_for, stored_run, wait_for_run
from tests.engine.flow import edge, http, submit, transform, unique, wait_until
from workflows.engine import admission, sweeper
from workflows.models import NodeRun, Run

FAN_OUT = 4
HOOKS = redis.Redis.from_url(settings.REDIS_URL)


@pytest.fixture
def one_slot(engine) -> Iterator[None]:
    """The stack's worker (three processes) with the limit at one slot (``aob:test:slots``, read
    where ``AOB_OWNER_MAX_RUNNING`` is), and only finishes release: the sweeper's release is off
    unless a test turns it back on. Both switches go after the test, for the tests after it."""
    HOOKS.set("aob:test:slots", 1)
    HOOKS.set("aob:test:release_sweep_off", 1)
    yield
    HOOKS.delete("aob:test:slots", "aob:test:release_sweep_off")


def fan_out(api, remote, key: str) -> str:
    """A run of ``FAN_OUT`` parallel requests the remote holds until ``remote.release(key)``."""
    return submit(api, {"nodes": [http(f"slow{i}", f"{remote.base}/hold/{key}") for i in range(FAN_OUT)],
                        "edges": []})


def reasons(run_id: str) -> dict[str, str]:
    return dict(NodeRun.objects.filter(run_id=run_id, status="queued").values_list("node_id", "wait_reason"))


def single(api, url: str, node_id: str = "only") -> str:
    return submit(api, {"nodes": [http(node_id, url)], "edges": []})


@pytest.mark.faults_full  # a slow fault's control: `make test-faults` only (tests/conftest.py)
def test_negative_control_without_the_limit_the_fan_out_takes_every_worker(one_slot, api, make_user, remote):
    """The same worker with the limit switched off: alice's held requests take all three of its
    processes, and bob's node waits behind them."""
    HOOKS.set("aob:test:slots", 0)
    key = uuid.uuid4().hex
    alice = fan_out(api, remote, key)
    wait_until(lambda: len(remote.hits(f"/hold/{key}")) == 3, what="three requests held, one per worker process")

    quick = single(client_for(make_user("bob")), f"{remote.base}/echo")
    with pytest.raises(AssertionError, match="still queued"):
        wait_for_run(quick, timeout=4)
    assert reasons(quick) == {"only": ""}  # not held: waiting its turn in the queue, unseen
    remote.release(key)
    assert wait_for_run(quick, timeout=30).status == "completed"
    assert wait_for_run(alice, timeout=30).status == "completed"


def test_another_owners_node_runs_beside_a_slow_fan_out_and_each_waiting_node_says_why(
        one_slot, api, make_user, remote):
    key = uuid.uuid4().hex
    alice = fan_out(api, remote, key)
    wait_until(lambda: len(remote.hits(f"/hold/{key}")) == 1 and len(reasons(alice)) == FAN_OUT - 1
               and set(reasons(alice).values()) == {"slot"}, what="one request held, the other nodes waiting for a slot")

    bob = client_for(make_user("bob"))
    assert wait_for_run(single(bob, f"{remote.base}/echo"), timeout=15).status == "completed"
    assert len(remote.hits(f"/hold/{key}")) == 1  # bob's ran while alice's first still held her slot

    details = api.get(f"/api/v1/runs/{alice}/details").json()
    waiting = [n for n in details["nodes"] if n["status"] == "queued"]
    assert len(waiting) == FAN_OUT - 1 and {n["wait_reason"] for n in waiting} == {"slot"}
    timeline = api.get(f"/api/v1/runs/{alice}/timeline").json()["items"]
    assert {i["waiting_for"] for i in timeline if i["status"] == "queued"} == {NodeRun.WAITING_FOR["slot"]}
    assert {i["waiting_for"] for i in timeline if i["status"] != "queued"} == {""}
    held = [e for e in api.get(f"/api/v1/runs/{alice}/events").json() if e["type"] == "node_held"]
    assert sorted(e["node_id"] for e in held) == sorted(n["node_id"] for n in waiting)  # each told once
    assert {e["data"]["limit"] for e in held} == {1}

    remote.release(key)  # each finish gives its slot to the next (the sweeper's release is off)
    assert wait_for_run(alice, timeout=30).status == "completed"
    assert len(remote.hits(f"/hold/{key}")) == FAN_OUT
    assert sorted(NodeRun.objects.filter(run_id=alice).values_list("attempts", "wait_reason")) == [(1, "")] * FAN_OUT


def test_a_failed_node_gives_its_slot_to_the_next(one_slot, api, remote):
    key = uuid.uuid4().hex
    first = single(api, f"{remote.base}/hold/{key}")
    wait_until(lambda: remote.hits(f"/hold/{key}"), what="the first request reaching the remote")
    failing = single(api, f"{remote.base}/flaky/{key}/9")  # the connection dropped, no retry: the node fails
    after = single(api, f"{remote.base}/echo")
    wait_until(lambda: reasons(failing) == {"only": "slot"} and reasons(after) == {"only": "slot"},
               what="both later runs' nodes waiting for a slot")

    remote.release(key)  # the first completes and gives its slot to the failing one, whose failure gives it on
    assert wait_for_run(first, timeout=20).status == "completed"
    assert wait_for_run(failing, timeout=20).status == "failed"
    assert wait_for_run(after, timeout=20).status == "completed"


def test_a_slot_freed_by_a_cancel_is_given_on_by_the_sweeper_and_without_it_stays_idle(one_slot, api, remote):
    key = uuid.uuid4().hex
    first = single(api, f"{remote.base}/hold/{key}")
    wait_until(lambda: remote.hits(f"/hold/{key}"), what="the first request reaching the remote")
    second = single(api, f"{remote.base}/echo", "next")
    wait_until(lambda: reasons(second) == {"next": "slot"}, what="the second run's node waiting for a slot")
    third = single(api, f"{remote.base}/echo", "later")
    wait_until(lambda: reasons(third) == {"later": "slot"}, what="the third run's node waiting for a slot")
    assert api.post(f"/api/v1/runs/{third}/cancel").status_code == 200  # a held node run cancelled waits no more
    assert list(NodeRun.objects.filter(run_id=third).values_list("status", "wait_reason", "held_for")) == [
        ("cancelled", "", None)]

    assert api.post(f"/api/v1/runs/{first}/cancel").status_code == 200  # no finish releases the slot
    wait_until(lambda: NodeRun.objects.filter(run_id=first, status="running").count() == 0, what="the slot freed")
    # negative control: a sweep that finished past the stack's re-publish delay (3 s) after the slot
    # was freed would have given it on; with the sweeper's release off, nothing does
    freed = HOOKS.time()[0]
    wait_until(lambda: float(HOOKS.get(sweeper.SWEPT_KEY) or 0) > freed + 4, timeout=20,
               what="a sweep past the re-publish delay")
    assert reasons(second) == {"next": "slot"}

    HOOKS.delete("aob:test:release_sweep_off")
    assert wait_for_run(second, timeout=20).status == "completed"  # the sweeper gave it on
    remote.release(key)


@pytest.mark.django_db
def test_the_sweeper_releases_as_many_as_are_free_and_never_passes_over_a_free_owner(make_user, settings):
    """Its one query groups what is held by owner and type and keeps those with a free slot: an
    owner at the limit with many held node runs releases none and hides no one; an owner with one
    free slot releases one, the longest held. (The rows are made here; on_commit publishes nothing
    in this test's transaction.)"""
    settings.AOB_OWNER_MAX_RUNNING = 1
    long_ago = timezone.now() - timedelta(minutes=5)

    def held(owner, count: int, *, running: int = 0, minutes: int = 0) -> Run:
        run = stored_run(owner)
        NodeRun.objects.bulk_create(
            [NodeRun(run=run, node_id=f"busy{i}", node_type="http", status="running", attempts=1) for i in range(running)]
            + [NodeRun(run=run, node_id=f"held{i}", node_type="http", status="queued", wait_reason="slot",
                       held_for=owner.pk, dispatched_at=long_ago + timedelta(minutes=minutes, seconds=i))
               for i in range(count)])
        return run

    alice, bob = make_user("alice"), make_user("bob")
    busy = held(alice, 150, running=1)  # held longest, at her limit: nothing of hers may go
    free = held(bob, 3, minutes=1)

    assert admission.release_unreleased(timezone.now()) == 1
    assert sorted(NodeRun.objects.filter(run=free, wait_reason="").values_list("node_id", flat=True)) == ["held0"]
    assert NodeRun.objects.filter(run=busy, wait_reason="slot").count() == 150


def _waiting_on_a_lock() -> int:
    """Backends of the stack waiting for a row lock now (the coordinator's decisions asked again)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = "
                       "current_database() AND pid <> pg_backend_pid()")
        return int(cursor.fetchone()[0])


@pytest.mark.parametrize("control", [False, True], ids=["skipped while decided", "control: asked again"])
def test_a_decision_under_way_is_not_asked_for_again_to_wait_on_its_lock(engine, api, make_user, control):
    """A decision that takes long (twenty conditionals copying a 15 MB output: 30 s) holds its run's
    row; the sweeper asked for it again every ``AOB_REPUBLISH_AFTER_S``, and each ask held a
    coordinator process waiting on that lock, until every process of the coordinator was one: any
    other owner's run waited for the slow one (25 s, a red team's find). A run whose row is held is
    passed over (``sweeper._runs_locked``) and asked for at a later sweep if still unconsumed. The
    control asks again as before: the other owner's run waits while the decision is held."""
    a = unique("slow")
    HOOKS.set(f"aob:test:stall:decision_locked:{a}", 1)  # the decision after `a` holds the run's lock
    if control:
        HOOKS.set("aob:test:reconsume_locked_off", 1)
    try:
        # a branch rule: the full decision (the plain step takes no rule), where the stall point is
        slow = submit(api, {"nodes": [transform(a, "1"), transform("b", "2")], "edges": [edge(a, "b", "output == 1")]})
        wait_until(lambda: HOOKS.exists(f"aob:test:stalled:decision_locked:{a}"), timeout=30, what="the decision held")
        swept = float(HOOKS.get(sweeper.SWEPT_KEY) or 0)
        # the sweeper has passed twice since `a` was due to be asked again (3 s here)
        wait_until(lambda: float(HOOKS.get(sweeper.SWEPT_KEY) or 0) > swept + 4, timeout=30, what="two sweeps")
        other = client_for(make_user(unique("other")))
        canary = submit(other, {"nodes": [transform("x", "1"), transform("y", "2")], "edges": [edge("x", "y")]})
        if control:
            wait_until(lambda: _waiting_on_a_lock() >= 2, timeout=30, what="the asks waiting on the lock")
            with pytest.raises(AssertionError):
                wait_for_run(canary, timeout=8)
            return
        assert wait_for_run(canary, timeout=20).status == Run.Status.COMPLETED
        assert HOOKS.exists(f"aob:test:stalled:decision_locked:{a}")  # while the slow decision still held
        assert _waiting_on_a_lock() == 0
    finally:
        HOOKS.set(f"aob:test:stall_release:decision_locked:{a}", 1, ex=120)
        HOOKS.delete("aob:test:reconsume_locked_off")
    assert wait_for_run(slow, timeout=60).status == Run.Status.COMPLETED
