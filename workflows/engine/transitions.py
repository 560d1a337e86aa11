"""Status moves of runs and node runs: one table of what may move where, and one compare-and-set
that moves and appends the event with it.

``NODE_RUN_MOVES`` and ``RUN_MOVES`` list every allowed ``from → to``. ``move_node_runs`` and
``move_run`` update only rows whose status is one the table allows into ``to`` (and any extra
guard the caller names, such as this attempt), append the caller's events in the same
transaction when something moved, and report how many moved. The statements on the hot path
(``execution.CLAIM`` / ``COMPLETE`` / ``_finish``, the plain steps) are compare-and-sets in SQL
with their statuses written out: each module declares the moves its statements make against this
table at import (``check_node_run_move``, ``check_run_move``), and ``tests/engine/test_transitions.py``
reads every status an engine ``UPDATE`` writes, with the statuses its guard admits, against it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db.models import Q
from django.utils import timezone

from workflows.models import Event, NodeRun, Run

from . import events, hooks, locks
from .dispatch import revoke_after_commit

N, R = NodeRun.Status, Run.Status

NODE_RUN_MOVES: dict[str, frozenset[str]] = {
    # failed: the sweeper, for a deactivated owner's node no worker comes to claim (the claim's own refusal)
    N.QUEUED: frozenset({N.RUNNING, N.FAILED, N.CANCELLED}),
    # completed/failed: its outcome; queued: a retry, or the sweeper after a lost worker;
    # waiting: a person (or the run's budget) decides
    N.RUNNING: frozenset({N.COMPLETED, N.FAILED, N.QUEUED, N.WAITING, N.CANCELLED}),
    N.WAITING: frozenset({N.COMPLETED, N.FAILED, N.QUEUED, N.CANCELLED}),
    N.COMPLETED: frozenset({N.WAITING}),  # an approved action gate reopened by a patch that changed the action
    N.FAILED: frozenset(),
    N.SKIPPED: frozenset(),
    N.CANCELLED: frozenset(),
}

RUN_MOVES: dict[str, frozenset[str]] = {
    R.QUEUED: frozenset({R.RUNNING, R.WAITING_FOR_APPROVAL, R.COMPLETED, R.FAILED, R.CANCELLED}),
    R.RUNNING: frozenset({R.WAITING_FOR_APPROVAL, R.COMPLETED, R.FAILED, R.CANCELLED}),
    R.WAITING_FOR_APPROVAL: frozenset({R.RUNNING, R.COMPLETED, R.FAILED, R.CANCELLED}),
    R.COMPLETED: frozenset(),
    R.FAILED: frozenset(),
    R.CANCELLED: frozenset(),
}

# Statuses a node run is created in (never moved into): by the planner, a replay, a patch.
NODE_RUN_BORN = frozenset({N.QUEUED, N.COMPLETED, N.SKIPPED, N.CANCELLED, N.FAILED})

EventItem = tuple[str, str, dict[str, Any]]


class IllegalMove(ValueError):
    pass


def node_run_sources(to: str) -> list[str]:
    """The statuses a node run may move to ``to`` from."""
    return sorted(s for s, targets in NODE_RUN_MOVES.items() if to in targets)


def run_sources(to: str) -> list[str]:
    return sorted(s for s, targets in RUN_MOVES.items() if to in targets)


def sql_from(to: str, *, run: bool = False) -> str:
    """``'a', 'b'``: the allowed sources of ``to`` as an SQL list, for a compare-and-set statement."""
    sources = run_sources(to) if run else node_run_sources(to)
    return ", ".join(f"'{s}'" for s in sources)


def check_node_run_move(source: str, to: str) -> None:
    """Raise ``IllegalMove`` unless the table allows a node run ``source → to``."""
    _check(NODE_RUN_MOVES, [source], to)


def check_run_move(source: str, to: str) -> None:
    _check(RUN_MOVES, [source], to)


def _check(table: dict[str, frozenset[str]], sources: Iterable[str], to: str) -> list[str]:
    sources = list(sources)
    illegal = [s for s in sources if to not in table[s]]
    if illegal:
        raise IllegalMove(f"no move {illegal} -> {to!r}")
    return sources


def move_node_runs(where: Q, to: str, *, sources: Iterable[str] | None = None, run_id: Any = None,
                   owner_id: int | None = None, event: EventItem | list[EventItem] | None = None,
                   **fields: Any) -> int:
    """Move the node runs ``where`` selects from ``sources`` (default: every status the table
    allows into ``to``) to ``to``, setting ``fields``; append ``event`` if any moved. Returns
    how many moved. Call inside the caller's transaction when the event must commit with it. A
    node run that finishes waits for nothing: its ``wait_reason`` and ``held_for`` are cleared."""
    allowed = _check(NODE_RUN_MOVES, node_run_sources(to) if sources is None else sources, to)
    if to in NodeRun.FINISHED:
        fields = {"wait_reason": "", "held_for": None, **fields}
    moved = NodeRun.objects.filter(where, status__in=allowed).update(status=to, **fields)
    if moved and event is not None:
        events.append(run_id, owner_id, event if isinstance(event, list) else [event])  # type: ignore[arg-type]
    return moved


def move_node_run(pk: int, status: str, **kwargs: Any) -> bool:
    """``move_node_runs`` for one node run, to ``status`` (extra guards, such as this attempt, go
    in ``guard``)."""
    guard = kwargs.pop("guard", {})
    return move_node_runs(Q(pk=pk, **guard), status, **kwargs) == 1


def move_run(run_id: Any, status: str, *, sources: Iterable[str] | None = None, owner_id: int | None = None,
             event: EventItem | list[EventItem] | None = None, **fields: Any) -> bool:
    """Move a run to ``status`` from ``sources`` (default: all the table allows), with ``fields``;
    append ``event`` if it moved."""
    allowed = _check(RUN_MOVES, run_sources(status) if sources is None else sources, status)
    moved = Run.objects.filter(pk=run_id, status__in=allowed).update(status=status, **fields)
    if moved and event is not None:
        events.append(run_id, owner_id, event if isinstance(event, list) else [event])  # type: ignore[arg-type]
    return bool(moved)


def cancel_active(run_id: Any, now: Any) -> list[str]:
    """Every active node run of a run → ``cancelled`` (a run that failed or was cancelled);
    returns the node ids cancelled."""
    active = Q(run_id=run_id, status__in=NodeRun.ACTIVE)
    cancelled = list(NodeRun.objects.filter(active).values_list("node_id", flat=True))
    move_node_runs(active, N.CANCELLED, finished_at=now, lease_expires_at=None)
    return cancelled




def cancel_run(run_id: Any, status: str, owner_id: int, now: Any, *, by: str | None = None,
               reason: str = "") -> list[str]:
    """The one cancel of a run the caller locked, unfinished (``status``): the run and its active
    node runs ``cancelled`` (their queued messages revoked; a running executor's heartbeat finds
    its lease gone and stops it), what waits on it settled (``hooks.run_ending``), ``run_cancelled``
    appended with who (``by``: None, the system) and why. Returns the node ids cancelled."""
    move_run(run_id, R.CANCELLED, sources=[status], finished_at=now)
    active = list(NodeRun.objects.filter(run_id=run_id, status__in=NodeRun.ACTIVE).values_list("pk", flat=True))
    cancelled = cancel_active(run_id, now)
    revoke_after_commit(run_id, active)
    hooks.run_ending(run_id, R.CANCELLED, now)
    events.append(run_id, owner_id, [(Event.Type.RUN_CANCELLED, "", {
        "by": by, "reason": reason, "cancelled_nodes": cancelled})])
    hooks.run_finished(run_id, R.CANCELLED)
    return cancelled


def cancel_below_ended(run_id: Any, status: str, owner_id: int, *, parent: Any) -> str | None:
    """A sub-workflow's run whose tree has ended ends with it, here, before it takes its next step.
    A parent's end cancels its children later, on the maintenance queue (``subflows.cancel_children``):
    until then nothing of the child's own says so, and what it would do next (a node's claim, its
    gate's deadline applied) must not begin. The caller holds the run's lock and read its ``status``
    (unfinished) and ``parent`` (``Run.WITHIN``): the runs above are share-locked after it (a child
    before its parent, ``locks.ended_above``), so a parent's cancel is committed before this reads
    it, or waits for the caller. Cancels the run (``cancel_run``) and returns the status of the run
    above that ended; None when none has. A run with no parent is never asked: no statement."""
    ended = locks.ended_above(run_id, parent=parent)
    if ended is not None:
        cancel_run(run_id, status, owner_id, timezone.now(), reason=f"a run above it ended ({ended})")
    return ended
