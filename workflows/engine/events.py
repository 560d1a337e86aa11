"""Appending events in the caller's transaction, and pushing them to the channel layer after commit."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import uuid
from collections import Counter
from collections.abc import Iterable
from typing import Any

from celery import signals
from django.db import connection, transaction
from django.utils import timezone

from aob_project.context import current_request_id
from workflows.answers import run_inputs_within
from workflows.approvers import inbox_group
from workflows.engine.outputs import strict_json
from workflows.models import Event, canonical_json, size_of

logger = logging.getLogger(__name__)


# No event's data is larger than this, as stored (``bounded``, on every write through ``numbered``):
# a value that may be large (a run's inputs, up to AOB_MAX_RUN_INPUTS_BYTES) is carried up to it,
# else a marker linking to it whole; any other data past it is stored and pushed as a marker.
EVENT_VALUE_MAX_BYTES = 64 * 1024
# What ``workflow_started`` holds beside its inputs (``artifact_id``, the keys): its inputs fit
# ``EVENT_VALUE_MAX_BYTES`` less this, so they are whole or their own marker, never the event's.
_STARTED_ROOM = 256

# The keys a truncated event keeps, when small: which iteration, attempt, approval, patch or child
# run it is about. Strings up to this many characters (a node id, a username: 200, 150).
_IDENTIFYING = ("iteration", "attempt", "approval_id", "patch_id", "seq", "child_run_id", "artifact_id",
                "output_artifact_id", "kind", "reason", "user", "approve", "settled", "inline")
_IDENTIFYING_CHARS = 200
# Upper bounds of a scalar's JSON in bytes, as measured (``size_of``): a float as jsonb writes it
# out, in full (-5e-324 is 327 characters, 1.7976931348623157e308 an integer of 309 digits).
_SCALAR_BYTES = {bool: 5, type(None): 4, float: 327}
_WALKED = 256  # values judged without serialising; past it the data is measured


def shown_inputs(run: Any) -> Any:
    """A run's inputs as its ``workflow_started`` event carries them (``EVENT_VALUE_MAX_BYTES``)."""
    return run_inputs_within(run, EVENT_VALUE_MAX_BYTES - _STARTED_ROOM)


