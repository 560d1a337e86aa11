"""The sweeper: what makes "any process may die at any line" true.

Run from beat every few seconds, it finds (1) node runs left ``queued`` past a deadline — a crash
between commit and publish, a broker that lost its queues — and re-publishes them; (2) node runs
``running`` whose lease lapsed — a worker killed mid-node — and puts them back in the queue (or
fails them after too many lost attempts); (3) finished node runs the coordinator never consumed,
and parked node runs whose park it never decided (``undecided_since``), and asks it again; (4) of
the node runs in (1), those whose queue no running worker consumes, which no republish can move, and
of those in (3), those whose coordinator queue no running worker consumes: their runs say so
(``wait_reason`` ``worker``, event ``node_unserved``); (5) node runs held for a slot of their owner
that no finish released (``admission.release_unreleased``). Every path ends in a compare-and-set,
so a sweep racing a live worker is a no-op. Each row is handled on its own (``poison.sweep_row``):
one whose handling raises is logged, said on its run and left, never stopping the pass for the
others; each read takes the oldest first, so rows past its limit wait their turn, not forever.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import redis
from django.conf import settings
from django.db import transaction
from django.db.models import Case, DateTimeField, Exists, Func, IntegerField, OuterRef, Q, Value, When
from django.utils import timezone
from kombu.exceptions import ChannelError

from aob_project import redis_client
from aob_project.celery import COORDINATOR_QUEUE, app
from workflows import registry
from workflows.models import Event, NodeRun, Run

from . import admission, dispatch, events, locks, owners, poison, shares, transitions
from .coordinator import load_ir
from .dispatch import Dispatch, coordinate_now, publish_now
from .execution import LOST, error_payload

logger = logging.getLogger(__name__)
LIVE_RUN = [status for status in Run.Status.values if status not in Run.FINISHED]  # a run not ended


def sweep() -> dict[str, int]:
    if not settings.AOB_SWEEPER_ENABLED:
        return {"skipped": 1}
    now = timezone.now()
    counts = {"republished": 0, "unserved": 0, "inactive": 0, "unclaimed": 0, "requeued": 0, "lost": 0, "reconsumed": 0, "redecided": 0, "outputs": 0, "released": 0}

    stale = now - timedelta(seconds=settings.AOB_REPUBLISH_AFTER_S)
    backlog = _backlogged_queues()
    # Under a backlog that never drains, a lost message must still be found: past this much
    # longer deadline a queued node run is re-published anyway (once per deadline).
    patience = now - timedelta(seconds=settings.AOB_REPUBLISH_BACKLOG_S)
    queued = (NodeRun.objects.filter(status=NodeRun.Status.QUEUED, dispatched_at__lt=stale, run__status__in=LIVE_RUN)
              .filter(Q(available_at__isnull=True) | Q(available_at__lte=now)).exclude(wait_reason=admission.HELD)
              .select_related("run").order_by(_waiting_turn(backlog, patience), "dispatched_at", "pk")[:500])
    consumers = _Consumers()
    for nr in queued:
        with poison.sweep_row("republish", run_id=nr.run_id, node_id=nr.node_id, node_run_id=nr.pk) as taken:
            if not taken:
                continue  # its handling killed the process too often (poison.sweep_row)
            queue = registry.queue_for(nr.node_type)
            if consumers.serve(queue) is False and not owners.owner_active(nr.run.owner_id):
                counts["inactive"] += _fail_for_inactive_owner(nr, now)  # as its claim would, had a worker come
                continue
            if nr.wait_reason != UNSERVED and consumers.serve(queue) is False and _say_unserved(nr, queue):
                counts["unserved"] += 1
            if queue in backlog and nr.dispatched_at is not None and nr.dispatched_at > patience:
                continue  # most likely still waiting its turn in that queue, not lost
            item = _dispatch(nr)  # before the claim: a definition that cannot be read leaves it as it was
            if unclaimed(nr, queue, backlog, consumers, now):
                if nr.wait_reason != UNCLAIMED and _say_unclaimed(nr, queue):
                    counts["unclaimed"] += 1
                item = replace(item, renamed=f"-{now:%Y%m%dT%H%M%S%f}")
            if NodeRun.objects.filter(pk=nr.pk, status=NodeRun.Status.QUEUED, dispatched_at=nr.dispatched_at).update(
                    dispatched_at=now):
                publish_now(item)
                counts["republished"] += 1

    counts["released"] = admission.release_unreleased(stale)

    expired = NodeRun.objects.filter(status=NodeRun.Status.RUNNING, lease_expires_at__lt=ClockTimestamp(),
                                     run__status__in=LIVE_RUN).select_related("run").order_by("lease_expires_at", "pk")[:500]
    for nr in expired:
        with poison.sweep_row("recover_lost", run_id=nr.run_id, node_id=nr.node_id, node_run_id=nr.pk) as taken:
            if not taken:
                continue  # its handling killed the process too often (poison.sweep_row)
            counts["lost" if _recover_lost(nr, now) == "failed" else "requeued"] += 1

    decided_by = patience if COORDINATOR_QUEUE in backlog else stale  # else: likely not reached yet
    counts["reconsumed"] = reconsume(decided_by, patience)
    if COORDINATOR_QUEUE in backlog and consumers.serve(COORDINATOR_QUEUE) is False:
        counts["unserved"] += _say_undecided(stale)
    for pk in undecided_parks(decided_by):
        with poison.sweep_row("redecide", node_run_id=pk) as taken:
            if not taken:
                continue  # its handling killed the process too often (poison.sweep_row)
            coordinate_now(pk)  # the same decision its executor's link would have asked for
            counts["redecided"] += 1
    counts["outputs"] = ask_for_outputs(now, backlog)
    if any(counts.values()):
        logger.info("sweeper.swept", extra=counts)
    try:  # Redis's clock, which the health answer reads too: the hosts' clocks may disagree
        client = redis_client.shared()
        client.set(SWEPT_KEY, client.time()[0], ex=SWEPT_KEPT_S)
    except redis.RedisError:  # the health answer says Redis is down, and the sweeper stale after it
        logger.warning("sweeper.mark_failed", exc_info=True)
    return counts


def reconsume(decided_by: datetime, patience: datetime, most: int = 500) -> int:
    """Ask again for the decisions of finished node runs nothing consumed by ``decided_by``. An owner
    past its share of the coordinator (``shares``) has its decisions taken last, so they may wait
    long without being lost: its are asked for again only past ``patience``, behind everyone else's
    as before, and never stand in the way of finding others' (they are left out of the first read)."""
    finished = NodeRun.objects.filter(
        consumed=False, status__in=[NodeRun.Status.COMPLETED, NodeRun.Status.FAILED, NodeRun.Status.SKIPPED])
    owners = set(finished.filter(finished_at__lt=decided_by).order_by().values_list("run__owner_id", flat=True)
                 .distinct()[:most])
    over = {owner for owner in owners if shares.over(owner)}
    asked = 0
    oldest = ("finished_at", "pk")
    rows = [(pk, run_id, False) for pk, run_id in
            finished.filter(finished_at__lt=decided_by).exclude(run__owner_id__in=over).order_by(*oldest)
            .values_list("pk", "run_id")[:most]]
    if over:
        rows += [(pk, run_id, True) for pk, run_id in
                 finished.filter(finished_at__lt=patience, run__owner_id__in=over).order_by(*oldest)
                 .values_list("pk", "run_id")[:most]]
    deciding = _runs_locked({run_id for _, run_id, _ in rows})
    for pk, run_id, over_share in rows:
        if run_id in deciding:
            continue
        with poison.sweep_row("reconsume", node_run_id=pk) as taken:
            if not taken:
                continue  # its handling killed the process too often (poison.sweep_row)
            coordinate_now(pk, over_share=over_share)
            asked += 1
    return asked


