"""Fault-injection switches for the durability tests and the fault suite (tests/faults), read from
Redis so every process of a test stack sees them. Inert unless ``AOB_TEST_HOOKS`` is set in the
environment."""

from __future__ import annotations

import os
import time
from functools import cache
from typing import Any

ENABLED = os.environ.get("AOB_TEST_HOOKS") == "1"
STALL_LIMIT_S = 60.0


@cache
def _redis():  # type: ignore[no-untyped-def]
    import redis
    from django.conf import settings

    return redis.Redis.from_url(settings.REDIS_URL)


def drop_publish(run_id: str, node_id: str) -> bool:
    """Drop the first after-commit publish of a node id the test marked (tests use unique ids)."""
    if not ENABLED:
        return False
    key = f"aob:test:drop_publish:{node_id}"
    return bool(_redis().delete(key))


def sweeper_paused() -> bool:
    return ENABLED and bool(_redis().exists("aob:test:sweeper_paused"))


def poison_decision(node_id: str) -> None:
    """Make every decision about a node id the test marked raise, as a bug in the engine would;
    or hold the first one at a kill point (``stall``): ``decision`` before a decision starts,
    ``decision_locked`` inside the full decision's transaction, with the run row locked."""
    if not ENABLED:
        return
    from django.db import connection

    stall("decision_locked" if connection.in_atomic_block else "decision", node_id)
    if _redis().exists(f"aob:test:poison_decision:{node_id}"):
        raise RuntimeError(f"poisoned decision for {node_id} (test hook)")


def stall(point: str, node_id: str) -> None:
    """Hold this process at a kill point the test marked for a node id (once: the mark is taken),
    leaving its pid in ``aob:test:stalled:<point>:<node_id>`` for the test to ``kill -9``. It goes
    on when the test sets ``aob:test:stall_release:<point>:<node_id>``, or after STALL_LIMIT_S."""
    if not ENABLED:
        return
    client = _redis()
    if not client.delete(f"aob:test:stall:{point}:{node_id}"):
        return
    client.set(f"aob:test:stalled:{point}:{node_id}", os.getpid(), ex=int(STALL_LIMIT_S) * 2)
    deadline = time.monotonic() + STALL_LIMIT_S
    while time.monotonic() < deadline and not client.exists(f"aob:test:stall_release:{point}:{node_id}"):
        time.sleep(0.05)


def unfenced(sql: str) -> str:
    """The negative control of the duplicate-message fault: while the test sets
    ``aob:test:unfenced_steps`` (and drops the node-run key's unique constraint), a plain chain
    step neither checks that its node run is still unconsumed nor lets the unique key absorb a
    second emit, so a duplicate coordinator message must show up as doubled work."""
    if ENABLED and _redis().exists("aob:test:unfenced_steps"):
        return (sql.replace("AND NOT consumed", "")
                .replace("ON CONFLICT (run_id, node_id, iteration) DO NOTHING", ""))
    return sql


def _stall_callback(sender: str | None = None, body: Any = None, **_: Any) -> None:
    """``before_task_publish`` in a worker: the executor's completion is committed and Celery is
    about to publish its linked coordinator message (the only coordinator message that carries
    facts). A test marks the ``callback`` point to crash the process in that window."""
    if sender != "workflows.coordinate" or not isinstance(body, (list, tuple)) or not body:
        return
    args = body[0]
    if isinstance(args, (list, tuple)) and args and isinstance(args[0], dict):
        stall("callback", str(args[0].get("node_id", "")))


if ENABLED:
    from celery import signals

    signals.before_task_publish.connect(_stall_callback, weak=False)
