"""``aob run watch`` hints a gate as its approval is now (``_gate_now``'s flags over the
``approval_required`` event's data, as ``_follow`` merges them), in words that agree with those
flags."""

from __future__ import annotations

from aob.cli.runs import _gate_hint


def _as_watched(asked: dict, now: dict) -> str | None:
    # what _follow's on_event hands _gate_hint: the run id, the event's data, then the gate as it is now
    event = {"type": "approval_required", "node_id": "review", "data": asked}
    return _gate_hint({**event, "data": {"run_id": "r1", **asked, **now}})


def test_a_gate_that_can_no_longer_be_approved_is_hinted_in_words_not_none() -> None:
    """A 2-of-2 gate asked of group ops (bob, carol): the event said nothing was wrong (no flags, no
    warning). Carol is deactivated since: the approval now says ``cannot_be_approved``. The hint
    prints the event's warning, which it never had: ``None: aob reject r1 review``."""
    hint = _as_watched({"approval_id": 7, "approvers": ["ops"], "required_approvals": 2},
                       {"nobody_can_decide": False, "cannot_be_approved": True})
    assert hint is not None and not hint.startswith("None"), hint


def test_a_gate_someone_can_decide_again_is_not_hinted_as_nobody_can() -> None:
    """The event said nobody could decide it (its only approver deactivated when asked); she is
    active again but it needs two: now only ``cannot_be_approved``. The hint repeats the event's
    "nobody can decide" words beside ``aob reject``."""
    warning = ("no active user is named by, or in a group named by, the approvers ['ops']: nobody can decide "
               "approval 7; it has no deadline: only cancelling the run ends it")
    hint = _as_watched({"approval_id": 7, "approvers": ["ops"], "nobody_can_decide": True,
                        "cannot_be_approved": True, "warning": warning},
                       {"nobody_can_decide": False, "cannot_be_approved": True})
    assert hint is not None and "nobody can decide" not in hint, hint


def test_a_pause_on_a_run_above_is_hinted_by_how_far_up_it_is() -> None:
    """A pause on a run above names no run (its readers may not see it, ``agents.budget``): the hint
    says which run to raise by how far up it is, never the paused run itself, which has no ceiling."""
    hint = _gate_hint({"type": "node_paused", "run_id": "child", "node_id": "plan",
                       "data": {"reason": "budget", "above": 2, "next_call": {"tokens": 1, "cost_usd": 1.0}}})
    own = _gate_hint({"type": "node_paused", "run_id": "r1", "node_id": "plan",
                      "data": {"reason": "budget", "budget_run_id": "r1"}})

    assert hint is not None and "the run 2 above this one" in hint and "child" not in hint, hint
    assert own == "paused on a run's budget: aob run budget r1 --max-cost-usd <usd>"