def _runs_locked(run_ids: set[Any]) -> set[Any]:
    """The runs of ``run_ids`` whose row someone holds now: a decision under way (or a patch, a
    cancel) routes what it finds when it ends, and a decision asked for again meanwhile only waits
    on the lock, a coordinator's process held: a 30-second decision asked again every few seconds
    held every process of the coordinator (a red team's find). Asked for again at a later sweep,
    once the row is free, if still unconsumed then."""
    if not run_ids:
        return set()
    with transaction.atomic():
        free = set(Run.objects.select_for_update(skip_locked=True, no_key=True).filter(pk__in=run_ids)
                   .order_by().values_list("pk", flat=True))
    return run_ids - free


# When a sweep last finished (epoch seconds by Redis's clock), for the health answer (``sweeper_health``).
SWEPT_KEY = "aob:sweeper:swept_at"
SWEPT_KEPT_S = 7 * 86_400


# The service queues no running worker consumed at the last two checks, as JSON (``check_service_queues``).
QUEUES_KEY = "aob:sweeper:service_queues"


def check_service_queues() -> list[str]:
    """Ask the running workers which queues they consume (one broadcast, a second's wait for the
    answers; beat sends this every ``AOB_QUEUES_CHECK_INTERVAL_S``, to the maintenance queue) and
    keep the service queues none consumed at this check and the one before (a worker whose answer
    came late once is not taken for none) for the health answer and the runs (``queues_unserved``):
    a deployment listing its workers' queues itself and leaving one out stopped, say, every
    schedule, and nothing said so. Returns them."""
    served = _queues_answered()
    if served is None:  # no answer (this runs on a worker): unknown, and the record ages out
        return []
    missing = [queue for queue in registry.SERVICE_QUEUES if queue not in served]
    try:
        client = redis_client.shared()
        before = client.get(QUEUES_KEY)
        missing_before = set(json.loads(before)["missing"]) if before else set()
        unserved = [queue for queue in missing if queue in missing_before]
        client.set(QUEUES_KEY, json.dumps({"missing": missing, "unserved": unserved}),
                   ex=int(3 * settings.AOB_QUEUES_CHECK_INTERVAL_S))
    except redis.RedisError:  # the health answer says Redis is down
        logger.warning("sweeper.queues_unrecorded", exc_info=True)
        return []
    if unserved:
        logger.warning("sweeper.queues_unserved", extra={"queues": unserved})
    return unserved


