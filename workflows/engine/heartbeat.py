"""Leases kept alive while a node runs, so a dead worker is noticed in seconds, not at the node's
timeout; and fenced, so a worker whose lease is gone stops.

A claimed node run holds a short lease (``AOB_LEASE_S``), its deadline taken from the database's
clock (``clock_timestamp()``), never a host's. One daemon thread per worker process renews the
leases of the node runs this process is executing, every third of the lease, each renewal fenced by
the attempt that holds it (``status = 'running' AND attempts = <ours>``). When the process dies,
renewals stop and the sweeper re-queues the node once its lease lapses by the database's clock.

A renewal that updates no row means the lease is gone: the run was cancelled, or the sweeper gave
the node to another attempt (a database failover, a long pause). The heartbeat then stops the
executor: ``LeaseLost`` is raised in the executing thread (through ``SIGUSR2`` when that is the
process's main thread, as in Celery's prefork pool, so a blocking HTTP or LLM request is aborted
at once), and ``lost()`` tells an executor that polls. The completion is fenced by the attempt
number anyway; stopping spares the remote a second concurrent request and frees the worker.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from django.conf import settings
from django.db import close_old_connections, connection

logger = logging.getLogger(__name__)

INTERRUPT = signal.SIGUSR2

RENEW = """
UPDATE workflows_noderun nr SET lease_expires_at = clock_timestamp() + make_interval(secs => %s)
  FROM unnest(%s::bigint[], %s::int[]) AS held(id, attempt)
 WHERE nr.id = held.id AND nr.attempts = held.attempt AND nr.status = 'running'
RETURNING nr.id
"""


class LeaseLost(BaseException):
    """Raised in an executor whose node run is no longer its own (cancelled, or re-queued)."""


class _Beat:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self.held: dict[int, int] = {}  # node run id → the attempt this process executes
        self.lost: set[int] = set()
        self.current: int | None = None  # the node run the main thread executes (the signal's target)
        self.lock = threading.Lock()
        self.wake = threading.Event()
        threading.Thread(target=self._loop, name="aob-lease-heartbeat", daemon=True).start()

    def _loop(self) -> None:
        while True:
            self.wake.wait(max(0.2, settings.AOB_LEASE_S / 3))
            with self.lock:
                held = dict(self.held)
            held = self.to_renew(held)
            if not held:
                continue
            try:
                close_old_connections()
                with connection.cursor() as cursor:
                    cursor.execute(RENEW, [settings.AOB_LEASE_S, list(held), list(held.values())])
                    renewed = {row[0] for row in cursor.fetchall()}
            except Exception:
                logger.warning("lease.heartbeat_failed", exc_info=True)
                continue
            for node_run_id, attempt in held.items():
                if node_run_id not in renewed:
                    self._gone(node_run_id, attempt)

    def _gone(self, node_run_id: int, attempt: int) -> None:
        with self.lock:
            if self.held.get(node_run_id) != attempt:
                return  # finished meanwhile
            self.lost.add(node_run_id)
            interrupt = self.current == node_run_id
        logger.warning("lease.lost", extra={"node_run_id": node_run_id, "attempt": attempt})
        if interrupt:
            self.interrupt()

    def drop(self, node_run_id: int) -> None:
        """Renew the node run's lease no more (its executor ended, or handed it on: ``let_go``)."""
        with self.lock:
            self.held.pop(node_run_id, None)
            self.lost.discard(node_run_id)

    def to_renew(self, held: dict[int, int]) -> dict[int, int]:
        """The leases this beat renews: every one held (the fault tests wrap this to cut one off)."""
        return held

    def interrupt(self) -> None:
        """Stop the main thread's executor: ``LeaseLost`` is raised there by ``_on_interrupt``."""
        signal.pthread_kill(threading.main_thread().ident, INTERRUPT)  # type: ignore[arg-type]


_beat: _Beat | None = None
_guard = threading.Lock()


def _on_interrupt(signum: int, frame: FrameType | None) -> None:
    """Runs in the main thread: raise only in the executor whose lease is gone (a late signal, after
    it finished, is a no-op)."""
    beat = _beat
    if beat is not None and beat.current is not None and beat.current in beat.lost:
        raise LeaseLost(beat.current)


def lost(node_run_id: int) -> bool:
    """Whether this process's lease on the node run is gone (for executors that poll)."""
    beat = _beat
    return beat is not None and node_run_id in beat.lost


def ensure_held(node_run_id: int, attempt: int) -> None:
    """Raise ``LeaseLost`` unless the node run is still this attempt's (``running``, same attempt):
    an executor that works in steps asks before each costly one (an agent's model calls, and each
    tool call of an answer: the interrupt comes only at the next renewal)."""
    from workflows.models import NodeRun

    if lost(node_run_id) or not NodeRun.objects.filter(pk=node_run_id, status=NodeRun.Status.RUNNING,
                                                       attempts=attempt).exists():
        raise LeaseLost(node_run_id)


def let_go(node_run_id: int) -> None:
    """The executor hands its node run on (``execution.park``: ``running → waiting``, in the
    transaction about to commit): its lease is renewed no more, and a renewal that finds it
    waiting stops nothing. Before, a renewal in the moment between the park's commit and the
    executor's return took the waiting node for a lost lease and raised ``LeaseLost`` into what
    ran then, the commit's own work: a gate's second notification went unpublished (till the
    sweep, minutes later) and the park's coordinator message said ``lease_lost``."""
    beat = _beat
    if beat is not None and beat.pid == os.getpid():
        beat.drop(node_run_id)


@contextmanager
def holding(node_run_id: int, attempt: int) -> Iterator[None]:
    global _beat
    with _guard:
        if _beat is None or _beat.pid != os.getpid():
            _beat = _Beat()
        beat = _beat
    main = threading.current_thread() is threading.main_thread()
    if main and signal.getsignal(INTERRUPT) is not _on_interrupt:
        signal.signal(INTERRUPT, _on_interrupt)
    with beat.lock:
        beat.lost.discard(node_run_id)
        beat.held[node_run_id] = attempt
        if main:
            beat.current = node_run_id
    try:
        yield
    finally:
        if main:
            beat.current = None  # first: a signal that lands after this line raises nothing
        beat.drop(node_run_id)
