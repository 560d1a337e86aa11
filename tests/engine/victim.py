"""A worker process of its own for a test's http nodes: the session worker stops consuming
``wf.tasks.http`` while it runs, so the test knows which process executes the node (to kill it,
cut its heartbeat, or read its log)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aob_project.celery import app
from tests.support import stack


def control(worker: str, command: str, queue: str) -> None:
    """Remote control of the session worker (its name: another test may have restarted it)."""
    for _ in range(3):
        if getattr(app.control, command)(queue, destination=[worker], reply=True, timeout=10):
            return
    raise AssertionError(f"{worker} did not answer {command}")


@contextmanager
def http_victim(engine: dict[str, Any], stack_env: dict[str, str]) -> Iterator[stack.Proc]:
    control(engine["worker"].node_name, "cancel_consumer", "wf.tasks.http")
    victim = stack.start_worker(stack_env, "victim", queues=["wf.tasks.http"], concurrency=1)
    try:
        yield victim
    finally:
        control(engine["worker"].node_name, "add_consumer", "wf.tasks.http")
        victim.stop()


def logged(proc: stack.Proc, event: str, **fields: Any) -> bool:
    """Whether the process logged ``event`` (JSON log lines) with these fields."""
    for line in proc.log.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == event and all(record.get(k) == v for k, v in fields.items()):
            return True
    return False