def queues_unserved() -> list[str] | None:
    """The service queues no running worker consumed at the last two checks; None when unknown
    (no check lately, or Redis unanswered)."""
    try:
        kept = redis_client.shared().get(QUEUES_KEY)
    except redis.RedisError:
        return None
    return None if kept is None else json.loads(kept)["unserved"]


def queues_health() -> str:
    """``ok``; ``unserved: <queue> (<what stops>), ...``; or ``unknown`` before any check."""
    unserved = queues_unserved()
    if unserved is None:
        return "unknown: not checked lately (beat sends the check to the maintenance queue)"
    if not unserved:
        return "ok"
    return "unserved: " + ", ".join(
        f"{queue} ({registry.UNSERVED_STOPS.get(queue, 'its work waits')}: start a worker with -Q {queue})"
        for queue in unserved)  # .get: a queue another release's check named


def sweeper_health() -> str:
    """``ok`` while sweeps finish (the last within ``AOB_SWEEP_STALE_S``); else what is wrong. With
    beat or the maintenance queue's worker down nothing re-sends a lost message or lapsed lease,
    and nothing else would say so."""
    if not settings.AOB_SWEEPER_ENABLED:
        return "disabled"
    try:
        client = redis_client.shared()
        swept_at, now = client.get(SWEPT_KEY), client.time()[0]
    except redis.RedisError as exc:
        return f"unknown: {type(exc).__name__}"
    why = "(is beat running, and a worker on the maintenance queue?)"
    if swept_at is None:
        return f"stale: no sweep has finished in the last {SWEPT_KEPT_S // 86_400} days {why}"
    age = now - float(swept_at)
    if age > settings.AOB_SWEEP_STALE_S:
        return f"stale: the last sweep finished {age:.0f} s ago {why}"
    return "ok"


# A queued node run's ``wait_reason`` once the sweeper found no running worker consuming its queue;
# the claim of a worker that does clears it.
UNSERVED = "worker"
# ... once it found one consuming it and none claiming the node run (``unclaimed``).
UNCLAIMED = "unclaimed"
# This process's two latest answers (when, and the queues named), newest last.
_answers: list[tuple[float, frozenset[str]]] = []


