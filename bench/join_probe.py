"""Probe worker: bench.profiling's task records plus the coordinator's parts (plain step, lock
wait, fallback). Run: python -m bench.join_probe -A aob_project worker ..."""

from __future__ import annotations

import functools
import sys
import time
from typing import Any

from bench import profiling


def _wrap(module: Any, name: str, label: str) -> None:
    original = getattr(module, name)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.time()
        result: Any = "exc"
        try:
            result = original(*args, **kwargs)
            return result
        finally:
            if profiling._current is not None:
                profiling._current.setdefault("parts", []).append(
                    {"part": label, "start": start, "end": time.time(),
                     "result": result if isinstance(result, bool | int | str | type(None)) else type(result).__name__})

    setattr(module, name, wrapper)


def install() -> None:
    from celery import signals

    profiling.install()
    import json
    import os
    from pathlib import Path

    out = Path(os.environ["BENCH_PROFILE_DIR"])

    def note(kind: str, task_id: str, name: str, target: Any) -> None:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / f"msgs-{os.getpid()}.jsonl", "a") as fh:
            fh.write(json.dumps({"kind": kind, "id": task_id, "task": name, "target": target, "t": time.time()}) + "\n")

    @signals.before_task_publish.connect(weak=False)
    def _published(sender: Any = None, headers: Any = None, body: Any = None, **_: Any) -> None:
        args = body[0] if isinstance(body, (list, tuple)) and body else []
        note("published", (headers or {}).get("id", ""), str(sender), args[-1] if args else None)

    @signals.after_task_publish.connect(weak=False)
    def _sent(sender: Any = None, headers: Any = None, body: Any = None, **_: Any) -> None:
        args = body[0] if isinstance(body, (list, tuple)) and body else []
        note("sent", (headers or {}).get("id", ""), str(sender), args[-1] if args else None)

    @signals.task_received.connect(weak=False)
    def _received(request: Any = None, **_: Any) -> None:
        args = list(request.args or []) if request is not None else []
        note("received", request.id, request.name, args[-1] if args else None)

    @signals.worker_process_init.connect(weak=False)
    def _init(**_: Any) -> None:
        from workflows.engine import coordinator, steps

        _wrap(steps, "step_plain", "step_plain")
        _wrap(steps, "_locked_statement", "locked_statement")
        _wrap(coordinator, "_decide", "decide")
        _wrap(coordinator, "locked_run", "decide_lock")


if __name__ == "__main__":
    install()
    from celery.__main__ import main as celery_main

    sys.argv = ["celery", *sys.argv[1:]]
    celery_main()
