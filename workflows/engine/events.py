"""Appending events in the caller's transaction, and pushing them to the channel layer after commit."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Iterable
from typing import Any

from celery import signals
from django.db import connection, transaction
from django.utils import timezone

from aob_project.context import current_request_id
from workflows.answers import run_inputs_within
from workflows.models import Event

logger = logging.getLogger(__name__)


# An event's value that may be large (a run's inputs, up to AOB_MAX_RUN_INPUTS_BYTES) is carried
# up to this many bytes, else a marker linking to it whole: every event stays small in the
# database, in the pushes and in GET /runs/{id}/events' pages of 1,000.
EVENT_VALUE_MAX_BYTES = 64 * 1024


def shown_inputs(run: Any) -> Any:
    """A run's inputs as its ``workflow_started`` event carries them (``EVENT_VALUE_MAX_BYTES``)."""
    return run_inputs_within(run, EVENT_VALUE_MAX_BYTES)


def reserve_seq(run_id: Any, count: int) -> int:
    """Reserve ``count`` event numbers for a run; returns the first. Row-locks the run until commit."""
    with connection.cursor() as cursor:
        cursor.execute("UPDATE workflows_run SET event_seq = event_seq + %s WHERE id = %s RETURNING event_seq",
                       [count, run_id])
        last = cursor.fetchone()[0]
    return last - count + 1


def frame(run_id: Any, seq: int, type_: str, node_id: str, data: dict[str, Any], request_id: str | None,
          created_at: Any) -> dict[str, Any]:
    """An event as the API, the WebSocket and the UI see it (the shape of ``Event.as_dict``)."""
    return {"run_id": str(run_id), "seq": seq, "type": type_, "node_id": node_id or None, "data": data,
            "request_id": request_id or None, "created_at": created_at.isoformat() if created_at else None}


def append(run_id: Any, owner_id: int, items: Iterable[tuple[str, str, dict[str, Any]]]) -> list[Event]:
    """Append ``(type, node_id, data)`` items as numbered events and push them after commit."""
    items = list(items)
    if not items:
        return []
    events = numbered(run_id, reserve_seq(run_id, len(items)), items)
    Event.objects.bulk_create(events)
    push_after_commit(run_id, owner_id, events)
    return events


def numbered(run_id: Any, first: int, items: Iterable[tuple[str, str, dict[str, Any]]]) -> list[Event]:
    """``(type, node_id, data)`` items as events numbered from ``first`` (unsaved): ``append``'s,
    or a new run's first events, numbered from 1 (``coordinator.start_new``)."""
    now = timezone.now()
    request_id = current_request_id()
    return [Event(run_id=run_id, seq=first + i, type=t, node_id=node_id or "", data=data, created_at=now,
                  request_id=request_id) for i, (t, node_id, data) in enumerate(items)]


def push_after_commit(run_id: Any, owner_id: int, events: list[Event]) -> None:
    frames = [e.as_dict() for e in events]
    transaction.on_commit(lambda: push(str(run_id), owner_id, frames))


class _Pusher:
    """Pushes for one process. Whether anyone watches the run or its owner is asked first,
    synchronously, in one Redis round trip; usually nobody does and that is all. Otherwise the
    frames go to one event loop thread, which reuses the channel layer's Redis connections
    (``async_to_sync`` would open one per call) and sends what arrived while it was busy as one
    batch."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="aob-event-push", daemon=True)
        self.thread.start()
        self.lock = threading.Lock()
        self.pending: list[tuple[str, dict[str, Any]]] = []
        self.draining = False

    def submit(self, run_id: str, owner_id: int, frames: list[dict[str, Any]]) -> None:
        from channels.layers import get_channel_layer

        groups = [f"run.{run_id}", f"user.{owner_id}"]
        sends = [(group, {"type": "run.event", "event": frame}) for frame in frames for group in groups]
        layer = get_channel_layer()
        if hasattr(layer, "anyone_in"):
            try:
                if not layer.anyone_in(groups):
                    return  # nobody is watching: the usual case, settled in one round trip
            except Exception:  # a live push is best effort; the events table is the truth
                logger.warning("event.push_failed", extra={"run_id": run_id}, exc_info=True)
                return
        with self.lock:
            self.pending.extend(sends)
            if self.draining:
                return
            self.draining = True
        asyncio.run_coroutine_threadsafe(self._drain(), self.loop)

    async def _drain(self) -> None:
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        while True:
            with self.lock:
                batch, self.pending = self.pending, []
                if not batch:
                    self.draining = False
                    return
            try:
                if hasattr(layer, "group_send_many"):
                    await layer.group_send_many(batch)
                else:
                    for group, message in batch:
                        await layer.group_send(group, message)
            except Exception:  # a live push is best effort; the events table is the truth
                logger.warning("event.push_failed", extra={"groups": len(batch)}, exc_info=True)


_pusher: _Pusher | None = None
_pusher_lock = threading.Lock()
# Pushes a worker task makes once its node's work is done (the completion, the coordinator's
# decision) wait here until the task has returned and Celery has published what follows it (the
# link, the next executor), so the watch check and the push thread never delay the hop. Pushes made
# while a node runs (``node_started``, an agent's patch) go out at once.
_in_task = False
_held: list[tuple[str, int, list[dict[str, Any]]]] | None = None


def push(run_id: str, owner_id: int, frames: list[dict[str, Any]]) -> None:
    if _held is not None:
        _held.append((run_id, owner_id, frames))
        return
    _submit(run_id, owner_id, frames)


def hold_until_task_end() -> None:
    """In a worker task, keep this task's further pushes until it has returned (elsewhere: no-op)."""
    global _held
    if _in_task and _held is None:
        _held = []


def _submit(run_id: str, owner_id: int, frames: list[dict[str, Any]]) -> None:
    global _pusher
    with _pusher_lock:
        if _pusher is None or _pusher.pid != os.getpid():
            _pusher = _Pusher()
    _pusher.submit(run_id, owner_id, frames)


@signals.task_prerun.connect
def _task_started(**_: Any) -> None:
    global _in_task, _held
    _in_task, _held = True, None


@signals.task_postrun.connect
def _task_ended(**_: Any) -> None:
    global _in_task, _held
    held, _held, _in_task = _held, None, False
    merged: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for run_id, owner_id, frames in held or []:
        merged.setdefault((run_id, owner_id), []).extend(frames)  # one watch check per run
    for (run_id, owner_id), frames in merged.items():
        _submit(run_id, owner_id, frames)