def served_queues() -> frozenset[str] | None:
    """The queues some running worker consumes (remote control: every worker answers from its main
    process, however busy its pool), by the two latest answers, taken at least
    ``AOB_REPUBLISH_AFTER_S`` apart (and not much more): a queue named in either is served. A worker whose answer came
    late once (it waits a second for answers) is not taken for none, and one that starts is seen at
    the next answer. None while that is unknown: no answer, no broker, or only one answer so far.
    Asked only while a sweep has a queued node run past the republish deadline not yet marked, or
    a coordinator backlog: one broadcast per ``AOB_REPUBLISH_AFTER_S`` at most."""
    if not _answers or time.monotonic() - _answers[-1][0] >= settings.AOB_REPUBLISH_AFTER_S:
        answered = _queues_answered()
        if answered is None:
            return None
        _answers.append((time.monotonic(), answered))
        del _answers[:-2]
    if len(_answers) < 2 or _answers[1][0] - _answers[0][0] > 3 * settings.AOB_REPUBLISH_AFTER_S:
        return None  # one answer, or an old one the newest cannot be paired with: ask again next time
    return _answers[0][1] | _answers[1][1]


def _queues_answered() -> frozenset[str] | None:
    """The queues the running workers say they consume (remote control: one broadcast, a second's
    wait for the answers); None without an answer (no broker, no worker answering)."""
    try:
        replies = app.control.inspect(timeout=1.0).active_queues()
    except Exception:  # without an answer, nothing is said
        logger.warning("sweeper.consumers_unknown", exc_info=True)
        return None
    if not replies:
        return None
    return frozenset(q["name"] for queues in replies.values() for q in queues or [])


class _Consumers:
    """Whether running workers consume a queue, asked of them (``served_queues``) at most once a
    sweep, and only when a sweep needs to know: None when no answer came."""

    def __init__(self) -> None:
        self._asked = False
        self._queues: frozenset[str] | None = None

    def serve(self, queue: str) -> bool | None:
        if not self._asked:
            self._asked, self._queues = True, served_queues()
        return None if self._queues is None else queue in self._queues


def _say_undecided(before: datetime) -> int:
    """Finished node runs (before ``before``) whose decision sits on a coordinator queue no running
    worker consumes: every node done, their run shows ``running`` and nothing else says why. Each
    run says so once per such node, in a ``node_unserved`` event (its run locked, so two sweeps say
    it once; those told are left out of the read). Only while that queue is unserved; at most 100
    a sweep."""
    said = 0
    finished = [NodeRun.Status.COMPLETED, NodeRun.Status.FAILED, NodeRun.Status.SKIPPED]
    told = Event.objects.filter(run_id=OuterRef("run_id"), type=Event.Type.NODE_UNSERVED, node_id=OuterRef("node_id"),
                                data__queue=COORDINATOR_QUEUE)  # the run's events, by its (run, seq) index
    for nr in (NodeRun.objects.filter(consumed=False, status__in=finished, finished_at__lt=before,
                                      run__status__in=LIVE_RUN).exclude(Exists(told))
               .select_related("run").only("pk", "run_id", "node_id", "iteration", "finished_at", "run__owner_id")[:100]):
        with poison.sweep_row("say_undecided", run_id=nr.run_id, node_id=nr.node_id, node_run_id=nr.pk) as taken:
            if not taken:
                continue  # its handling killed the process too often (poison.sweep_row)
            said += _say_one_undecided(nr)
    return said


def _say_one_undecided(nr: NodeRun) -> int:
    message = (f"{nr.node_id} finished at {nr.finished_at}; deciding what follows waits: no running "
               f"worker consumes the queue {COORDINATOR_QUEUE} (start one with -Q {COORDINATOR_QUEUE})")
    with transaction.atomic():
        locks.lock_run(nr.run_id)  # the run row first (workflows/engine/locks.py)
        if Event.objects.filter(run_id=nr.run_id, type=Event.Type.NODE_UNSERVED, node_id=nr.node_id,
                                data__queue=COORDINATOR_QUEUE).exists():
            return 0  # another sweep said it meanwhile
        events.append(nr.run_id, nr.run.owner_id, [(Event.Type.NODE_UNSERVED, nr.node_id, {
            "iteration": nr.iteration, "queue": COORDINATOR_QUEUE, "message": message})])
    logger.warning("node_run.undecided", extra={"run_id": str(nr.run_id), "node_id": nr.node_id})
    return 1


