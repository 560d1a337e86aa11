"""Nothing of a pending approval lives in a process: the worker that parked it can go away and
the decision still resumes the run on another one.

No negative control: what this pins is an absence (no task waits for the decision, no state is
held by the worker), so there is no engine function to switch off; only production code that
kept the wait in a process could fail it. The worker dying between the park and its decision is
tests/approvals/test_park_callback_lost.py, with its control (``aob:test:undecided_parks_off``)."""

from __future__ import annotations

import pytest

from tests.approvals.runs import decide, finished, output, parked, statuses
from tests.support import stack


@pytest.mark.fault
def test_approval_still_decidable_after_a_worker_restart(engine, stack_env, user, bob):
    run_id, approval = parked(user, {"approvers": ["bob"]})
    old = engine["worker"]

    # Swap before stopping, so the session's stack always has a live worker for later tests.
    engine["worker"] = stack.start_worker(stack_env, "w1-restarted", concurrency=3)
    old.stop()
    assert old.popen.poll() is not None

    assert statuses(run_id)["review"] == "waiting"
    assert decide(bob, approval, True, "after restart").status_code == 200
    assert finished(run_id).status == "completed"
    assert statuses(run_id)["refund"] == "completed"
    assert output(run_id)["decisions"][0]["comment"] == "after restart"
