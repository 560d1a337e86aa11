"""kill -9 of an executor right after its claim gave its node back unrun and published it again with
the limit a patch set while the node was queued (``execution.send_again``: its timeout_ms lowered
from 60 s to 1 s), before its own message (60 s) was acked. Celery puts that message back
(``task_reject_on_worker_lost``) and its claim finds the node queued, the limit still stale. It ran
the step under the 60 s (any second mismatch of a patch was taken for processes that disagree on
the default limit): a step of 8 s completed. Now only a message carrying the limit a send of the
patch published runs under its own (``execution.disagrees``); the put-back copy is given back and
sent again as the first was, and the step is cut at 1 s. The control keeps the old rule
(``aob:test:sent_again_per_patch``): the step completes.

The message sent again (1 s) holds before its claim (the stall point ``execution_limit``), so the
put-back one is taken first, as it is whenever it reaches a free process first. The sweeper is
paused meanwhile: the held message leaves the node queued, and past ``AOB_REPUBLISH_AFTER_S`` its
republish (1 s, the switch already taken) was claimed first where the put-back came late."""

from __future__ import annotations

import pytest

from tests.engine.flow import http, node_runs, submit, unique, wait_all
from workflows.engine import execution
from workflows.engine.dispatch import _time_limits
from workflows.models import NodeRun
from workflows.registry import queue_for

from .harness import Victim, hooks, mark_stall, pause_sweeper, resume_sweeper, wait_for, wait_stalled

pytestmark = pytest.mark.fault


@pytest.fixture
def http_worker(workers, stack_env):
    """The only consumer of the http queue while a test runs: its pool process dies."""
    victim = Victim(workers, stack_env, [queue_for("http")])
    yield victim
    victim.close(workers)
    hooks().delete("aob:test:sent_again_per_patch")


def lowered_and_killed(api, remote) -> NodeRun:
    """A step of 8 s queued with timeout_ms 60 s, lowered to 1 s; the claim that sends it again dies."""
    node_id = unique("lowered")
    sent = f"{node_id}:{_time_limits('http', 1000)[0]}"  # the message sent again, with 1 s
    pause_sweeper()  # no republish of the queued node but the engine's own sends
    try:
        mark_stall("execution", node_id)  # the first message holds before its claim: queued
        try:
            run_id = submit(api, {"nodes": [http(node_id, f"{remote.base}/sleep/8", timeout_ms=60000)], "edges": []})
            wait_stalled("execution", node_id)
            patched = api.post(f"/api/v1/runs/{run_id}/patches", {"operations": [
                {"op": "replace", "path": "/nodes/0/timeout_ms", "value": 1000}]}, format="json")
            assert patched.status_code == 201, patched.json()
            mark_stall("execution_limit", sent)
            hooks().set(f"aob:test:sent_again_kill:{node_id}", 1)
        finally:
            hooks().set(f"aob:test:stall_release:execution:{node_id}", 1)
        try:
            wait_for(lambda: hooks().get(f"aob:test:kills:{node_id}"), 20, "the claim's process killed after its send")
            wait_stalled("execution_limit", sent, timeout=20)
            wait_for(lambda: NodeRun.objects.get(run_id=run_id, node_id=node_id).attempts >= 2, 20,
                     "the put-back message claimed")
        finally:
            hooks().set(f"aob:test:stall_release:execution_limit:{sent}", 1)
    finally:
        resume_sweeper()
    [run] = wait_all([run_id], timeout=40)
    return node_runs(run)[node_id]


def test_a_put_back_copy_of_a_message_sent_again_never_runs_the_step_under_its_stale_limit(
        engine, api, remote, http_worker):
    step = lowered_and_killed(api, remote)

    # the 1 s its owner set holds: a step that sleeps 8 s is cut, never completed
    assert (step.status, step.error["error_type"]) == ("failed", "Timeout"), (step.status, step.attempt_log)
    # both claims of the 60 s message gave it back unrun: neither counts a try
    assert [entry["status"] for entry in step.attempt_log] == ["sent_again", "sent_again", "failed"]
    assert [entry["sent_ms"] for entry in step.attempt_log[:2]] == [60000, 60000]
    assert execution.tries(step.pk, step.attempts) == 1


@pytest.mark.faults_full  # a control: `make test-faults` only (tests/conftest.py)
def test_control_a_mismatch_after_any_send_of_the_patch_runs_the_put_back_copy_under_its_stale_limit(
        engine, api, remote, http_worker):
    hooks().set("aob:test:sent_again_per_patch", 1)
    step = lowered_and_killed(api, remote)

    assert step.status == "completed", (step.status, step.error, step.attempt_log)
    assert [entry["status"] for entry in step.attempt_log] == ["sent_again", "completed"]
