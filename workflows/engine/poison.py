"""Poison ends. A decision that keeps raising fails its run instead of holding a coordinator slot
forever (the sweeper would otherwise re-send it without end); a row a sweep cannot handle is that
row's trouble alone: the sweep goes on to the others, and its run says so and, past a limit, fails.

A decision or a row whose handling kills its own process (the kernel's OOM killer, a crashing C
extension) raises nothing: Celery puts the message back (``task_reject_on_worker_lost``) and the
next process takes it at once, and dies too; a sweep reads the same row first again. Such deaths
are counted as raises are, by a mark in Redis set as the work begins and cleared as it ends
(``_began``, ``_ended``): a mark found already set counts the times it began and never ended.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import kombu.exceptions
import redis
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from aob_project import redis_client
from workflows.limits import bounded_error
from workflows.models import Event, NodeRun, Run

from . import events, hooks, locks, transitions
from .coordinator import cancel_approvals
from .dispatch import coordinate_later

logger = logging.getLogger(__name__)

DECISION_FAILED = "decision_failed"
BEGAN_KEY = "aob:began:{}"
BEGAN_KEPT_S = 3600  # a mark left by a death; one older is forgotten (a flush forgets it too)
_away_until = 0.0  # Redis did not answer a mark: none tried again before then (a sweep's rows wait on none)


class ProcessDied(Exception):
    """The process handling it died while it was under way, as many times in a row as said."""


def _began(key: str) -> int | None:
    """Mark ``key``'s work begun: how many times it began since it last ended, this one included (so
    ``n - 1`` times it began and never ended: its process died). One round trip; None, unmarked, when
    Redis does not answer (the work goes on as it would without the mark)."""
    global _away_until
    if time.monotonic() < _away_until:
        return None
    try:
        with redis_client.shared(0.5, once=True).pipeline(transaction=False) as pipe:
            pipe.set(key, 0, nx=True, ex=BEGAN_KEPT_S)  # kept from its first mark: deaths within the hour
            pipe.incr(key)
            return int(pipe.execute()[1])
    except redis.RedisError:
        _away_until = time.monotonic() + 10
        logger.warning("poison.unmarked", extra={"key": key}, exc_info=True)
        return None


def _ended(key: str) -> None:
    try:
        redis_client.shared(0.5, once=True).delete(key)
    except redis.RedisError:  # the mark stays an hour: one more death would be counted against it
        logger.warning("poison.mark_left", extra={"key": key}, exc_info=True)


def decision_began(node_run_id: int) -> bool:
    """A decision about ``node_run_id`` whose message came back (Celery's ``redelivered``: the
    process that had it died, or a worker stopping put it back untaken) is about to be made. Marked
    begun; a mark that reached ``AOB_MAX_DECISION_FAILURES`` (its decision began as many times after
    a redelivery without ending: each process died) fails the run as a decision that raised that
    often would (``decision_failed``), and answers True: not decided again. First deliveries are not
    marked (nothing in the hot path): a first death costs the second delivery, which is marked."""
    began = _began(BEGAN_KEY.format(f"decision:{node_run_id}"))
    if began is None or began < settings.AOB_MAX_DECISION_FAILURES:
        return False
    decision_failed(node_run_id, ProcessDied(f"the process deciding it died {began} times"), times=began)
    decision_ended(node_run_id)
    return True


def decision_ended(node_run_id: int) -> None:
    """The decision marked by ``decision_began`` ended (decided, or its raise counted)."""
    _ended(BEGAN_KEY.format(f"decision:{node_run_id}"))


def decision_failed(node_run_id: int, exc: BaseException, *, times: int = 1) -> str:
    """A decision about ``node_run_id`` raised (rolled back), or its process died ``times`` times
    (``decision_began``). Record it in the node run's attempt log; below ``AOB_MAX_DECISION_FAILURES``
    failures ask again after a backoff (the sweeper would too), at the limit fail the run with
    ``DecisionFailed`` so a poison message ends instead of holding a coordinator slot forever.
    Returns ``retrying``, ``failed`` or ``gone``."""
    if not connection.in_atomic_block:  # a broken connection is replaced; inside a caller's block it is theirs
        connection.close_if_unusable_or_obsolete()
    error = bounded_error({"error_type": type(exc).__name__, "message": str(exc) or type(exc).__name__})
    now = timezone.now()
    entry = {"status": DECISION_FAILED, "error": error, "at": now.isoformat(), **({"times": times} if times > 1 else {})}
    with transaction.atomic():
        locks.lock_run_of(node_run_id)  # the run row first (workflows/engine/locks.py)
        with connection.cursor() as cursor:
            cursor.execute(
                """
                UPDATE workflows_noderun SET attempt_log = attempt_log || %s::jsonb
                 WHERE id = %s AND NOT consumed
             RETURNING run_id, node_id,
                       jsonb_array_length(jsonb_path_query_array(attempt_log, '$[*] ? (@.status == "decision_failed")'))
                """, [json.dumps([entry]), node_run_id])
            row = cursor.fetchone()
        if row is None:
            return "gone"  # consumed meanwhile, or no such node run
        run_id, node_id, failures = row
        failures += times - 1
        limit = settings.AOB_MAX_DECISION_FAILURES
        logger.error("decision.failed", extra={"run_id": str(run_id), "node_id": node_id, "failures": failures,
                                               "error_type": error["error_type"]}, exc_info=exc)
        if failures < limit:
            transaction.on_commit(lambda: coordinate_later(node_run_id, countdown_s=min(2.0 ** failures / 4, 30.0)))
            return "retrying"
        run = Run.objects.select_for_update().filter(pk=run_id).first()
        NodeRun.objects.filter(pk=node_run_id).update(consumed=True, taken=[])
        if run is None or run.status in Run.FINISHED:
            return "gone"
        _fail(run, node_id, now, {
            "error_type": "DecisionFailed", "node_id": node_id, "failures": failures,
            "message": f"deciding what follows {node_id!r} failed {failures} times: {error['error_type']}: {error['message']}"})
    return "failed"


def _fail(run: Run, node_id: str, now: Any, error: dict[str, Any], *, cancel: bool = True) -> None:
    """Fail a live run (locked by the caller) with ``error``: its active node runs cancelled, its
    approvals out of the inbox (``cancel``), a ``workflow_failed`` event, and the run-finished hooks
    after commit, as every end of a run (a parent waiting on it woken, the end counted)."""
    run.error = error
    transitions.move_run(run.pk, Run.Status.FAILED, sources=[run.status], error=error, finished_at=now)
    if cancel:
        transitions.cancel_active(run.pk, now)
        cancel_approvals(run.pk, now)
    events.append(run.pk, run.owner_id, [(Event.Type.WORKFLOW_FAILED, node_id, {"error": error})])
    hooks.run_finished(run.pk, Run.Status.FAILED)


# Not a row's trouble: the database, the broker or Redis away (a connection's error: SQLSTATE class
# 08, 53 resources, 57P0x a shutdown, or none at all), or a statement every row would fail (a column
# or table a rolling deploy has not migrated yet: class 42, or 0A). A sweep that meets one ends
# there, as before, and the next one retries every row (counted against rows, it would fail runs one
# after another). A statement timeout or a lock not available is one row's, as a trigger's refusal is.
AWAY_STATES = ("08", "53", "57P01", "57P02", "57P03")
SCHEMA_STATES = ("42", "0A")
AWAY = (InterfaceError, redis.ConnectionError, redis.TimeoutError, kombu.exceptions.OperationalError, OSError)


def unavailable(exc: BaseException) -> bool:
    if isinstance(exc, AWAY):
        return True
    if not isinstance(exc, DatabaseError):
        return False
    state = getattr(exc.__cause__, "sqlstate", None)
    if not isinstance(state, str):
        return isinstance(exc, OperationalError)  # the driver's own: a connection closed or lost
    return state.startswith(AWAY_STATES) or state[:2] in SCHEMA_STATES


@contextmanager
def sweep_row(sweep: str, *, run_id: Any = None, node_id: str = "", fail_run: bool = True,
              **context: Any) -> Iterator[bool]:
    """The handling of one row of a periodic sweep (the sweeper's passes, ``subflows.sweep``,
    approvals' deadlines and reminders, ...). A row whose handling raises (a run whose stored
    definition cannot be read, a row a trigger or constraint refuses, a value a lowered bound
    refuses) is logged with its run and error and left, and the sweep goes on to the others:
    before, it stopped every pass at that row, for every owner, and the health answer blamed beat.
    Its run says so (``sweep_row_failed``; ``fail_run=False`` for a sweep whose row the run does not
    wait on, a reminder: said, never failed). What the services' own transactions did for the row
    is rolled back by them; a trouble of the database or the broker (``unavailable``) ends the
    pass as before.

    A row whose handling killed the sweep's process (no raise: the pass ended there, and the next
    one reads it first again) is counted too: marked begun in Redis as it is taken, cleared as it
    ends (``_began``: one round trip each). Once it began ``AOB_MAX_SWEEP_FAILURES`` times without
    ending, it is left (False, the caller goes on to the next row; True, handle it) and said on its
    run as a failure (``ProcessDied``), until the mark lapses an hour after the first death."""
    key = BEGAN_KEY.format(":".join([f"row:{sweep}", str(run_id or ""), node_id,
                                     *(f"{name}={value}" for name, value in sorted(context.items()))]))
    began = _began(key)
    if began is not None and began > settings.AOB_MAX_SWEEP_FAILURES:
        sweep_row_failed(sweep, ProcessDied(f"the process handling it died {began - 1} times"), run_id=run_id,
                         node_id=node_id, fail_run=fail_run, **context)
        yield False
        return
    try:
        yield True
    except Exception as exc:  # the row's trouble (logged, said on its run, counted there), unless unavailable
        if unavailable(exc):
            raise
        sweep_row_failed(sweep, exc, run_id=run_id, node_id=node_id, fail_run=fail_run, **context)
    finally:
        if began is not None:
            _ended(key)


def sweep_row_failed(sweep: str, exc: BaseException, *, run_id: Any = None, node_id: str = "",
                     fail_run: bool = True, **context: Any) -> str:
    """A sweep's handling of a row of ``run_id`` raised. Logged (``sweeper.row_failed``), and said on
    the run in a ``sweep_failed`` event (which sweep, the error, how many times for this node); once
    it has failed ``AOB_MAX_SWEEP_FAILURES`` times over ``AOB_SWEEP_FAILED_AFTER_S`` the run fails
    with ``SweepFailed``, so a poison row ends instead of leaving its run live without a reason,
    swept without end. A row of no run is only logged. Returns ``logged``, ``said``, ``recorded``,
    ``failed`` or ``gone``."""
    if not connection.in_atomic_block:  # a broken connection is replaced; inside a caller's block it is theirs
        connection.close_if_unusable_or_obsolete()
    error = bounded_error({"error_type": type(exc).__name__, "message": str(exc) or type(exc).__name__})
    where = {"sweep": sweep, "run_id": str(run_id) if run_id else None, "node_id": node_id, **context}
    logger.error("sweeper.row_failed", extra={**where, "error_type": error["error_type"]}, exc_info=exc)
    if run_id is None:
        return "logged"
    try:
        return _record(sweep, run_id, node_id, error, context, fail_run=fail_run)
    except Exception as exc:
        if unavailable(exc):
            raise
        logger.exception("sweeper.row_failure_unrecorded", extra=where)
        return "logged"


def _record(sweep: str, run_id: Any, node_id: str, error: dict[str, Any], context: dict[str, Any], *,
            fail_run: bool) -> str:
    """Say the failure on the run, at most one event each ``AOB_SWEEP_FAILED_AFTER_S`` /
    (``AOB_MAX_SWEEP_FAILURES`` - 1) seconds for one node and sweep (a sweep every few seconds would
    write one each time), and fail the run at the last, so at least ``AOB_SWEEP_FAILED_AFTER_S``
    after the first: a row failing that long is poison, a fault that passed (a lock, a moment's bug)
    is not. Failures older than four times that span are forgotten (sweeps slower than the
    events' spacing still reach the count)."""
    now = timezone.now()
    span = settings.AOB_SWEEP_FAILED_AFTER_S
    limit = settings.AOB_MAX_SWEEP_FAILURES
    with transaction.atomic():
        locks.lock_run(run_id)  # the run row first (workflows/engine/locks.py)
        run = Run.objects.filter(pk=run_id).only("status", "owner_id").first()
        if run is None or run.status in Run.FINISHED:
            return "gone"
        said = list(Event.objects.filter(run_id=run_id, type=Event.Type.SWEEP_FAILED, node_id=node_id,
                                         data__sweep=sweep, created_at__gte=now - timedelta(seconds=4 * span))
                    .order_by("-seq").values_list("created_at", flat=True)[:limit])
        if said and (now - said[0]).total_seconds() < span / max(1, limit - 1):
            return "said"  # said a moment ago
        failures = len(said) + 1
        events.append(run_id, run.owner_id, [(Event.Type.SWEEP_FAILED, node_id, {
            "sweep": sweep, "failures": failures, "error": error, **context})])
        if not fail_run or failures < limit:
            return "recorded"
        message = f"the sweep ({sweep}) of {node_id or 'this run'} failed {failures} times: {error['error_type']}: {error['message']}"
        failed = {"error_type": "SweepFailed", "node_id": node_id, "sweep": sweep, "failures": failures,
                  "message": message}
        try:
            with transaction.atomic():  # a savepoint: its node runs may refuse the cancel as they refused the sweep
                _fail(run, node_id, now, failed)
        except Exception as exc:
            if unavailable(exc):
                raise
            logger.exception("sweeper.run_cancel_failed", extra={"run_id": str(run_id), "node_id": node_id})
            _fail(run, node_id, now, failed, cancel=False)
    logger.error("sweeper.run_failed", extra={"run_id": str(run_id), "node_id": node_id, "sweep": sweep,
                                              "failures": failures})
    return "failed"
