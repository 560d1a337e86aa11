"""Fair shares of the workers between owners (``workflows/engine/admission.py``): one owner's slow
fan-out holds no more of a type's workers than ``AOB_OWNER_MAX_RUNNING``; another owner's node
of that type runs beside it, not after all of it. What waits says why (``wait_reason`` ``slot``),
each node still runs once, and a slot freed without a finish (a cancel) is given on by the sweeper.

The stack's worker is swapped for one with the limit at 1 and three processes: without the limit,
the first owner's three held requests take all three and the other owner waits for them (the
negative control)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import client_for, wait_for_run
from tests.engine.flow import http, submit, wait_until
from tests.security.conftest import swapped_worker
from workflows.models import NodeRun

FAN_OUT = 4


@pytest.fixture
def one_slot(engine, stack_env) -> Iterator[None]:
    with swapped_worker(engine, stack_env, "one-slot", AOB_OWNER_MAX_RUNNING="1"):
        yield


def fan_out(api, remote, key: str) -> str:
    """A run of ``FAN_OUT`` parallel requests the remote holds until ``remote.release(key)``."""
    return submit(api, {"nodes": [http(f"slow{i}", f"{remote.base}/hold/{key}") for i in range(FAN_OUT)],
                        "edges": []})


def reasons(run_id: str) -> dict[str, str]:
    return dict(NodeRun.objects.filter(run_id=run_id, status="queued").values_list("node_id", "wait_reason"))


def test_negative_control_without_the_limit_the_fan_out_takes_every_worker(engine, api, make_user, remote):
    """The stack's usual worker: three processes, a limit above them. Alice's held requests take
    all three, and bob's node waits behind them."""
    key = uuid.uuid4().hex
    alice = fan_out(api, remote, key)
    wait_until(lambda: len(remote.hits(f"/hold/{key}")) == 3, what="three requests held, one per worker process")

    bob = client_for(make_user("bob"))
    quick = submit(bob, {"nodes": [http("quick", f"{remote.base}/echo")], "edges": []})
    with pytest.raises(AssertionError, match="still queued"):
        wait_for_run(quick, timeout=4)
    assert reasons(quick) == {"quick": ""}  # not held: waiting its turn in the queue, unseen
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
    assert wait_for_run(submit(bob, {"nodes": [http("quick", f"{remote.base}/echo")], "edges": []}),
                        timeout=15).status == "completed"
    assert len(remote.hits(f"/hold/{key}")) == 1  # bob's ran while alice's first still held her slot

    details = api.get(f"/api/v1/runs/{alice}/details").json()
    waiting = [n for n in details["nodes"] if n["status"] == "queued"]
    assert len(waiting) == FAN_OUT - 1 and {n["wait_reason"] for n in waiting} == {"slot"}

    remote.release(key)  # each finish gives its slot to the next
    assert wait_for_run(alice, timeout=30).status == "completed"
    assert len(remote.hits(f"/hold/{key}")) == FAN_OUT
    assert sorted(NodeRun.objects.filter(run_id=alice).values_list("attempts", "wait_reason")) == [(1, "")] * FAN_OUT


def test_a_slot_freed_by_a_cancel_is_given_to_the_next_held_node(one_slot, api, remote):
    key = uuid.uuid4().hex
    first = submit(api, {"nodes": [http("slow", f"{remote.base}/hold/{key}")], "edges": []})
    wait_until(lambda: remote.hits(f"/hold/{key}"), what="the first request reaching the remote")
    second = submit(api, {"nodes": [http("next", f"{remote.base}/echo")], "edges": []})
    wait_until(lambda: reasons(second) == {"next": "slot"}, what="the second run's node waiting for a slot")

    assert api.post(f"/api/v1/runs/{first}/cancel").status_code == 200  # no finish releases the slot
    assert wait_for_run(second, timeout=20).status == "completed"  # the sweeper gave it on
    remote.release(key)
