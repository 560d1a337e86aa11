"""Kill points and switches of the fault suite (tests/faults), installed into every worker of the
test stack (``celery worker --include tests.support.fault_points``, see ``stack.start_worker``) when
``AOB_TEST_HOOKS=1``. Production modules know nothing of them: they wrap engine functions and
connect a Celery signal. The switches live in Redis, so a test flips them for every process of
its stack at once:

- ``aob:test:stall:<point>:<node_id>``: the first process that reaches ``point`` for that node
  holds there, its pid left in ``aob:test:stalled:<point>:<node_id>`` for the test to ``kill -9``;
  it goes on when the test sets ``aob:test:stall_release:<point>:<node_id>`` (60 s at most).
  Points: ``decision`` (a coordinator message about the node, before its decision starts),
  ``decision_locked`` (the full decision consuming the node, inside its transaction with the run
  row locked), ``callback`` (the node's completion committed, its linked coordinator message about
  to be published);
- ``aob:test:unfenced_steps``: the plain chain step neither checks that its node run is still
  unconsumed nor lets the unique key absorb a second emit (the test drops the constraint too):
  the negative control of the duplicate-message fault.
"""

from __future__ import annotations

import os
import time
from functools import cache
from typing import Any

import redis
from django.conf import settings

STALL_LIMIT_S = 60.0


@cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


def stall(point: str, node_id: str) -> None:
    client = _redis()
    if not client.delete(f"aob:test:stall:{point}:{node_id}"):
        return
    client.set(f"aob:test:stalled:{point}:{node_id}", os.getpid(), ex=int(STALL_LIMIT_S) * 2)
    deadline = time.monotonic() + STALL_LIMIT_S
    while time.monotonic() < deadline and not client.exists(f"aob:test:stall_release:{point}:{node_id}"):
        time.sleep(0.05)


def unfenced(sql: str) -> str:
    return sql.replace("AND NOT consumed", "").replace("ON CONFLICT (run_id, node_id, iteration) DO NOTHING", "")


def install() -> None:
    from celery import signals
    from django.db import connection

    from workflows.engine import coordinator, steps
    from workflows.models import NodeRun

    coordinate, consume, step_plain, chain_step = (coordinator.coordinate, coordinator.Decision.consume,
                                                   steps.step_plain, steps.CHAIN_STEP)

    def stalling_coordinate(node_run_id: int, facts: dict[str, Any] | None = None) -> None:
        node_id = facts.get("node_id") if facts else (
            NodeRun.objects.filter(pk=node_run_id).values_list("node_id", flat=True).first())
        if node_id:
            stall("decision", node_id)
        coordinate(node_run_id, facts=facts)

    def stalling_consume(self: Any, nr: Any) -> None:
        if connection.in_atomic_block:
            stall("decision_locked", nr.node_id)
        consume(self, nr)

    def unfenceable_step_plain(facts: dict[str, Any], ir: Any) -> bool:
        if not _redis().exists("aob:test:unfenced_steps"):
            return step_plain(facts, ir)
        steps.CHAIN_STEP = unfenced(chain_step)  # read by step_plain at call time; one task per process
        try:
            return step_plain(facts, ir)
        finally:
            steps.CHAIN_STEP = chain_step

    def stalling_callback(sender: str | None = None, body: Any = None, **_: Any) -> None:
        """The executor's completion is committed and Celery is about to publish its linked
        coordinator message (the only coordinator message that carries facts)."""
        if sender != "workflows.coordinate" or not isinstance(body, (list, tuple)) or not body:
            return
        args = body[0]
        if isinstance(args, (list, tuple)) and args and isinstance(args[0], dict):
            stall("callback", str(args[0].get("node_id", "")))

    coordinator.coordinate = stalling_coordinate
    coordinator.Decision.consume = stalling_consume
    steps.step_plain = unfenceable_step_plain
    signals.before_task_publish.connect(stalling_callback, weak=False)


if os.environ.get("AOB_TEST_HOOKS") == "1":
    install()