def _fail_for_inactive_owner(nr: NodeRun, now: datetime) -> int:
    """A node run queued on a queue no running worker consumes, of a run whose owner was
    deactivated: its claim would fail it (nothing starts as such an owner), but no worker comes
    to claim it, and nobody can end the run (only its owner cancels it), so it waited for ever,
    never pruned. It fails here as its claim would fail it, and its run with it."""
    failure = owners.OwnerInactive.of(nr.run.owner_id, f"node {nr.node_id!r} of run {nr.run_id} does not start")
    error = error_payload(failure)
    with transaction.atomic():
        locks.lock_run(nr.run_id)  # the run row first (workflows/engine/locks.py)
        moved = transitions.move_node_run(
            nr.pk, NodeRun.Status.FAILED, sources=[NodeRun.Status.QUEUED], guard={"dispatched_at": nr.dispatched_at},
            run_id=nr.run_id, owner_id=nr.run.owner_id, event=(Event.Type.NODE_FAILED, nr.node_id, {"error": error}),
            error=error, finished_at=now)
        if moved:
            transaction.on_commit(lambda: coordinate_now(nr.pk))
    return int(moved)


def _say_unserved(nr: NodeRun, queue: str) -> bool:
    """A node run queued past the republish deadline on a queue no running worker consumes (workers
    started with ``--node-types`` for other types, a type's plugin gone from them): republishing
    cannot move it, so its run says why it waits and what would move it, once (the claim of a
    worker that serves it clears the reason)."""
    message = (f"queued since {nr.queued_at.isoformat()}: no running worker consumes the queue {queue}; it runs "
               f"once a worker serving it starts (celery worker --node-types {nr.node_type}, or -Q {queue})")
    return _say_waiting(nr, queue, UNSERVED, Event.Type.NODE_UNSERVED, message, sources=("",), log="node_run.unserved")


def unclaimed_before(now: datetime) -> datetime | None:
    """A queued node run waiting since before this is taken for unclaimed (``unclaimed``)."""
    return now - timedelta(seconds=settings.AOB_UNCLAIMED_AFTER_S)


def unclaimed(nr: NodeRun, queue: str, backlog: set[str], consumers: _Consumers, now: datetime) -> bool:
    """Whether a queued node run past the republish deadline is one no worker claims, though one is
    there to: it has waited ``AOB_UNCLAIMED_AFTER_S`` since it could run, its queue's broker list is
    empty and a running worker consumes that queue. Its message was most likely dropped unread
    (revoked by its id, as Flower's Revoke does; a worker that discards it), or every process
    serving the queue is taken by a long node while holding it. Re-publishing under the same id
    would meet the same fate: ``sweep`` sends it under a new one (the claim still runs it once)."""
    before = unclaimed_before(now)
    since = max((t for t in (nr.queued_at, nr.available_at) if t is not None), default=None)
    return (before is not None and since is not None and since < before and queue not in backlog
            and consumers.serve(queue) is True)


def _say_unclaimed(nr: NodeRun, queue: str) -> bool:
    message = (f"queued since {nr.queued_at.isoformat() if nr.queued_at else 'its start'} on {queue}, which a running "
               f"worker consumes and whose list is empty, and no worker has claimed it: every process serving the "
               f"queue may be busy with a long node, or its message was dropped unread (revoked by its id, as "
               f"Flower's Revoke does). It is sent again under a new id; to stop a node, cancel its run")
    return _say_waiting(nr, queue, UNCLAIMED, Event.Type.NODE_UNCLAIMED, message, sources=("", UNSERVED),
                        log="node_run.unclaimed")


def _say_waiting(nr: NodeRun, queue: str, reason: str, event: str, message: str, *, sources: tuple[str, ...],
                 log: str) -> bool:
    """Set a queued node run's ``wait_reason`` from one of ``sources`` to ``reason`` and say why on its
    run, once (the claim of a worker clears the reason)."""
    with transaction.atomic():
        locks.lock_run(nr.run_id)  # the run row first (workflows/engine/locks.py)
        if not NodeRun.objects.filter(pk=nr.pk, status=NodeRun.Status.QUEUED, wait_reason__in=sources).update(
                wait_reason=reason):
            return False
        events.append(nr.run_id, nr.run.owner_id, [(event, nr.node_id, {
            "iteration": nr.iteration, "node_type": nr.node_type, "queue": queue, "message": message})])
    logger.warning(log, extra={"run_id": str(nr.run_id), "node_id": nr.node_id, "queue": queue})
    return True


