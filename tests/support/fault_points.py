"""Kill points and switches of the fault suite (tests/faults), installed into every worker of the
test stack (``celery worker --include tests.support.faults,tests.support.fault_points``, see
``stack.start_worker``; after ``tests.support.faults``, whose wrappers these wrap) when
``AOB_TEST_HOOKS=1``. Production modules know nothing of them: they wrap engine functions and
connect a Celery signal. The switches live in Redis, so a test flips them for every process of
its stack at once:

- ``aob:test:stall:<point>:<node_id>``: the first process that reaches ``point`` for that node
  holds there, its pid left in ``aob:test:stalled:<point>:<node_id>`` for the test to ``kill -9``;
  it goes on when the test sets ``aob:test:stall_release:<point>:<node_id>`` (60 s at most).
  Points: ``decision`` (a coordinator message about the node, before its decision starts),
  ``decision_locked`` (the planner's full decision consuming the node, ``planner.plan``, inside
  its transaction with the run row locked), ``callback`` (the node's completion committed, or its
  park (``execution.park``, the executor's result the status word ``waiting``), its linked
  coordinator message about to be published), ``execution`` (an executor task of the node, before
  it claims its node run, which stays ``queued`` meanwhile: tests/engine/test_plain_step.py),
  ``execution_limit`` (the same, for an executor message of the node whose soft time limit is that,
  keyed ``<node_id>:<soft s>``, e.g. ``a:1.0``: tests/faults/test_sent_again_killed.py),
  ``notify`` (a gate's notification about to be published, after its park's commit), ``answered``
  (an http node's request answered, its output about to be made) and ``checked`` (an http node's
  output made, the engine about to check it as JSON), both keyed by the node's URL, not its id;
- ``aob:test:unfenced_steps``: the plain chain step checks neither that its node run is still
  unconsumed nor that no successor row exists yet, nor lets the unique key absorb a second emit
  (the test drops the constraint too): the negative control of the duplicate-message fault.
"""

from __future__ import annotations

import os
import re
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


# What fences the plain chain step against a second copy of its message: the node run must still
# be unconsumed, no successor row may exist yet, and the unique node-run key absorbs a second emit.
FENCES = (re.compile(r"\s+AND NOT consumed\b"),
          re.compile(r"\s+AND NOT EXISTS \(SELECT 1 FROM workflows_noderun s WHERE.*?s\.iteration >= %\(iteration\)s\)",
                     re.S),
          re.compile(r"\s+ON CONFLICT \(run_id, node_id, iteration\) DO NOTHING"))


def without(sql: str, checks: tuple[re.Pattern[str], ...]) -> str:
    """``sql`` with each of ``checks`` taken out, once each: a check no longer in the statement fails
    here, so a switched-off protection cannot silently switch off nothing."""
    for check in checks:
        sql, count = check.subn("", sql)
        assert count == 1, f"the check {check.pattern!r} is no longer in the statement"
    return sql


def unfenced(sql: str) -> str:
    return without(sql, FENCES)


def install() -> None:
    from celery import signals

    from workers import tasks as executor_tasks
    from workers.executors import http as http_executor
    from workflows.engine import coordinator, execution, planner, steps
    from workflows.engine.completion import Completion
    from workflows.models import NodeRun

    coordinate, plan, step_plain, chain_step = coordinator.coordinate, planner.plan, steps.step_plain, steps.CHAIN_STEP
    execute, http_output, strict_json = executor_tasks.execute, http_executor._output, execution.strict_json
    open_chain_step = unfenced(chain_step)

    def stalling_coordinate(node_run_id: int, completion: Any = None, **kwargs: Any) -> None:
        node_id = completion.node_id if completion is not None else (
            NodeRun.objects.filter(pk=node_run_id).values_list("node_id", flat=True).first())
        if node_id:
            stall("decision", node_id)
        coordinate(node_run_id, completion, **kwargs)

    def stalling_execute(node_run_id: int, *args: Any) -> Any:
        node_id = NodeRun.objects.filter(pk=node_run_id).values_list("node_id", flat=True).first()
        if node_id:
            stall("execution", node_id)
            if args and args[0]:  # the limits the message enforces: (hard, soft)
                stall("execution_limit", f"{node_id}:{float(args[0][1])}")
        return execute(node_run_id, *args)

    def stalling_plan(ir: Any, state: Any, finished: int, *args: Any, **kwargs: Any) -> Any:
        """The full decision, inside its transaction with the run row locked (``coordinator._decide``)."""
        token = next((t for t in state.tokens if t.pk == finished), None)
        if token is not None and not token.consumed:
            stall("decision_locked", token.node_id)
        return plan(ir, state, finished, *args, **kwargs)

    def unfenceable_step_plain(completion: Any, ir: Any) -> bool:
        if not _redis().exists("aob:test:unfenced_steps"):
            return step_plain(completion, ir)
        steps.CHAIN_STEP = open_chain_step  # read by step_plain at call time; one task per process
        try:
            return step_plain(completion, ir)
        finally:
            steps.CHAIN_STEP = chain_step

    def stalling_notify(sender: str | None = None, body: Any = None, **_: Any) -> None:
        """A gate's notification about to be published, after its park's commit (``notify``)."""
        from approvals.models import Delivery

        if sender != "approvals.notify" or not isinstance(body, (list, tuple)) or not body or not body[0]:
            return
        node_id = Delivery.objects.filter(pk=body[0][0]).values_list("approval__node_id", flat=True).first()
        if node_id:
            stall("notify", node_id)

    def stalling_callback(sender: str | None = None, body: Any = None, **_: Any) -> None:
        """The executor's completion (or park) is committed and Celery is about to publish its
        linked coordinator message, whose first argument is the ``Completion`` (as the executor
        returns it: a list, or a dict from an older worker) or, for a park, ``waiting``."""
        if sender != "workflows.coordinate" or not isinstance(body, (list, tuple)) or not body:
            return
        args = body[0]
        completion = Completion.from_message(args[0]) if isinstance(args, (list, tuple)) and args else None
        if completion is not None:
            stall("callback", completion.node_id)
        elif isinstance(args, (list, tuple)) and len(args) == 2 and args[0] == "waiting":  # (result, node_run_id)
            node_id = NodeRun.objects.filter(pk=args[1]).values_list("node_id", flat=True).first()
            if node_id:
                stall("callback", node_id)

    def stalling_output(config: dict[str, Any], *args: Any) -> Any:
        """An http node's request answered, its output about to be made (``answered``)."""
        stall("answered", str(config.get("url")))
        return http_output(config, *args)

    def stalling_strict_json(value: Any, *args: Any, **kwargs: Any) -> Any:
        """An executor's output made, the engine about to check it (``checked``: an http node's, by URL)."""
        if isinstance(value, dict) and isinstance(value.get("url"), str) and "status_code" in value:
            stall("checked", value["url"])
        return strict_json(value, *args, **kwargs)

    coordinator.coordinate = stalling_coordinate
    http_executor._output = stalling_output
    execution.strict_json = stalling_strict_json
    executor_tasks.execute = stalling_execute
    planner.plan = stalling_plan
    steps.step_plain = unfenceable_step_plain
    signals.before_task_publish.connect(stalling_callback, weak=False)
    signals.before_task_publish.connect(stalling_notify, weak=False)


if os.environ.get("AOB_TEST_HOOKS") == "1":
    install()
