"""Fault injection for the durability tests, installed by the test stack: into every worker
(``celery worker --include tests.support.faults``, see ``stack.start_worker``, when
``AOB_TEST_HOOKS=1``) and into the test process for the engine tests (``tests/engine/conftest.py``).
Production modules know nothing of it: it wraps engine functions. Switches live in Redis,
so a test flips them for every process of its stack at once:

- ``aob:test:drop_publish:<node_id>``: the first after-commit publish of that node is dropped
  (a crash between commit and publish); the sweeper must find it;
- ``aob:test:sweeper_paused``: the sweeper does nothing;
- ``aob:test:slots``: every owner's slots of a type, as ``AOB_OWNER_MAX_RUNNING`` would set them
  (``admission.slots`` answers it; ``0``, no limit: the negative control of the fair shares), so
  tests/engine/test_fair_shares.py needs no worker of its own;
- ``aob:test:share``: each owner's share of the coordinator, as ``AOB_DECISION_OWNER_MS_PER_S`` and
  ``AOB_DECISION_OWNER_BURST_MS`` would set them, written ``"<ms a second>,<burst ms>"``
  (``shares.share`` answers it; ``"0,0"``, no share: the negative control of the coordinator's
  fair shares, tests/engine/test_coordinator_shares.py);
- ``aob:test:release_sweep_off``: the sweeper releases no node run held for a slot
  (``admission.release_unreleased``): only finishes release them, which the fair-share tests prove,
  and the negative control of the sweeper's release (tests/engine/test_fair_shares.py);
- ``aob:test:undecided_parks_off``: the sweeper finds no park left undecided
  (``sweeper.undecided_parks``), its other passes unchanged: negative control of the lost park
  callback (tests/approvals/test_park_callback_lost.py);
- ``aob:test:budget_wake_off``: a release frees room and wakes no node paused on a budget (a
  process that died between the release's commit and its wake); ``aob:test:budget_sweep_off``:
  ``agents.sweep`` finds none either, the negative control of that backstop
  (tests/subflows/test_subflow_budget.py);
- ``aob:test:drop_outputs``: while set, every ask for a completed run's ``metadata.output`` is
  dropped (the completing decision's after its commit, the sweeper's: a crash between commit and
  send); the sweeper (``sweeper.ask_for_outputs``) must ask again; ``aob:test:output_sweep_off``:
  that pass finds none, its negative control; ``aob:test:output_crash``: the worker process
  computing an output dies (``os._exit``) as it starts, as one killed would
  (tests/engine/test_output_stored.py);
- ``aob:test:output_attempts_unbounded``: negative control of ``AOB_MAX_ATTEMPTS_ON_LOST`` for an
  output: ``services.runs.run_output_store`` runs as if that limit were unreachable, so an output
  whose worker dies every time is asked for and computed again forever
  (tests/engine/test_output_stored.py);
- ``aob:test:claim_check_off``: negative control of the executor's claim: ``execution.claim``
  takes its node run whatever its status and its run's (the ``queued → running`` compare-and-set
  and the live-run check dropped from ``execution.CLAIM``), so a duplicate or late executor message
  runs the node again (tests/engine/test_durability.py);
- ``aob:test:lease_host_clock``: negative control of leases judged by the database's clock: the
  sweeper's ``ClockTimestamp()`` (its query for lapsed leases and the guard of its update) is
  the host's ``timezone.now()`` instead (tests/engine/test_lease.py);
- ``aob:test:sweep_rows_unguarded``: negative control of the sweeps' rows handled one by one:
  ``poison.sweep_row`` lets every error through, so the first row whose handling raises ends the
  pass, as before (tests/engine/test_sweep_poison.py);
- ``aob:test:poison_decision:<node_id>``: every decision about that node raises, as a bug in the
  engine would;
- ``aob:test:heartbeat_paused:<node_run_id>``: the heartbeat skips renewing that lease, as one cut
  off from the database would;
- ``aob:test:unclaimed_after_s``: ``AOB_UNCLAIMED_AFTER_S`` for the sweeper (``sweeper.unclaimed_before``),
  so a test need not wait five minutes; ``aob:test:unclaimed_off``: no node run is ever taken for
  unclaimed, the negative control of sending it again under a new id (tests/engine/test_unclaimed.py);
- ``aob:test:lease_stop_off``: negative control: a heartbeat that finds its lease gone does not stop
  its executor;
- ``aob:test:subflows_sweep_off``: ``subflows.sweep`` does nothing, so a test that builds a child
  left running under an ended parent (tests/retention/test_prune_races.py) is not tidied by the
  live stack's sweep meanwhile;
- ``aob:test:inputs_unkept``: negative control of the inputs a process keeps: ``run_inputs.kept``
  finds none, so large inputs are read at every claim and decision (tests/engine/test_run_inputs.py);
- ``aob:test:firing_key_off``: negative control: a schedule's firing is keyed by when it was
  delivered, not by the cron time it was due (``schedules.due_time``), so a firing beat sends again
  is a new one (tests/faults/test_beat_restarted.py);
- ``aob:test:lapsed_uncharged``: negative control of the charge of a call cut off by a killed
  process: ``budget._settle`` drops a lapsed reservation uncharged, as before
  (tests/faults/test_agent_killed_mid_call.py); ``aob:test:llm_key_off``: ``llm.chat`` sends no
  ``Idempotency-Key``, the negative control of the model call's key (same module);
  ``aob:test:lapsed_held``: a lapsed reservation counts as held, not spent, in a run's ceiling, as
  before (``budget._spent``): the node it paused waited for ever (same module);
  ``aob:test:lapsed_end_off``: a run that ends charges nothing its agents' calls cut off mid-call
  left reserved, and the budget sweep neither (``budget.settle_lapsed``: same module);
- ``aob:test:resend_after_s``: ``schedules.RESEND_AFTER_S`` for the backstop of lost firings, so a
  test need not wait 15 minutes; ``aob:test:resend_off``: the backstop sends nothing, its negative
  control; each pass of it writes ``aob:test:resend_ran`` (tests/faults/test_firing_lost.py);
- ``aob:test:lost_by_attempts``: negative control of ``sweeper.times_lost``: a node run's attempts
  before this one count as lost, whatever ended them, as before (tests/faults/test_lost_counted.py);
- ``aob:test:reconsume_locked_off``: negative control of ``sweeper._runs_locked``: the sweeper asks
  again for the decision of a run whose row a decision holds, as before (each ask then held a
  coordinator process on the lock: tests/engine/test_fair_shares.py);
- ``aob:test:message_id_off``: an approval email gets a new ``Message-ID`` at each send, as Django
  makes one, the negative control of ``notifications.message_id``
  (tests/faults/test_notifier_killed.py);
- ``aob:test:decision_kill:<node_id>``: every coordinator decision about that node kills its own
  process (``SIGKILL``) as it starts, as the kernel's OOM killer or a crashing C extension would;
  ``aob:test:sweep_kill:<node_id>``: the sweeper's republish of that node's queued node run
  (``sweeper._dispatch``) kills its process likewise; deaths counted in ``aob:test:kills:<node_id>``;
  ``aob:test:deaths_uncounted``: negative control of the marks that count those deaths
  (``poison._began`` marks nothing), so a decision or a row that kills its process is taken again
  without end, as before (tests/faults/test_deaths_counted.py);
- ``aob:test:resend_kill``: the schedules' backstop (``schedules._resend``) dies (``SIGKILL`` of its
  process) once, after its claim of a due time and before its send (the switch deleted as it
  dies; counted in ``aob:test:kills:resend``); ``aob:test:resend_claim_kept``: negative control of
  the claim's short life, kept a day from the claim (``schedules.RESEND_CLAIM_S``) as before, so the
  killed send is never made (tests/faults/test_resend_killed.py);
- ``aob:test:sent_again_kill:<node_id>``: the executor whose claim of that node gave it back and
  published it again (``execution.send_again``) dies there once, before its own message is acked
  (the switch deleted as it dies; counted in ``aob:test:kills:<node_id>``);
  ``aob:test:sent_again_per_patch``: negative control of ``execution.disagrees``: a mismatch after
  any send of the patch runs the step under its message's limit, as before, so a put-back copy of
  the message already sent again runs under its stale limit (tests/faults/test_sent_again_killed.py).

Installed in a worker, it also turns on the coordinator's DEBUG line ``coordinator.decided``
(``node_run_id``, ``step``: plain or full), so a test can tell which step decided a node run
(tests/engine/test_plain_step.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import time
from collections.abc import Callable
from datetime import timedelta
from functools import cache
from types import ModuleType
from typing import Any

import redis
from django.conf import settings

from tests.support.fault_points import without

logger = logging.getLogger(__name__)


@cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


# What makes the executor's claim take only a node run that is still its to take: the node run is
# still ``queued`` (in the lock's subquery and in the compare-and-set) and its run is not finished.
CLAIM_CHECKS = (re.compile(r"\s+AND status = 'queued'(?=\))"),
                re.compile(r"\s+AND status IN \('queued', 'running', 'waiting_for_approval'\)"),
                re.compile(r"\s+AND nr\.status = 'queued'"))


def unchecked_claim(sql: str) -> str:
    return without(sql, CLAIM_CHECKS)


def patches() -> list[tuple[ModuleType, str, Callable[..., Any]]]:
    """``(module, name, replacement)`` for each engine function a fault wraps."""
    from email.utils import make_msgid

    from django.db.models import DateTimeField, Value
    from django.test import override_settings
    from django.utils import timezone

    from agents import budget, llm
    from approvals import notifications
    from subflows import services as subflows
    from triggers.services import schedules
    from workflows.engine import (
        admission,
        coordinator,
        dispatch,
        execution,
        heartbeat,
        poison,
        run_inputs,
        shares,
        sweeper,
    )
    from workflows.models import NodeRun
    from workflows.services import runs

    publish_now, sweep, coordinate = dispatch.publish_now, sweeper.sweep, coordinator.coordinate
    undecided_parks, compute_output_now, ask_for_outputs = (sweeper.undecided_parks, dispatch.compute_output_now,
                                                            sweeper.ask_for_outputs)

    output_compute = runs.run_output_compute

    def crashing_output_compute(run: Any) -> Any:
        if _redis().exists("aob:test:output_crash"):
            logger.warning("results.output_crash_by_test_hook", extra={"run_id": str(run.pk)})
            os._exit(1)  # the pool process dies here, mid-task, as a killed one would
        return output_compute(run)

    output_store = runs.run_output_store

    def unbounded_output_store(*, run_id: str) -> bool:
        if not _redis().exists("aob:test:output_attempts_unbounded"):
            return output_store(run_id=run_id)
        with override_settings(AOB_MAX_ATTEMPTS_ON_LOST=10**9):  # read by run_output_store at call time
            return output_store(run_id=run_id)

    claim, checked_claim = execution.claim, execution.CLAIM
    open_claim = unchecked_claim(checked_claim)

    def switchable_claim(node_run_id: int) -> Any:
        if not _redis().exists("aob:test:claim_check_off"):
            return claim(node_run_id)
        execution.CLAIM = open_claim  # read by claim at call time; one task per process
        try:
            return claim(node_run_id)
        finally:
            execution.CLAIM = checked_claim

    clock_timestamp = sweeper.ClockTimestamp

    def switchable_clock_timestamp() -> Any:
        if _redis().exists("aob:test:lease_host_clock"):
            return Value(timezone.now(), output_field=DateTimeField())  # the sweeping host's clock
        return clock_timestamp()

    def dropping_output(run_id: str) -> None:
        if _redis().exists("aob:test:drop_outputs"):
            logger.warning("dispatch.output_dropped_by_test_hook", extra={"run_id": run_id})
            return
        compute_output_now(run_id)

    def switchable_ask_for_outputs(now: Any, backlog: Any = frozenset()) -> int:
        return 0 if _redis().exists("aob:test:output_sweep_off") else ask_for_outputs(now, backlog)

    def dropping_publish(item: Any) -> None:
        if _redis().delete(f"aob:test:drop_publish:{item.node_id}"):
            logger.warning("dispatch.dropped_by_test_hook", extra={"node_id": item.node_id})
            return
        publish_now(item)

    def pausable_sweep() -> dict[str, int]:
        if _redis().exists("aob:test:sweeper_paused"):
            return {"skipped": 1}
        return sweep()

    unclaimed_before = sweeper.unclaimed_before

    def switchable_unclaimed_before(now: Any) -> Any:
        if _redis().exists("aob:test:unclaimed_off"):
            return None
        told = _redis().get("aob:test:unclaimed_after_s")
        return now - timedelta(seconds=float(told)) if told is not None else unclaimed_before(now)

    times_lost = sweeper.times_lost

    def switchable_times_lost(nr: Any) -> int:
        return nr.attempts - 1 if _redis().exists("aob:test:lost_by_attempts") else times_lost(nr)

    def switchable_undecided_parks(before: Any) -> list[int]:
        if _redis().exists("aob:test:undecided_parks_off"):
            return []
        return undecided_parks(before)

    sweep_row = poison.sweep_row

    @contextlib.contextmanager
    def switchable_sweep_row(sweep: str, **context: Any) -> Any:
        if _redis().exists("aob:test:sweep_rows_unguarded"):
            yield True
            return
        with sweep_row(sweep, **context) as taken:
            yield taken

    wake, sweep_paused = budget.wake, budget.sweep_paused

    def switchable_wake(line: list[str], owner_id: int) -> None:
        if not _redis().exists("aob:test:budget_wake_off"):
            wake(line, owner_id)

    def switchable_sweep_paused(**kwargs: Any) -> int:
        return 0 if _redis().exists("aob:test:budget_sweep_off") else sweep_paused(**kwargs)

    def poisonable_coordinate(node_run_id: int, completion: Any = None, **kwargs: Any) -> None:
        node_id = completion.node_id if completion is not None else (
            NodeRun.objects.filter(pk=node_run_id).values_list("node_id", flat=True).first())
        poisoned, killing = _redis().mget(f"aob:test:poison_decision:{node_id}", f"aob:test:decision_kill:{node_id}")
        if node_id and poisoned:
            raise RuntimeError(f"poisoned decision for {node_id} (test hook)")
        if node_id and killing:
            die(node_id)
        coordinate(node_run_id, completion, **kwargs)

    began = poison._began

    def countable_began(key: str) -> int | None:
        return None if _redis().exists("aob:test:deaths_uncounted") else began(key)

    dispatch_row = sweeper._dispatch

    def killing_dispatch(nr: Any) -> Any:
        if _redis().exists(f"aob:test:sweep_kill:{nr.node_id}"):
            die(nr.node_id)
        return dispatch_row(nr)

    send_again, disagrees = execution.send_again, execution.disagrees

    def killing_send_again(ctx: Any, timelimit: Any) -> Any:
        sent = send_again(ctx, timelimit)
        if sent == execution.SENT_AGAIN and _redis().delete(f"aob:test:sent_again_kill:{ctx.node_id}"):
            die(ctx.node_id)
        return sent

    def switchable_disagrees(log: list[Any], patch_seq: int, sent_ms: int) -> bool:
        if not _redis().exists("aob:test:sent_again_per_patch"):
            return disagrees(log, patch_seq, sent_ms)
        return any(isinstance(past, dict) and past.get("status") == execution.SENT_AGAIN
                   and past.get("patch_seq") == patch_seq for past in log)

    resend = schedules._resend

    def switchable_resend(fire_schedule: Any, *args: Any) -> int:
        if _redis().exists("aob:test:resend_claim_kept"):
            schedules.RESEND_CLAIM_S = schedules.RESEND_LOOKBACK_S  # read by _resend at call time
        try:
            return resend(_KillingSend(fire_schedule), *args)
        finally:
            schedules.RESEND_CLAIM_S = resend_claim_s

    to_renew, interrupt = heartbeat._Beat.to_renew, heartbeat._Beat.interrupt

    def pausable_renewals(beat: Any, held: dict[int, int]) -> dict[int, int]:
        return to_renew(beat, {i: a for i, a in held.items() if not _redis().exists(f"aob:test:heartbeat_paused:{i}")})

    def switchable_interrupt(beat: Any) -> None:
        if not _redis().exists("aob:test:lease_stop_off"):
            interrupt(beat)

    due_time = schedules.due_time

    def switchable_due_time(schedule: Any, fired_at: Any) -> Any:
        return fired_at if _redis().exists("aob:test:firing_key_off") else due_time(schedule, fired_at)

    release_unreleased, slots = admission.release_unreleased, admission.slots
    share = shares.share

    def switchable_share() -> Any:
        told = _redis().get("aob:test:share")
        if told is None:
            return share()
        ms_per_s, burst_ms = (int(part) for part in told.split(b","))
        return shares.Share(ms_per_s, burst_ms) if ms_per_s > 0 else None

    def switchable_slots() -> int:
        told = _redis().get("aob:test:slots")
        return slots() if told is None else int(told)

    def switchable_release_unreleased(stale: Any, most: int = 500) -> int:
        return 0 if _redis().exists("aob:test:release_sweep_off") else release_unreleased(stale, most)

    kept = run_inputs.kept

    def switchable_kept(key: str) -> Any:
        return None if _redis().exists("aob:test:inputs_unkept") else kept(key)

    settle, chat, message_id = budget._settle, llm.chat, notifications.message_id

    def switchable_settle(run: Any, held: dict[str, Any], live: set[str]) -> dict[str, Any]:
        if not _redis().exists("aob:test:lapsed_uncharged"):
            return settle(run, held, live)
        return {**(run.usage or {}), "reservations": {k: v for k, v in held.items() if k in live}}

    settle_lapsed = budget.settle_lapsed

    def switchable_settle_lapsed(run_id: Any) -> int:
        return 0 if _redis().exists("aob:test:lapsed_end_off") else settle_lapsed(run_id)

    spent = budget._spent

    def switchable_spent(usage: dict[str, Any], reserved: dict[str, Any], live: set[str]) -> Any:
        return spent(usage, reserved, set(reserved) if _redis().exists("aob:test:lapsed_held") else live)

    def switchable_chat(**kwargs: Any) -> Any:
        if _redis().exists("aob:test:llm_key_off"):
            kwargs.pop("key", None)
        return chat(**kwargs)

    def switchable_message_id(delivery: Any) -> str:
        return make_msgid() if _redis().exists("aob:test:message_id_off") else message_id(delivery)

    resend_claim_s = schedules.RESEND_CLAIM_S
    resend_lost = schedules.schedules_resend_lost

    def switchable_resend_lost(*, now: Any = None) -> int:
        told = _redis().get("aob:test:resend_after_s")
        if told is not None:
            now = timezone.now() + timedelta(seconds=schedules.RESEND_AFTER_S - float(told))
        sent = 0 if _redis().exists("aob:test:resend_off") else resend_lost(now=now)
        _redis().set("aob:test:resend_ran", time.time())
        return sent

    runs_locked = sweeper._runs_locked

    def switchable_runs_locked(run_ids: set[Any]) -> set[Any]:
        return set() if _redis().exists("aob:test:reconsume_locked_off") else runs_locked(run_ids)

    subflows_sweep = subflows.subflows_sweep

    def switchable_subflows_sweep() -> dict[str, int]:
        return {"skipped": 1} if _redis().exists("aob:test:subflows_sweep_off") else subflows_sweep()

    wrapped = [(schedules, "due_time", switchable_due_time), (schedules, "schedules_resend_lost", switchable_resend_lost),
               (subflows, "subflows_sweep", switchable_subflows_sweep), (sweeper, "_runs_locked", switchable_runs_locked),
               (dispatch, "publish_now", dropping_publish), (sweeper, "sweep", pausable_sweep), (poison, "sweep_row", switchable_sweep_row),
               (sweeper, "undecided_parks", switchable_undecided_parks), (sweeper, "times_lost", switchable_times_lost),
               (sweeper, "unclaimed_before", switchable_unclaimed_before),
               (dispatch, "compute_output_now", dropping_output), (sweeper, "ask_for_outputs", switchable_ask_for_outputs),
               (runs, "run_output_compute", crashing_output_compute),
               (runs, "run_output_store", unbounded_output_store), (execution, "claim", switchable_claim),
               (sweeper, "ClockTimestamp", switchable_clock_timestamp),
               (budget, "wake", switchable_wake), (budget, "sweep_paused", switchable_sweep_paused),
               (coordinator, "coordinate", poisonable_coordinate), (heartbeat._Beat, "to_renew", pausable_renewals),
               (heartbeat._Beat, "interrupt", switchable_interrupt),
               (admission, "release_unreleased", switchable_release_unreleased), (admission, "slots", switchable_slots),
               (shares, "share", switchable_share),
               (run_inputs, "kept", switchable_kept), (budget, "_settle", switchable_settle), (budget, "_spent", switchable_spent),
               (budget, "settle_lapsed", switchable_settle_lapsed),
               (llm, "chat", switchable_chat), (notifications, "message_id", switchable_message_id),
               (poison, "_began", countable_began), (sweeper, "_dispatch", killing_dispatch),
               (schedules, "_resend", switchable_resend), (execution, "send_again", killing_send_again),
               (execution, "disagrees", switchable_disagrees)]
    for module, name, replacement in wrapped:
        replacement.__wrapped__ = getattr(module, name)  # type: ignore[attr-defined]  # for ``unwrapped``
    return wrapped


def die(what: str) -> None:
    """The process dies here (``SIGKILL``, nothing runs after), its death counted for ``what``."""
    _redis().incr(f"aob:test:kills:{what}")
    os.kill(os.getpid(), signal.SIGKILL)


class _KillingSend:
    """The backstop's ``fire_schedule`` whose send dies first once ``aob:test:resend_kill`` is set."""

    def __init__(self, task: Any) -> None:
        self.task = task

    def apply_async(self, *args: Any, **kwargs: Any) -> Any:
        if _redis().delete("aob:test:resend_kill"):
            die("resend")
        return self.task.apply_async(*args, **kwargs)


def install() -> None:
    for module, name, replacement in patches():
        setattr(module, name, replacement)
    logging.getLogger("workflows.engine.coordinator").setLevel(logging.DEBUG)  # ``coordinator.decided``


def patch(monkeypatch: Any) -> None:
    """``install()`` for one test of the test process (``monkeypatch`` undoes it)."""
    for module, name, replacement in patches():
        monkeypatch.setattr(module, name, replacement)


def unwrapped(module: Any, name: str) -> Any:
    """The engine's own function, without the fault wrapped around it here."""
    current = getattr(module, name)
    return getattr(current, "__wrapped__", current)


if os.environ.get("AOB_TEST_HOOKS") == "1":
    install()