def undecided_parks(before: datetime) -> list[int]:
    """Node runs parked (``execution.park``) before ``before`` whose coordinator decision never
    ran: the executor's process died between the park's commit and the publish of its linked
    message. Which status the run then takes is that decision's, not the sweeper's."""
    return list(NodeRun.objects.filter(status=NodeRun.Status.WAITING, undecided_since__lt=before)
                .order_by("undecided_since", "pk").values_list("pk", flat=True)[:500])


def _backlogged_queues() -> set[str]:
    """Queues whose broker list still holds messages. A node run queued past the deadline there is
    usually waiting its turn: re-publishing it would only lengthen the backlog, and re-publishing
    every waiting node at every deadline grows a backlog faster than workers drain it (a duplicate
    storm). A message truly lost meanwhile is re-published once its queue has drained."""
    busy: set[str] = set()
    try:
        with app.pool.acquire(block=True, timeout=5) as conn:
            channel = conn.default_channel
            # every queue a message can wait in: each routed type's own (``wf.tasks.<type>``, created
            # on first publish, so not among Celery's declared queues), the default and the services'
            for queue in registry.all_queues():
                try:
                    _, count, _ = channel.queue_declare(queue=queue, passive=True)
                except ChannelError:
                    continue  # no such list: empty
                if queue == COORDINATOR_QUEUE and count and not settings.AOB_BROKER_IS_AMQP:
                    # Redis: only the usual priority's list. The decisions of owners past their share
                    # wait at the lowest (``shares``) and are no backlog that delays finding others'.
                    count = channel.client.llen(COORDINATOR_QUEUE)
                if count:
                    busy.add(queue)
    except Exception:  # without a broker answer, re-publish by the deadline alone
        logger.warning("sweeper.backlog_unknown", exc_info=True)
        return set()
    return busy


def _waiting_turn(backlog: set[str], patience: datetime) -> Case:
    """1 for a queued node run most likely waiting its turn on a backlogged queue (``sweep`` leaves
    it), else 0: read first, the oldest first, so a message lost elsewhere is found in the next
    sweep however many wait in a backlog. Before, the read took the model's default order: with
    more than 500 stale on a backlogged queue, it read the same 500 (left waiting their turn) every
    sweep, and a lost one elsewhere waited ``AOB_REPUBLISH_BACKLOG_S``."""
    waiting = [node_type for node_type in registry.routed() if registry.queue_for(node_type) in backlog]
    return Case(When(node_type__in=waiting, dispatched_at__gt=patience, then=Value(1)), default=Value(0),
                output_field=IntegerField())


def _dispatch(nr: NodeRun) -> Dispatch:
    node = load_ir(nr.run).nodes.get(nr.node_id)
    return Dispatch(nr.pk, nr.node_id, nr.node_type, str(nr.run_id), node.timeout_ms if node else None)


class ClockTimestamp(Func):
    """PostgreSQL's ``clock_timestamp()``: the database's time at the moment the statement reads it
    (``now()`` is the transaction's start). Leases are taken and judged by this one clock."""

    template = "clock_timestamp()"
    output_field = DateTimeField()


def lapsed(nr: NodeRun) -> dict[str, object]:
    """The guard of a move out of a lost attempt: still this attempt's, its lease lapsed by the
    database's clock at the moment of the update (a heartbeat that renewed it meanwhile wins: the
    row lock orders the two, and the UPDATE re-reads the lease)."""
    return {"attempts": nr.attempts, "lease_expires_at__lt": ClockTimestamp()}


def times_lost(nr: NodeRun) -> int:
    """The attempts of a node run a worker died in, as its log shows, not all its attempts: two
    that timed out and one lost worker failed a node with retries left, as "lost 3 times"."""
    return sum(1 for past in nr.attempt_log if isinstance(past, dict) and past.get("status") == LOST)


