"""Two loops that jump back to the same step (a poll retried while pending, and while busy) each go
round at most their max_iterations: a pass that takes the other loop skips a loop without starting
its count again. A new pass of a loop around it does, even one around a retry in no loop's body
(its way out the branch that skips it)."""

from __future__ import annotations

import pytest

from tests.conftest import TERMINAL
from tests.engine.flow import edge, submit, transform, wait_all, wait_until
from workflows.models import NodeRun, Run


def two_retry_reasons(poll: dict) -> dict:
    """poll → wait (again while pending, at most 3) | backoff (again while busy, at most 3)."""
    return {
        "nodes": [transform("start", "'go'"), poll,
                  {"id": "wait", "type": "loop", "config": {
                      "max_iterations": 3, "loop_back_to": "poll", "condition": "$.state == 'pending'"}},
                  {"id": "backoff", "type": "loop", "config": {
                      "max_iterations": 3, "loop_back_to": "poll", "condition": "$.state == 'busy'"}}],
        "edges": [edge("start", "poll"), edge("poll", "wait", "$.state == 'pending'"),
                  edge("poll", "backoff", "$.state == 'busy'")],
    }


@pytest.mark.parametrize("pure", [False, True], ids=["on_a_worker", "in_the_decision"])
def test_alternating_passes_do_not_restart_each_other_s_count(engine, api, pure):
    # pending, busy, pending, busy, pending: 'wait' gives up on its third pending, the fifth poll
    poll = transform("poll", "{'state': iteration % 2 == 0 ? 'pending' : 'busy'}", pure=pure)
    run_id = submit(api, two_retry_reasons(poll))
    polls = lambda: NodeRun.objects.filter(run_id=run_id, node_id="poll").count()  # noqa: E731
    try:
        wait_until(lambda: polls() > 5 or Run.objects.get(pk=run_id).status in TERMINAL, timeout=60,
                   what="the run to end or poll a sixth time")
        run = Run.objects.get(pk=run_id)
        assert (polls(), run.status) == (5, "completed"), run.error
        counted = lambda loop: [(nr.iteration, nr.output["iteration"], nr.output["decision"])  # noqa: E731
                                for nr in NodeRun.objects.filter(run_id=run_id, node_id=loop, status="completed")
                                .order_by("iteration")]
        assert counted("wait") == [(0, 0, "again"), (2, 1, "again"), (4, 2, "timeout")]
        assert counted("backoff") == [(1, 0, "again"), (3, 1, "again")]
    finally:
        api.post(f"/api/v1/runs/{run_id}/cancel")


def pages_polled() -> dict:
    """page → poll → retry (again while pending, at most 3; gives up to alert) | process (when
    ready) → pages (loop back to page, 2 pages). Each page's poll answers pending, pending, ready."""
    return {
        "nodes": [transform("page", "'p'"),
                  transform("poll", "{'state': iteration % 3 == 2 ? 'ready' : 'pending'}"),
                  {"id": "retry", "type": "loop", "config": {"max_iterations": 3, "loop_back_to": "poll",
                                                             "condition": "$.state == 'pending'",
                                                             "timeout_path": "alert"}},
                  transform("process", "1"),
                  {"id": "pages", "type": "loop", "config": {"max_iterations": 2, "loop_back_to": "page"}},
                  transform("alert", "'gave up'")],
        "edges": [edge("page", "poll"), edge("poll", "retry", "$.state == 'pending'"),
                  edge("poll", "process", "$.state == 'ready'"), edge("process", "pages")],
    }


def test_a_retry_skipped_on_the_way_out_counts_each_outer_pass_from_zero(engine, api):
    # the retry leads nowhere near 'pages' (in no loop body), yet each page polls afresh
    run = wait_all([submit(api, pages_polled())], timeout=60)[0]
    rows = NodeRun.objects.filter(run=run, status="completed").order_by("iteration")
    retries = [(nr.output["iteration"], nr.output["decision"]) for nr in rows if nr.node_id == "retry"]
    assert retries == [(0, "again"), (1, "again")] * 2
    assert not [nr for nr in rows if nr.node_id == "alert"]
    assert run.status == "completed", run.error