def bounded(run_id: Any, type_: str, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` when its JSON as stored (``canonical_json`` in UTF-8, the artifacts' and the inputs'
    measure) is at most ``EVENT_VALUE_MAX_BYTES``, else ``{"truncated": true, "bytes"}`` with the
    data's small identifying keys (``_IDENTIFYING``): the one bound of every event, whoever writes
    it (a person's comment, an agent's patch description, the nodes a cancel stopped). Small data
    of a few scalars, most events, is judged without being serialised again (``_surely_within``).
    First it is made strict JSON (``outputs.strict_json``: 7 µs for an approval's event): an error's text
    can carry what ``jsonb`` refuses (a CEL regex error quotes its pattern, NUL included), and a
    refused event failed the decision that wrote it, three times, and then its run."""
    data = strict_json(data, non_finite="null")
    if _surely_within(data, EVENT_VALUE_MAX_BYTES):
        return data
    size = size_of(canonical_json(data))
    if size <= EVENT_VALUE_MAX_BYTES:
        return data
    logger.warning("event.truncated", extra={"run_id": str(run_id), "event_type": str(type_), "bytes": size})
    kept = {key: data[key] for key in _IDENTIFYING if key in data and _small(data[key])}
    return {**kept, "truncated": True, "bytes": size}


def _small(value: Any) -> bool:
    return value is None or type(value) in (bool, int) or (type(value) is str and len(value) <= _IDENTIFYING_CHARS)


def _surely_within(data: Any, limit: int) -> bool:
    """Whether ``data``'s JSON is surely at most ``limit`` bytes, from an upper bound of each value's
    (a character at most 6 bytes: an escaped control character), never serialising it. False for
    what it cannot judge so cheaply (an unknown type, more than ``_WALKED`` values): then measured."""
    room, stack, walked = limit, [data], 0
    while stack:
        value = stack.pop()
        kind = type(value)
        if kind is str:
            room -= 6 * len(value) + 2
        elif kind is int:
            room -= value.bit_length() // 3 + 2
        elif kind is dict:
            room -= 1 + max(1, len(value))  # brackets and commas
            for key, item in value.items():
                if type(key) is not str:
                    return False
                room -= 6 * len(key) + 3
                stack.append(item)
        elif kind is list:
            room -= 1 + max(1, len(value))  # brackets and commas
            stack.extend(value)
        elif kind in _SCALAR_BYTES:
            room -= _SCALAR_BYTES[kind]
        else:
            return False
        walked += 1
        if room < 0 or walked > _WALKED:
            return False
    return True


def reserve_seq(run_id: Any, count: int) -> int:
    """Reserve ``count`` event numbers for a run; returns the first. Row-locks the run until commit."""
    with connection.cursor() as cursor:
        cursor.execute("UPDATE workflows_run SET event_seq = event_seq + %s WHERE id = %s RETURNING event_seq",
                       [count, run_id])
        last = cursor.fetchone()[0]
    return last - count + 1


def frame(run_id: Any, seq: int, type_: str, node_id: str, data: dict[str, Any], request_id: str | None,
          created_at: Any) -> dict[str, Any]:
    """An event as the API, the WebSocket and the UI see it (the shape of ``Event.as_dict``), for
    the hot path's events written by one SQL statement with their data (``execution.CLAIM`` and
    ``COMPLETE``, ``steps.END_STEP``): a few numbers and an artifact id, so they need no
    ``bounded``. Any other event is written through ``numbered``."""
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
    or a new run's first events, numbered from 1 (``coordinator.start_new``). Each one's data is
    ``bounded`` here, so what is stored and what is pushed are the same, at most
    ``EVENT_VALUE_MAX_BYTES``."""
    now = timezone.now()
    request_id = current_request_id()
    return [Event(run_id=run_id, seq=first + i, type=t, node_id=node_id or "", data=bounded(run_id, t, data),
                  created_at=now, request_id=request_id) for i, (t, node_id, data) in enumerate(items)]


# An event pushed live is at most this big; a larger one goes as its stub (``live_frame``). What a
# web process keeps for a socket that stopped reading is a channel's capacity of pushed frames
# (channels_redis's receive buffer, which nothing expires): 1,000 events of 64 KiB were 64 MiB a
# socket, 3.2 GB for one user's 50 (a red-team helper measured 384 MiB for 8 sockets).
LIVE_FRAME_MAX_BYTES = 4096


def live_frame(frame: dict[str, Any]) -> dict[str, Any]:
    """``frame`` as it is pushed live: whole while its data is small, else its stub."""
    if len(json.dumps(frame.get("data"), default=str)) <= LIVE_FRAME_MAX_BYTES:
        return frame
    return stub(frame)


def stub(frame: dict[str, Any]) -> dict[str, Any]:
    """What names an event (run, seq, type, node, ``stub: true``) without it: a socket reads it from
    the database in its turn, with every event of its run before it that it has not sent, as it
    fills a hole (``workflows.consumers``)."""
    return {key: frame.get(key) for key in ("run_id", "seq", "type", "node_id")} | {"stub": True}


# A group's events of one run in one push batch past which one stub, of the last, stands for them
# all. All of a web process's sockets share one Redis list (channels_redis's process channel) of
# ``capacity`` messages, one message a group's event (naming its sockets there), and the process
# delivers each to each socket: a co-tenant's decision of 200 events, watched by 10 sockets, filled
# it, and another user's event pushed then was dropped, reaching them only by the quiet read 30 s
# later (a red team's measure).
BURST_FRAMES = 8
# Pushes waiting for the push thread past which every group's run is one stub as they wait: a Redis
# answering slowly kept every frame of every watched run in the worker's memory until it answered.
PENDING_COALESCED = 1000


def coalesced(batch: list[tuple[str, dict[str, Any]]], *, burst: int = BURST_FRAMES) -> list[tuple[str, dict[str, Any]]]:
    """``batch`` (group, message) with each group's events of one run past ``burst`` sent as one
    stub of the last of them (the highest seq) naming the first (``first``: a socket reads them all
    from there, as a burst sent whole would have been read), where the last of them stood: one
    message where there were hundreds. An inbox's nudges (``inboxes_nudge_after_commit``: no
    event, nothing but "read again") go once a group, where the first stood."""
    nudged: set[str] = set()
    kept = []
    for group, message in batch:
        if "event" not in message:
            if group in nudged:
                continue
            nudged.add(group)
        kept.append((group, message))
    batch = kept
    counts = Counter((group, message["event"]["run_id"]) for group, message in batch if "event" in message)
    if not counts or max(counts.values()) <= burst:
        return batch
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    first: dict[tuple[str, str], int] = {}
    place: dict[tuple[str, str], int] = {}
    for index, (group, message) in enumerate(batch):
        if "event" not in message:
            continue
        key, event = (group, message["event"]["run_id"]), message["event"]
        if counts[key] > burst:
            place[key] = index
            if key not in latest or event["seq"] > latest[key]["seq"]:
                latest[key] = event
            first[key] = min(first.get(key, event["seq"]), event.get("first", event["seq"]))
    out = []
    for index, (group, message) in enumerate(batch):
        if "event" not in message or counts[group, message["event"]["run_id"]] <= burst:
            out.append((group, message))
        elif place[key := (group, message["event"]["run_id"])] == index:
            out.append((group, {**message, "event": stub(latest[key]) | {"first": first[key]}}))
    return out


def push_after_commit(run_id: Any, owner_id: int, events: list[Event]) -> None:
    frames = [e.as_dict() for e in events]
    transaction.on_commit(lambda: push(str(run_id), owner_id, frames))


# The approver names one change nudges at most: an approval lists up to 100 and escalates to 100
# more (the ``hitl`` schema); a run's end nudges the distinct names of all its pending approvals.
INBOX_NUDGE_MAX_NAMES = 1000


def inboxes_nudge_after_commit(names: Iterable[str]) -> None:
    """After commit, tell every inbox open for one of ``names`` (an approval's approvers: the
    Channels group of each, ``approvers.inbox_group``, which a user's ``ws/events/`` joins for each
    of their names) to read itself again. The message says nothing of the approval or its run (the
    inbox reads what its user may see): an approver is told of a gate on another's run, whose events
    go to its owner alone. One message a name, at most ``INBOX_NUDGE_MAX_NAMES`` of them, whoever is
    in a group named; a socket in several of the groups forwards one change once (``change``).
    Best effort, as every live push: nobody watching costs one Redis ``EXISTS``."""
    groups = [inbox_group(name) for name in list(dict.fromkeys(names))[:INBOX_NUDGE_MAX_NAMES]]
    if groups:
        change = uuid.uuid4().hex
        transaction.on_commit(lambda: _pusher_now().nudge(groups, change))


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
        layer = get_channel_layer()
        if hasattr(layer, "anyone_in"):
            try:
                if not layer.anyone_in(groups):
                    return  # nobody is watching: the usual case, settled in one round trip
            except Exception:  # a live push is best effort; the events table is the truth
                logger.warning("event.push_failed", extra={"run_id": run_id}, exc_info=True)
                return
        live = [live_frame(frame) for frame in frames]  # measured once, sent to each group
        self._queue([(group, {"type": "run.event", "event": frame}) for frame in live for group in groups])

    def nudge(self, groups: list[str], change: str) -> None:
        """``inboxes_nudge_after_commit``'s message to each of ``groups`` with anyone in it."""
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        if hasattr(layer, "anyone_in"):
            try:
                if not layer.anyone_in(groups):
                    return
            except Exception:  # a live push is best effort; the inbox reads the database
                logger.warning("inbox.nudge_failed", extra={"groups": len(groups)}, exc_info=True)
                return
        self._queue([(group, {"type": "inbox.changed", "change": change}) for group in groups])

    def _queue(self, sends: list[tuple[str, dict[str, Any]]]) -> None:
        with self.lock:
            self.pending.extend(sends)
            if len(self.pending) > PENDING_COALESCED:  # Redis slow: what waits is one stub a group's run
                self.pending = coalesced(self.pending, burst=1)
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
            batch = coalesced(batch)
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
    _pusher_now().submit(run_id, owner_id, frames)


def _pusher_now() -> _Pusher:
    """This process's pusher (a forked child makes its own)."""
    global _pusher
    with _pusher_lock:
        if _pusher is None or _pusher.pid != os.getpid():
            _pusher = _Pusher()
        return _pusher


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
