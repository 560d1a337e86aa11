"""Leases kept alive while a node runs, so a dead worker is noticed in seconds, not at the node's
timeout.

A claimed node run holds a short lease (``AOB_LEASE_S``). One daemon thread per worker process
renews the leases of the node runs this process is executing, every third of the lease; when the
process dies, renewals stop and the sweeper re-queues the node once its lease lapses.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

logger = logging.getLogger(__name__)


class _Beat:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self.held: set[int] = set()
        self.lock = threading.Lock()
        self.wake = threading.Event()
        threading.Thread(target=self._loop, name="aob-lease-heartbeat", daemon=True).start()

    def _loop(self) -> None:
        while True:
            self.wake.wait(max(0.2, settings.AOB_LEASE_S / 3))
            with self.lock:
                ids = list(self.held)
            if not ids:
                continue
            try:
                close_old_connections()
                with connection.cursor() as cursor:
                    cursor.execute(
                        "UPDATE workflows_noderun SET lease_expires_at = %s WHERE id = ANY(%s) AND status = 'running'",
                        [timezone.now() + timedelta(seconds=settings.AOB_LEASE_S), ids])
            except Exception:  # a missed beat only shortens the lease; the next one retries
                logger.warning("lease.heartbeat_failed", exc_info=True)


_beat: _Beat | None = None
_guard = threading.Lock()


@contextmanager
def holding(node_run_id: int) -> Iterator[None]:
    global _beat
    with _guard:
        if _beat is None or _beat.pid != os.getpid():
            _beat = _Beat()
        beat = _beat
    with beat.lock:
        beat.held.add(node_run_id)
    try:
        yield
    finally:
        with beat.lock:
            beat.held.discard(node_run_id)
