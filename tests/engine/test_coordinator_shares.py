"""Fair shares of the coordinator between owners (``workflows/engine/shares.py``): an owner whose
decisions spend their whole second of conditions, many runs at once, does not put all of them in
front of another owner's decision; past its share its decisions are taken only when nobody else's
wait, and all of them are still decided.

Alice's runs each take one decision of about a second (an edge condition that runs to the
``AOB_CEL_TIMEOUT_MS`` deadline, counted false: the run then completes). Bob's run takes one quick
decision, asked for after all of alice's. The stack's worker (three processes) runs with a share of
100 ms a second after a burst of 500 ms (``aob:test:share``). The negative control: with no share,
bob's decision waits behind alice's, first in, first out (2 of her 18 unfinished when his completed,
in the runs I measured; with the share, 15).

The bucket itself (``charge``, ``over``) is tested against the real Redis in the test process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from django.conf import settings
from django.utils import timezone

from tests.conftest import TERMINAL, client_for, wait_for_run
from tests.engine.flow import edge, submit, transform, wait_all, wait_until
from tests.engine.victim import control
from workflows.engine import shares, sweeper
from workflows.models import Event, NodeRun, Run

HEAVY = 18  # alice's runs: six a process of the stack's worker
# A condition that runs to its deadline (tests/security/test_bounds.py): counted false, with a
# condition_error event, so the run ends after it.
BOMB = "inputs.xs.map(a, inputs.xs.filter(b, b > a).size()).size() > 0"
HOOKS = redis.Redis.from_url(settings.REDIS_URL)


@pytest.fixture
def shared(engine) -> Iterator[None]:
    """The share on, for the stack's processes and this one; after, off again and every owner's
    bucket emptied (the next test's users may have these users' ids)."""
    HOOKS.set("aob:test:share", "100,500")
    yield
    HOOKS.delete("aob:test:share", *HOOKS.scan_iter(shares.KEY.format(owner_id="*")))


def heavy(api) -> str:
    return submit(api, {"nodes": [transform("start", "1", pure=True), transform("end", "2", pure=True)],
                        "edges": [edge("start", "end", BOMB)]}, {"xs": list(range(5000))})


def quick(api) -> str:
    return submit(api, {"nodes": [transform("only", "inputs.n + 1", pure=True)], "edges": []}, {"n": 1})


def bob_among_alices(api, make_user) -> int:
    """Start alice's heavy runs, then bob's quick one; once bob's has completed, how many of alice's
    are still unfinished. Alice's left are cancelled (a cancelled run's decision evaluates nothing)."""
    alice = [heavy(api) for _ in range(HEAVY)]
    bob = quick(client_for(make_user("bob")))
    assert wait_for_run(bob, timeout=60).status == "completed"
    unfinished = Run.objects.filter(pk__in=alice).exclude(status__in=TERMINAL).count()
    for run_id in alice:
        api.post(f"/api/v1/runs/{run_id}/cancel")
    wait_all(alice, timeout=60)
    return unfinished


@pytest.mark.faults_full  # a slow fault's control: `make test-faults` only (tests/conftest.py)
def test_negative_control_without_a_share_a_quick_decision_waits_behind_every_heavy_one(shared, api, make_user):
    HOOKS.set("aob:test:share", "0,0")
    assert bob_among_alices(api, make_user) <= 3  # at most those the three processes were deciding


def test_an_owner_past_its_share_waits_behind_others_and_each_of_its_decisions_is_still_made(
        shared, api, make_user):
    assert bob_among_alices(api, make_user) >= HEAVY // 2

    alice = [heavy(api) for _ in range(4)]  # past her share: each decision is asked for last, and made
    assert {r.status for r in wait_all(alice, timeout=60)} == {"completed"}
    # the bomb counted false, with its reason: end was skipped
    assert set(NodeRun.objects.filter(run_id__in=alice).values_list("node_id", "status")) == {
        ("end", "skipped"), ("start", "completed")}
    assert Event.objects.filter(run_id__in=alice, type="condition_error").count() == len(alice)


@pytest.fixture
def bucket(settings) -> Iterator[Any]:
    """A share of 1000 ms a second after a burst of 50 ms, and an owner no one else charges."""
    settings.AOB_DECISION_OWNER_MS_PER_S, settings.AOB_DECISION_OWNER_BURST_MS = 1000, 50
    owner = 10_000_000 + int(time.time() * 1000) % 1_000_000
    yield owner
    HOOKS.delete(shares.KEY.format(owner_id=owner))


def test_small_decisions_are_charged_together_once_they_add_up(bucket) -> None:
    shares.charge(bucket, 0.008)
    shares.charge(bucket, 0.008)
    assert not HOOKS.exists(shares.KEY.format(owner_id=bucket))  # 16 ms: no round trip yet
    shares.charge(bucket, 0.008)
    assert 23 <= float(HOOKS.hget(shares.KEY.format(owner_id=bucket), "held")) <= 24
    assert not shares.over(bucket)


def test_an_owner_past_the_burst_is_over_its_share_until_its_bucket_drains(bucket) -> None:
    shares.charge(bucket, 0.2)  # 200 ms against a burst of 50, draining 1000 ms a second
    assert shares.over(bucket)
    wait_until(lambda: not shares.over(bucket), timeout=2, what="the bucket drained below the burst")
    shares._known.pop(bucket)  # another process, which has heard nothing: it reads the bucket
    assert not shares.over(bucket)


def test_another_process_reads_what_the_owner_holds(bucket) -> None:
    shares.charge(bucket, 0.2)
    shares._known.pop(bucket)
    assert shares.over(bucket)


def test_without_a_share_nothing_is_charged_and_nobody_is_over(bucket, settings) -> None:
    settings.AOB_DECISION_OWNER_MS_PER_S = 0
    shares.charge(bucket, 5.0)
    assert not HOOKS.exists(shares.KEY.format(owner_id=bucket)) and not shares.over(bucket)


def test_the_bucket_is_timed_by_redis_and_holds_at_most_a_minute_past_the_burst(bucket) -> None:
    shares.charge(bucket, 500.0)  # a long decision: 500 s
    key = shares.KEY.format(owner_id=bucket)
    seconds, micros = HOOKS.time()
    held, at = (float(v) for v in HOOKS.hmget(key, "held", "at"))
    assert held == 50 + 1000 * shares.MOST_OVER_S  # the burst, and a minute's drain past it
    assert abs(at - (seconds * 1000 + micros / 1000)) < 1000  # Redis's clock, not this host's


def test_reading_an_owner_with_no_bucket_makes_none(bucket) -> None:
    assert not shares.over(bucket)
    assert not HOOKS.exists(shares.KEY.format(owner_id=bucket))


def test_the_sweeper_asks_again_for_an_owner_past_its_share_only_past_its_patience(shared, engine, api, make_user):
    """Both owners' decisions are left unasked (no worker takes the coordinator's queue meanwhile);
    alice is past her share. The sweeper's pass asks again for bob's at once, for alice's only past
    the longer patience, behind everyone else's; then both runs complete."""
    control(engine["worker"].node_name, "cancel_consumer", "wf.coordinator")
    try:
        bob = make_user("bob")
        runs = [quick(api), quick(client_for(bob))]
        wait_until(lambda: NodeRun.objects.filter(run_id__in=runs, status="completed", consumed=False).count() == 2,
                   what="both nodes finished, their decisions waiting")
        shares.charge(Run.objects.get(pk=runs[0]).owner_id, 10.0)
        now = timezone.now()
        assert sweeper.reconsume(decided_by=now, patience=now - timedelta(seconds=300)) == 1  # bob's
        assert sweeper.reconsume(decided_by=now, patience=now) == 2  # and alice's, past the patience
    finally:
        control(engine["worker"].node_name, "add_consumer", "wf.coordinator")
    assert {r.status for r in wait_all(runs, timeout=30)} == {"completed"}
