"""Durability with real processes: a worker killed by PID mid-node, duplicate and late
messages, a crash between commit and publish (and its negative control), and the broker's
queues emptied mid-run. Any process may die at any line; each node's work is applied once."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import pytest
import redis
from django.conf import settings

from aob_project.celery import app
from tests.conftest import wait_for_run
from tests.engine.flow import (
    edge,
    event_counts,
    events,
    http,
    node_runs,
    submit,
    transform,
    unique,
    wait_all,
    wait_drained,
    wait_until,
)
from tests.engine.victim import control
from tests.support import stack
from workflows.engine.dispatch import Dispatch, coordinate_now, publish_now
from workflows.models import NodeRun, Run
from workflows.services.runs import run_cancel

pytestmark = pytest.mark.fault

HOOKS = redis.Redis.from_url(settings.REDIS_URL)
# Past the time the sweeper needs to finish every run whose messages the broker lost (~6 s here).
BROKER_BOUND_S = 15


def drop_first_publish(node_id: str) -> None:
    HOOKS.set(f"aob:test:drop_publish:{node_id}", 1)


def dispatch_of(nr: NodeRun, timeout_ms: int | None = None) -> Dispatch:
    return Dispatch(nr.pk, nr.node_id, nr.node_type, str(nr.run_id), timeout_ms)


def kill_mid_request(engine: dict[str, Any], stack_env: dict[str, str], api: Any, remote: Any,
                     config: dict[str, Any]) -> tuple[str, str, float]:
    """One trial: a POST node whose worker is killed by PID (SIGKILL) while the remote is applying
    its effect. Returns (run id, effect name, when killed). The remote honours Idempotency-Key."""
    name = unique("charge")
    control(engine["worker"].node_name, "cancel_consumer", "wf.tasks.http")  # the victim is the only http consumer
    victim = stack.start_worker(stack_env, "victim", queues=["wf.tasks.http"], concurrency=1)
    try:
        definition = {
            "nodes": [transform("a", "{'k': 1}"),
                      http("slow", f"{remote.base}/effect/{name}/3", timeout_ms=4000,  # lease: 4 s + 2 s grace
                           config={"method": "POST", "payload": {"amount": 5}, **config}),
                      transform("after", "nodes.slow.body.slept")],
            "edges": [edge("a", "slow"), edge("slow", "after")],
        }
        run_id = submit(api, definition)
        wait_until(lambda: remote.effects(name), what="the victim calling the remote")
        time.sleep(0.3)
        victim.kill()  # SIGKILL to its process group, the pool child included
        killed_at = time.time()
        assert NodeRun.objects.get(run_id=run_id, node_id="slow").status == "running"
    finally:
        control(engine["worker"].node_name, "add_consumer", "wf.tasks.http")
        victim.stop()
    return run_id, name, killed_at


def test_worker_killed_mid_node_the_node_runs_again_and_is_applied_once(engine, stack_env, api, remote):
    run_id, name, killed_at = kill_mid_request(engine, stack_env, api, remote, {})
    run = wait_for_run(run_id, timeout=40)
    assert run.status == "completed", run.error
    hits = remote.hits(f"/effect/{name}/")
    assert len(hits) == 2  # sent again after the kill ...
    keys = {next(v for k, v in h["headers"].items() if k.lower() == "idempotency-key") for h in hits}
    assert len(keys) == 1  # ... with the same key,
    assert len(remote.effects(name)) == 1  # so the remote applied it once
    assert hits[1]["at"] - killed_at < 30  # it ran again within 30 s
    slow = node_runs(run)["slow"]
    assert slow.status == "completed"
    assert slow.output["body"]["effect"] == 1
    assert slow.attempts == 2
    assert [entry["status"] for entry in slow.attempt_log] == ["lost", "completed"]
    assert slow.attempt_log[0]["error"]["error_type"] == "WorkerLost"
    assert NodeRun.objects.filter(run=run, node_id="after").count() == 1
    assert node_runs(run)["after"].output == 3.0
    counts = event_counts(run)
    assert counts[("node_started", "slow")] == 2
    assert counts[("node_retrying", "slow")] == 1
    assert counts[("node_completed", "slow")] == 1  # applied once
    assert counts[("node_started", "after")] == 1
    assert counts[("workflow_completed", "")] == 1


@pytest.mark.faults_full  # a slow fault or its control: `make test-faults` only (tests/conftest.py)
def test_negative_control_without_the_key_the_repeat_applies_the_effect_twice(engine, stack_env, api, remote):
    """The same trial with the protecting mechanism off (no key, told to repeat): the check above
    does detect the doubling."""
    run_id, name, _ = kill_mid_request(engine, stack_env, api, remote,
                                       {"idempotency_header": False, "on_lost": "repeat"})
    run = wait_for_run(run_id, timeout=40)
    assert run.status == "completed", run.error
    assert len(remote.hits(f"/effect/{name}/")) == 2
    assert len(remote.effects(name)) == 2  # doubled
    assert node_runs(run)["slow"].output["body"]["effect"] == 2


def test_a_post_without_a_key_is_not_repeated_after_a_kill_it_fails_as_outcome_unknown(engine, stack_env, api,
                                                                                      remote):
    run_id, name, _ = kill_mid_request(engine, stack_env, api, remote, {"idempotency_header": None})
    run = wait_for_run(run_id, timeout=40)
    assert run.status == "failed"
    slow = node_runs(run)["slow"]
    assert slow.status == "failed"
    assert slow.error["error_type"] == "OutcomeUnknown" and slow.error["transient"] is False
    assert "on_lost" in slow.error["message"]
    assert [entry["status"] for entry in slow.attempt_log] == ["lost", "failed"]
    assert len(remote.hits(f"/effect/{name}/")) == 1  # not sent again: a person decides
    assert len(remote.effects(name)) == 1
    assert run.error["error_type"] == "OutcomeUnknown"


@pytest.mark.parametrize("stop", ["request timeout", "node timeout"])
@pytest.mark.parametrize("config", [{"idempotency_header": None}, {"on_lost": "fail"},
                                    {"idempotency_header": None, "on_lost": "repeat"}],
                         ids=["no key", "on_lost fail", "control: on_lost repeat"])
def test_a_post_not_repeated_after_a_kill_is_not_repeated_after_a_timeout_either(engine, api, remote, stop, config):
    """A request that timed out after it went out is the same unknown as one whose worker died: the
    node's retry sent a POST without a key again and the remote applied both (a red team's find).
    The author's ``on_lost: repeat`` still repeats it (this test's control: the doubling shows)."""
    name = unique("charge")
    node = http("charge", f"{remote.base}/effect/{name}/3",
                config={"method": "POST", "payload": {"amount": 5}, **config})
    node["retry"] = {"max_attempts": 2, "backoff_ms": 100}
    if stop == "request timeout":
        node["config"]["timeout_ms"] = 800
    else:
        node["timeout_ms"] = 1000  # the node's own limit (Celery's soft time limit), mid-request
    run = wait_for_run(submit(api, {"nodes": [node], "edges": []}), timeout=40)
    charge = node_runs(run)["charge"]
    assert run.status == "failed"
    if config.get("on_lost") == "repeat":
        assert len(remote.effects(name)) == 2 and [e["status"] for e in charge.attempt_log] == ["failed", "failed"]
        return
    assert charge.error["error_type"] == "OutcomeUnknown" and charge.error["transient"] is False, charge.error
    assert [entry["status"] for entry in charge.attempt_log] == ["failed"]
    assert len(remote.hits(f"/effect/{name}/")) == 1 and len(remote.effects(name)) == 1  # a person decides


@pytest.mark.parametrize("point", ["answered", "checked"])
@pytest.mark.parametrize("config", [{"idempotency_header": None}, {"on_lost": "fail"},
                                    {"idempotency_header": None, "on_lost": "repeat"}],
                         ids=["no key", "on_lost fail", "control: on_lost repeat"])
def test_a_post_answered_before_the_node_s_timeout_ran_out_is_not_sent_again(engine, api, remote, config, point):
    """The node's timeout_ms firing after the answer came, while the output was made (a large body,
    the secrets masked: a worker held at the ``answered`` point) or checked as JSON by the engine
    (``checked``, a review's find after the first mend), let the node's retry send a POST without a
    key again (left alone two sessions, mended in the twentieth: ``execution.answered``, one rule).
    The author's ``on_lost: repeat`` still repeats it (the control: the doubling shows)."""
    name = unique("answered")
    url = f"{remote.base}/effect/{name}/0"
    node = http("charge", url, config={"method": "POST", "payload": {"amount": 5}, **config})
    node["retry"] = {"max_attempts": 2, "backoff_ms": 100}
    node["timeout_ms"] = 1500  # the node's own limit (Celery's soft time limit), reached while held
    HOOKS.set(f"aob:test:stall:{point}:{url}", 1)  # the first attempt only: the process that holds takes it
    try:
        run = wait_for_run(submit(api, {"nodes": [node], "edges": []}), timeout=40)
        assert HOOKS.exists(f"aob:test:stalled:{point}:{url}")  # the first attempt was held there
    finally:
        HOOKS.delete(f"aob:test:stall:{point}:{url}", f"aob:test:stalled:{point}:{url}")
    charge = node_runs(run)["charge"]
    assert run.status in ("failed", "completed")
    if config.get("on_lost") == "repeat":
        assert len(remote.effects(name)) == 2 and run.status == "completed", (run.status, charge.attempt_log)
        return
    assert run.status == "failed" and charge.error["error_type"] == "Timeout", charge.error
    assert charge.error["transient"] is False and "after its request was answered" in charge.error["message"]
    assert [entry["status"] for entry in charge.attempt_log] == ["failed"]
    assert len(remote.hits(f"/effect/{name}/")) == 1 and len(remote.effects(name)) == 1  # a person decides


def test_a_pure_step_timed_out_while_its_output_was_checked_is_run_again(engine, api):
    """The rule above is for steps that act outside: a transform on a worker whose ``timeout_ms`` ran
    out while the engine checked its output was failed for good, "after its request was answered"
    (it sends none), where its retry is as safe as its first attempt (a review's find)."""
    url = f"https://{unique('nothing')}.invalid/x"  # never fetched: the key the ``checked`` point holds by
    node = transform("t", f"{{'url': '{url}', 'status_code': 200}}")
    node["retry"] = {"max_attempts": 2, "backoff_ms": 100}
    node["timeout_ms"] = 1500
    HOOKS.set(f"aob:test:stall:checked:{url}", 1)  # the first attempt only
    try:
        run = wait_for_run(submit(api, {"nodes": [node], "edges": []}), timeout=40)
        assert HOOKS.exists(f"aob:test:stalled:checked:{url}")
    finally:
        HOOKS.delete(f"aob:test:stall:checked:{url}", f"aob:test:stalled:checked:{url}")
    t = node_runs(run)["t"]
    assert run.status == "completed", (t.error, t.attempt_log)
    assert [entry["status"] for entry in t.attempt_log] == ["failed", "completed"], t.attempt_log
    assert t.output == {"url": url, "status_code": 200}


@pytest.mark.parametrize("config", [{"idempotency_header": None}, {"on_lost": "fail"}, {"on_lost": "repeat"}],
                         ids=["no key", "on_lost fail", "control: on_lost repeat"])
def test_a_post_answered_by_a_redirect_is_not_sent_again_for_what_the_redirect_s_target_answered(
        engine, api, remote, config):
    """Post/Redirect/Get: the remote applied the POST and answered 303, and the page it pointed to
    answered 429. That is the GET's "not now", not the POST's: the node's retry sent the POST again,
    with no key or against ``on_lost: fail`` (a red-team helper's find). Where a lost POST would be
    sent again (``on_lost: repeat`` with its key: the control) the retry still sends it."""
    name = unique("order")
    target = quote(f"{remote.base}/status/429?{name}", safe="")
    node = http("order", f"{remote.base}/redirect?to={target}&code=303",
                config={"method": "POST", "payload": {"amount": 5}, "fail_on_status": True, **config})
    node["retry"] = {"max_attempts": 3, "backoff_ms": 100}
    run = wait_for_run(submit(api, {"nodes": [node], "edges": []}), timeout=40)
    order = node_runs(run)["order"]
    posts = [h for h in remote.hits("/redirect") if h["method"] == "POST" and name in h["query"]["to"][0]]
    assert run.status == "failed" and order.error["error_type"] == "HTTPStatusError", order.error
    if config.get("on_lost") == "repeat":
        assert len(posts) == 3 and order.error["transient"] is True, (len(posts), order.error)
        return
    assert len(posts) == 1 and order.error["transient"] is False, (len(posts), order.attempt_log)
    assert order.error["message"].startswith("POST ") and f"GET {remote.base}/status/429" in order.error["message"]


def duplicate_messages(api: Any, remote: Any) -> tuple[str, NodeRun]:
    """One trial: a node's executor message twice at once, again once its node finished, and its
    coordinator message twice more. Returns (run id, the node run). Its request is
    ``/sleep/0.5/<its id>``, the next node's ``/sleep/0.5/next``."""
    dup = unique("dup")
    drop_first_publish(dup)  # the test publishes it, twice at once
    definition = {
        "nodes": [http(dup, f"{remote.base}/sleep/0.5/{dup}"), http("next", f"{remote.base}/sleep/0.5/next"),
                  transform("last", "1")],
        "edges": [edge(dup, "next"), edge("next", "last")],
    }
    run_id = submit(api, definition)
    nr = NodeRun.objects.get(run_id=run_id, node_id=dup)
    publish_now(dispatch_of(nr))
    publish_now(dispatch_of(nr))
    wait_until(lambda: NodeRun.objects.filter(pk=nr.pk, consumed=True).exists(), what="dup consumed")
    publish_now(dispatch_of(nr))   # the executor message again, once its node finished
    coordinate_now(nr.pk)          # the coordinator message, twice more
    coordinate_now(nr.pk)
    return run_id, nr


def test_the_same_executor_and_coordinator_messages_twice_change_nothing(engine, api, remote):
    run_id, nr = duplicate_messages(api, remote)
    run = wait_for_run(run_id)
    assert run.status == "completed"
    wait_drained(list(NodeRun.objects.filter(run=run).values_list("pk", flat=True)))  # the stragglers landed
    assert len(remote.hits(f"/sleep/0.5/{nr.node_id}")) == 1  # dup's request once,
    assert len(remote.hits("/sleep/0.5")) == 2  # and next's once
    assert NodeRun.objects.filter(run=run).count() == 3
    assert NodeRun.objects.get(pk=nr.pk).attempts == 1
    counts = event_counts(run)
    for node_id in (nr.node_id, "next", "last"):
        assert counts[("node_started", node_id)] == counts[("node_completed", node_id)] == 1, node_id
    assert counts[("workflow_completed", "")] == 1
    assert sum(counts.values()) == 8


@pytest.mark.faults_full  # a slow fault or its control: `make test-faults` only (tests/conftest.py)
def test_negative_control_without_the_claim_check_a_duplicate_executor_message_runs_the_node_again(engine, api,
                                                                                                  remote):
    """The trial above with the executor's claim taking its node run whatever its status
    (``aob:test:claim_check_off``): a copy is claimed as a new attempt and sends the request again,
    which the checks above count."""
    HOOKS.set("aob:test:claim_check_off", 1)
    try:
        run_id, nr = duplicate_messages(api, remote)
        wait_until(lambda: len(remote.hits(f"/sleep/0.5/{nr.node_id}")) >= 2, what="dup's request sent again")
        wait_until(lambda: NodeRun.objects.filter(run_id=run_id, node_id="last").exists()
                   and not NodeRun.objects.filter(run_id=run_id, status__in=["queued", "running"]).exists(),
                   what="every node run of the run ended")
        wait_drained(list(NodeRun.objects.filter(run_id=run_id).values_list("pk", flat=True)))
    finally:
        HOOKS.delete("aob:test:claim_check_off")
    assert len(remote.hits(f"/sleep/0.5/{nr.node_id}")) >= 2  # doubled
    assert NodeRun.objects.get(pk=nr.pk).attempts >= 2
    assert event_counts(Run.objects.get(pk=run_id))[("node_started", nr.node_id)] >= 2
    # A copy that ran after dup was consumed can leave the run unfinished (its last decision saw
    # dup running again): cancelled here, so no run of this test outlives it.
    run = Run.objects.get(pk=run_id)
    if run.status not in ("completed", "failed", "cancelled"):
        run_cancel(run=run, user=run.owner)
    wait_for_run(run_id)


def test_a_late_duplicate_after_the_run_finished_has_no_effect(engine, api):
    run = wait_for_run(submit(api, {"nodes": [transform("a", "1"), transform("b", "2")],
                                    "edges": [edge("a", "b")]}))
    assert run.status == "completed"
    before = [(e.seq, e.type, e.node_id) for e in events(run)]
    rows = {nr.pk: (nr.status, nr.attempts, nr.output, nr.finished_at) for nr in NodeRun.objects.filter(run=run)}
    send_late_duplicates(run)
    assert [(e.seq, e.type, e.node_id) for e in events(run)] == before
    after = {nr.pk: (nr.status, nr.attempts, nr.output, nr.finished_at) for nr in NodeRun.objects.filter(run=run)}
    assert after == rows
    assert Run.objects.get(pk=run.pk).status == "completed"


def send_late_duplicates(run: Run) -> None:
    """Every node run's executor and coordinator messages once more, and wait until all are handled."""
    pks = []
    for nr in NodeRun.objects.filter(run=run):
        publish_now(dispatch_of(nr))
        coordinate_now(nr.pk)
        pks.append(nr.pk)
    wait_drained(pks)  # every late copy handled


@pytest.mark.faults_full  # a slow fault or its control: `make test-faults` only (tests/conftest.py)
def test_negative_control_without_the_claim_check_a_late_duplicate_runs_its_node_again(engine, api):
    """The trial above with the executor's claim taking its node run whatever its status and its
    run's (``aob:test:claim_check_off``): each late executor message starts and completes its node
    once more in the finished run."""
    run = wait_for_run(submit(api, {"nodes": [transform("a", "1"), transform("b", "2")],
                                    "edges": [edge("a", "b")]}))
    assert run.status == "completed"
    HOOKS.set("aob:test:claim_check_off", 1)
    try:
        send_late_duplicates(run)
    finally:
        HOOKS.delete("aob:test:claim_check_off")
    counts = event_counts(run)
    for node_id in ("a", "b"):
        assert counts[("node_started", node_id)] == counts[("node_completed", node_id)] == 2, node_id  # doubled
    assert {nr.node_id: nr.attempts for nr in NodeRun.objects.filter(run=run)} == {"a": 2, "b": 2}


def lost_publish_flow(entry: str, middle: str) -> dict[str, Any]:
    return {
        "nodes": [transform(entry, "1"), transform(middle, f"nodes.{entry} + 1"),
                  transform("end", f"nodes.{middle} * 10")],
        "edges": [edge(entry, middle), edge(middle, "end")],
    }


@pytest.mark.faults_full  # slow: `make test-faults` runs it (tests/conftest.py; the lean faults keep make test short)
def test_a_publish_lost_after_commit_is_republished_by_the_sweeper(engine, api):
    entry, middle = unique("lost_entry"), unique("lost_mid")
    drop_first_publish(entry)   # lost after run_start's commit
    drop_first_publish(middle)  # lost after a coordinator's commit
    run = wait_for_run(submit(api, lost_publish_flow(entry, middle)), timeout=30)
    assert run.status == "completed", run.error
    nrs = node_runs(run)
    assert nrs["end"].output == 20
    for node_id in (entry, middle):
        waited = (nrs[node_id].started_at - nrs[node_id].queued_at).total_seconds()
        assert waited >= 2.5, (node_id, waited)  # it ran only once the sweeper re-sent it
        assert nrs[node_id].attempts == 1
    assert HOOKS.exists(f"aob:test:drop_publish:{entry}", f"aob:test:drop_publish:{middle}") == 0


@pytest.mark.faults_full  # a slow fault or its control: `make test-faults` only (tests/conftest.py)
def test_negative_control_without_the_sweeper_the_lost_node_is_detected(engine, api):
    HOOKS.set("aob:test:sweeper_paused", 1)
    entry, middle = unique("lost_entry"), unique("lost_mid")
    drop_first_publish(middle)
    run_id = submit(api, lost_publish_flow(entry, middle))
    wait_until(lambda: NodeRun.objects.filter(run_id=run_id, node_id=middle).exists(), what="middle emitted")
    with pytest.raises(AssertionError, match="still running"):
        wait_for_run(run_id, timeout=5)  # the check the crash test relies on does fail here
    lost = NodeRun.objects.get(run_id=run_id, node_id=middle)
    assert lost.status == "queued" and lost.started_at is None
    assert NodeRun.objects.get(run_id=run_id, node_id=entry).status == "completed"
    HOOKS.delete("aob:test:sweeper_paused")
    run = wait_for_run(run_id, timeout=30)
    assert run.status == "completed"
    assert node_runs(run)["end"].output == 20


def broker_queue_keys(client: redis.Redis) -> list[bytes]:
    keys = [k for k in client.scan_iter("wf.*") if client.type(k) == b"list"]
    return keys + [k for k in (b"unacked", b"unacked_index") if client.exists(k)]


def empty_the_broker_mid_run(api: Any, remote: Any) -> list[str]:
    """One trial: five runs of slow requests, their broker queues deleted while some of their
    messages wait there. Returns the runs' ids."""
    definition = {
        "nodes": [http("p1", f"{remote.base}/sleep/0.8"), http("p2", f"{remote.base}/sleep/0.8"),
                  transform("join", "nodes.p1.status_code + nodes.p2.status_code"),
                  http("tail", f"{remote.base}/echo", config={"method": "POST", "payload": {"j": "$nodes.join"}}),
                  transform("end", "nodes.tail.body.json.j")],
        "edges": [edge("p1", "join"), edge("p2", "join"), edge("join", "tail"), edge("tail", "end")],
    }
    ids = [submit(api, definition) for _ in range(5)]  # 10 slow requests for 3 worker processes
    wait_until(lambda: len(remote.hits("/sleep/")) >= 2, what="the first requests")
    broker = redis.Redis.from_url(app.conf.broker_url)
    keys = broker_queue_keys(broker)
    waiting = sum(broker.llen(k) for k in keys if broker.type(k) == b"list")
    broker.delete(*keys)  # as if Redis restarted with its queues empty
    assert waiting > 0, "nothing was waiting in the broker: the test proved nothing"
    return ids


@pytest.mark.faults_full  # slow: `make test-faults` runs it (tests/conftest.py; the lean faults keep make test short)
def test_broker_queues_emptied_mid_run_every_run_still_completes(engine, api, remote):
    ids = empty_the_broker_mid_run(api, remote)
    runs = wait_all(ids, timeout=60)
    assert {r.status for r in runs} == {"completed"}, [r.error for r in runs]
    for run in runs:
        assert node_runs(run)["end"].output == 400
        counts = event_counts(run)
        for node_id in ("p1", "p2", "join", "tail", "end"):
            assert counts[("node_completed", node_id)] == 1, (run.pk, node_id)
        assert counts[("workflow_completed", "")] == 1


@pytest.mark.faults_full  # a slow fault or its control: `make test-faults` only (tests/conftest.py)
def test_negative_control_without_the_sweeper_runs_whose_messages_were_emptied_stay_unfinished(engine, api, remote):
    """The trial above with the sweeper paused: what the broker lost is sent by nothing else, so
    runs stay unfinished well past the time the sweeper needs to finish them all."""
    HOOKS.set("aob:test:sweeper_paused", 1)
    try:
        ids = empty_the_broker_mid_run(api, remote)
        with pytest.raises(AssertionError, match="runs not finished"):
            wait_all(ids, timeout=BROKER_BOUND_S)
        stuck = NodeRun.objects.filter(run_id__in=ids, status="queued", started_at__isnull=True)
        assert stuck.exists()  # queued, their messages gone, never started
    finally:
        HOOKS.delete("aob:test:sweeper_paused")
    runs = wait_all(ids, timeout=60)  # the sweeper back: it finds them
    assert {r.status for r in runs} == {"completed"}, [r.error for r in runs]