def _recover_lost(nr: NodeRun, now: object) -> str:
    entry = {"attempt": nr.attempts, "status": LOST, "error": {
        "error_type": "WorkerLost", "message": "the worker running this node stopped before finishing"}}
    lost = times_lost(nr) + 1
    with transaction.atomic():
        locks.lock_run(nr.run_id)
        if lost >= settings.AOB_MAX_ATTEMPTS_ON_LOST:
            error = {"error_type": "WorkerLost", "message": f"lost {lost} times; giving up",
                     "transient": False}
            moved = transitions.move_node_run(
                nr.pk, NodeRun.Status.FAILED, sources=[NodeRun.Status.RUNNING], guard=lapsed(nr),
                run_id=nr.run_id, owner_id=nr.run.owner_id, event=(Event.Type.NODE_FAILED, nr.node_id, {"error": error}),
                error=error, finished_at=now, lease_expires_at=None, attempt_log=[*nr.attempt_log, entry])
            if moved:
                transaction.on_commit(lambda: coordinate_now(nr.pk))
            return "failed"
        moved = transitions.move_node_run(
            nr.pk, NodeRun.Status.QUEUED, sources=[NodeRun.Status.RUNNING], guard=lapsed(nr),
            run_id=nr.run_id, owner_id=nr.run.owner_id,
            event=(Event.Type.NODE_RETRYING, nr.node_id, {"attempt": nr.attempts, "error": entry["error"]}),
            dispatched_at=now, lease_expires_at=None, attempt_log=[*nr.attempt_log, entry])
        if moved:
            item = _dispatch(nr)
            transaction.on_commit(lambda: publish_now(item))
    return "requeued"


def ask_for_outputs(now: datetime, backlog: set[str] | frozenset[str] = frozenset()) -> int:
    """Completed runs whose ``metadata.output`` is still pending once the worker asked for it had
    its time (``AOB_OUTPUT_TIME_LIMIT_S``, and the republish delay; with a backlog on its queue,
    ``AOB_REPUBLISH_BACKLOG_S``, since the ask is most likely waiting its turn): the ask was lost,
    or the worker died computing it. Each is asked for again, once per that period
    (``output_asked_at`` moves on). The worker counts attempts as they start
    (``services.runs.run_output_store``), so a long queue never fails an output."""
    wait = settings.AOB_REPUBLISH_BACKLOG_S if registry.OUTPUT_QUEUE in backlog else settings.AOB_REPUBLISH_AFTER_S
    asked_by = now - timedelta(seconds=settings.AOB_OUTPUT_TIME_LIMIT_S + wait)
    asked = 0
    for run_id, at in (Run.objects.filter(output_asked_at__lt=asked_by).order_by("output_asked_at")
                       .values_list("pk", "output_asked_at")[:500]):
        with poison.sweep_row("ask_for_output", run_id=run_id) as taken:
            if not taken:
                continue  # its handling killed the process too often (poison.sweep_row)
            if Run.objects.filter(pk=run_id, output_asked_at=at).update(output_asked_at=now):
                dispatch.compute_output_now(str(run_id))  # looked up here: the test hooks wrap it
                asked += 1
    if registry.OUTPUT_QUEUE in (queues_unserved() or []):  # one read of Redis a sweep
        told = Event.objects.filter(run_id=OuterRef("pk"), type=Event.Type.NODE_UNSERVED,
                                    data__queue=registry.OUTPUT_QUEUE)
        waiting = (Run.objects.filter(output_asked_at__lt=now - timedelta(seconds=settings.AOB_REPUBLISH_AFTER_S))
                   .exclude(Exists(told)).order_by("output_asked_at").values_list("pk", flat=True)[:100])
        for run_id in waiting:
            with poison.sweep_row("say_output_unserved", run_id=run_id) as taken:
                if not taken:
                    continue  # its handling killed the process too often (poison.sweep_row)
                _say_output_unserved(run_id)
    return asked


def _say_output_unserved(run_id: Any) -> None:
    """A completed run whose ``metadata.output`` waits on a queue no running worker consumes
    (``check_service_queues``): its page said "Computing the output…" for ever. Its events say
    why, once (a ``node_unserved`` event with no node, naming the queue), its run locked so two
    sweeps say it once; at most 100 a sweep, those told left out of the read."""
    queue = registry.OUTPUT_QUEUE
    with transaction.atomic():
        if locks.lock_run(run_id) is None or Event.objects.filter(
                run_id=run_id, type=Event.Type.NODE_UNSERVED, data__queue=queue).exists():
            return
        owner_id = Run.objects.values_list("owner_id", flat=True).get(pk=run_id)
        message = (f"the run's metadata.output waits: no running worker consumes the queue {queue} "
                   f"(start one with -Q {queue})")
        events.append(run_id, owner_id, [(Event.Type.NODE_UNSERVED, "", {"queue": queue, "message": message})])
    logger.warning("run.output_unserved", extra={"run_id": str(run_id)})
