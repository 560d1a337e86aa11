"""An instrumented AOB worker for ``--profile``, and the analysis of what it recorded.

    BENCH_PROFILE_DIR=<dir> [BENCH_CPROFILE=1] python -m bench.profiling -A aob_project worker ...
    BENCH_VARIANT=inline_coordinate,... python -m bench.profiling -A aob_project worker ...  (what-ifs)

is the production worker (``celery`` 's own entry point, same arguments) with, in each pool
process: every SQL statement a task sends, through Django's ``connection.execute_wrapper`` (plus
BEGIN / COMMIT markers, which psycopg sends outside the cursor), and the wall-clock start and end of
each task, one JSON line per task in ``<dir>/tasks-<pid>.jsonl``. With ``BENCH_CPROFILE=1`` the
pool process also runs under cProfile from start to shutdown (``<dir>/prof-<pid>.pstats``). Nothing
in the engine is changed or imported early: the hooks are Celery signals.
"""

from __future__ import annotations

import cProfile
import io
import json
import os
import pstats
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

EXECUTOR_PREFIX = "workers.execute"  # the one executor task (workflows/registry.py EXECUTOR_TASK)
COORDINATOR = "workflows.coordinate"

# --- in the worker ----------------------------------------------------------------------------------

_current: dict[str, Any] | None = None
_profiler: cProfile.Profile | None = None
_out_dir: Path | None = None


def _note(kind: str, sql: str, started: float, many: bool = False, autocommit: bool = False) -> None:
    if _current is not None:
        _current["statements"].append({"sql": sql, "ms": (time.perf_counter() - started) * 1000, "kind": kind,
                                       "many": many, "autocommit": autocommit})


def _sql_wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
    started = time.perf_counter()
    connection = context.get("connection") if isinstance(context, dict) else None
    autocommit = bool(connection is not None and not connection.in_atomic_block)
    try:
        return execute(sql, params, many, context)
    finally:
        _note("sql", sql, started, many, autocommit)


def _patch_transactions() -> None:
    from django.db.backends.base.base import BaseDatabaseWrapper

    original_commit = BaseDatabaseWrapper.commit
    original_autocommit = BaseDatabaseWrapper.set_autocommit

    def commit(self: Any) -> None:
        started = time.perf_counter()
        try:
            return original_commit(self)
        finally:
            _note("tx", "COMMIT", started)

    def set_autocommit(self: Any, autocommit: bool, *args: Any, **kwargs: Any) -> None:
        if not autocommit:  # psycopg sends BEGIN with the transaction's first statement
            _note("tx", "BEGIN", time.perf_counter())
        return original_autocommit(self, autocommit, *args, **kwargs)

    BaseDatabaseWrapper.commit = commit
    BaseDatabaseWrapper.set_autocommit = set_autocommit

    from django.db.backends.postgresql.base import DatabaseWrapper

    original_connect = DatabaseWrapper.connect
    original_usable = DatabaseWrapper.is_usable

    def connect(self: Any) -> None:
        started = time.perf_counter()
        try:
            return original_connect(self)
        finally:
            _note("connect", "CONNECT (a new PostgreSQL connection: TCP, startup, backend fork, settings)", started)

    def is_usable(self: Any) -> bool:
        started = time.perf_counter()
        try:
            return original_usable(self)
        finally:
            _note("sql", "SELECT 1 (CONN_HEALTH_CHECKS)", started)

    DatabaseWrapper.connect = connect
    DatabaseWrapper.is_usable = is_usable


VARIANTS = ("reuse_db", "inline_coordinate", "no_sent_event", "no_push")


def install_variant(names: str) -> None:
    """What-ifs for the report's suggestions, applied in the AOB worker only (no engine change);
    ``names`` is a comma-separated list.

    ``reuse_db``: keep Django's database connection across tasks (Celery's Django fix-up closes it
    before and after each task unless ``CELERY_DB_REUSE_MAX`` is set); ``close_old_connections()``
    runs before each task, as Django does per request. (Production does this since 643344b.)

    ``inline_coordinate``: an executor task does not send its link; the worker process calls the
    coordinator itself right after the task returned (where Celery would have published the
    link), with the same argument. Duplicates and lost decisions are handled as with the link:
    ``consumed`` under the run lock, and the sweeper's re-send of unconsumed finished node runs.

    ``no_push``: events are stored as always but not pushed to the channel layer (what the live
    WebSocket push costs the workers).

    ``no_sent_event``: ``task_send_sent_event`` off for what this worker publishes (the task
    events of ``worker_send_task_events`` stay on). (Production does this since c13c97c.)
    """
    from celery import signals

    chosen = [n for n in names.split(",") if n]
    unknown = set(chosen) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown BENCH_VARIANT {', '.join(sorted(unknown))}")

    if "reuse_db" in chosen:
        @signals.worker_init.connect(weak=False)
        def _no_recycling(sender: Any = None, **_: Any) -> None:
            for fixup in getattr(sender.app, "_fixups", []):
                worker_fixup = getattr(fixup, "_worker_fixup", None) or getattr(fixup, "worker_fixup", None)
                if worker_fixup is not None:
                    worker_fixup.db_reuse_max = 10**9

        @signals.task_prerun.connect(weak=False)
        def _django_request_like(**_: Any) -> None:
            from django.db import close_old_connections

            close_old_connections()

    if "no_sent_event" in chosen:
        @signals.worker_process_init.connect(weak=False)
        def _no_sent_event(**_: Any) -> None:
            from celery import current_app

            current_app.conf.task_send_sent_event = False

    if "no_push" in chosen:
        @signals.worker_process_init.connect(weak=False)
        def _no_push(**_: Any) -> None:
            from workflows.engine import events

            events.push = lambda *args, **kwargs: None

    if "inline_coordinate" in chosen:
        @signals.task_prerun.connect(weak=False)
        def _drop_link(task: Any = None, **_: Any) -> None:
            if task is not None and task.name.startswith(EXECUTOR_PREFIX):
                task.request.callbacks = None  # read by Celery's tracer after the body returns

        @signals.task_postrun.connect(weak=False)
        def _coordinate_here(task: Any = None, args: Any = None, retval: Any = None, state: str | None = None,
                             **_: Any) -> None:
            if task is None or not task.name.startswith(EXECUTOR_PREFIX) or state != "SUCCESS" or not args:
                return
            from workflows.engine import coordinator
            from workflows.engine.completion import Completion

            try:
                coordinator.coordinate(args[0], Completion.from_message(retval))
            except Exception:
                import logging

                logging.getLogger(__name__).exception("bench.inline_coordinate_failed")


def install() -> None:
    from celery import signals

    if os.environ.get("BENCH_VARIANT"):
        install_variant(os.environ["BENCH_VARIANT"])
    if not os.environ.get("BENCH_PROFILE_DIR"):
        return

    @signals.worker_process_init.connect(weak=False)
    def _init(**_: Any) -> None:
        global _profiler, _out_dir
        _out_dir = Path(os.environ["BENCH_PROFILE_DIR"])
        _out_dir.mkdir(parents=True, exist_ok=True)
        _patch_transactions()
        if os.environ.get("BENCH_CPROFILE") == "1":
            _profiler = cProfile.Profile()
            _profiler.enable()

    @signals.task_prerun.connect(weak=False)
    def _prerun(task: Any = None, args: Any = None, **_: Any) -> None:
        global _current
        from django.db import connections

        connection = connections["default"]
        if _sql_wrapper not in connection.execute_wrappers:
            connection.execute_wrappers.append(_sql_wrapper)
        _current = {"task": task.name, "args": list(args or []), "start": time.time(),
                    "t0": time.perf_counter(), "statements": []}

    @signals.task_postrun.connect(weak=False)
    def _postrun(retval: Any = None, **_: Any) -> None:
        global _current
        record, _current = _current, None
        if record is None or _out_dir is None:
            return
        record["end"] = time.time()
        record["wall_ms"] = (time.perf_counter() - record.pop("t0")) * 1000
        record["retval"] = retval if isinstance(retval, str | int | type(None)) else repr(retval)
        with open(_out_dir / f"tasks-{os.getpid()}.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")

    @signals.worker_process_shutdown.connect(weak=False)
    def _shutdown(**_: Any) -> None:
        if _profiler is not None and _out_dir is not None:
            _profiler.disable()
            _profiler.dump_stats(str(_out_dir / f"prof-{os.getpid()}.pstats"))


def main() -> None:
    install()
    from celery.__main__ import main as celery_main

    sys.argv = ["celery", *sys.argv[1:]]
    celery_main()


# --- analysis (in the bench) -------------------------------------------------------------------------

def load_tasks(directory: Path) -> list[dict[str, Any]]:
    records = []
    for path in sorted(directory.glob("tasks-*.jsonl")):
        records += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return records


_SPACES = re.compile(r"\s+")
_WRITES = re.compile(r"\b(INSERT|UPDATE|DELETE)\b", re.IGNORECASE)
_IN_LIST = re.compile(r"IN \((%s(, )?)+\)")
_VALUES = re.compile(r"VALUES (\((%s|[^()]*)\)(, )?)+")


def normalize(sql: str) -> str:
    text = _SPACES.sub(" ", sql).strip()
    text = _IN_LIST.sub("IN (…)", text)
    return _VALUES.sub("VALUES (…)", text)


def label(sql: str, width: int = 150) -> str:
    text = normalize(sql)
    return text if len(text) <= width else text[: width - 1] + "…"


def _typical(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The most common statement sequence among ``records`` and its median timings."""
    if not records:
        return {"count": 0}
    sequences = Counter(tuple(normalize(s["sql"]) for s in r["statements"]) for r in records)
    sequence, seen = sequences.most_common(1)[0]
    matching = [r for r in records if tuple(normalize(s["sql"]) for s in r["statements"]) == sequence]
    rows = []
    for i, sql in enumerate(sequence):
        first = matching[0]["statements"][i]
        rows.append({"sql": sql, "kind": first["kind"], "autocommit": first.get("autocommit", False),
                     "median_ms": statistics.median(r["statements"][i]["ms"] for r in matching)})
    sql_only = [s for s in rows if s["kind"] == "sql"]
    # each statement outside an atomic block is a transaction of its own (and a WAL flush if it writes)
    autocommitted = [s for s in sql_only if s["autocommit"] and _WRITES.search(s["sql"])]
    return {
        "count": len(records), "typical_share": seen / len(records),
        "statements": len(sql_only),
        "transactions": sum(1 for s in rows if s["sql"] == "COMMIT") + len(autocommitted),
        "autocommit_writes": len(autocommitted),
        "connects": sum(1 for s in rows if s["kind"] == "connect"),
        "round_trips": len(sql_only) + sum(1 for s in rows if s["sql"] == "COMMIT")
        + sum(1 for s in rows if s["sql"] == "BEGIN"),
        "wall_ms_median": statistics.median(r["wall_ms"] for r in records),
        "db_ms_median": statistics.median(sum(s["ms"] for s in r["statements"]) for r in records),
        "rows": rows,
    }


def node_run_of(record: dict[str, Any]) -> int:
    """A coordinator task's node run: ``(node_run_id,)`` sent directly, ``(facts, node_run_id)`` as a link."""
    return record["args"][-1]


def hop_anatomy(records: list[dict[str, Any]], nodes: dict[int, tuple[str, str, float, float]]) -> dict[str, Any]:
    """Split each chain hop n<k> → n<k+1> into its parts (medians, ms), from the task records.

    ``nodes``: ``{node_run_id: (run_id, node_id, started_at, finished_at)}`` of the profiled chains.
    """
    executors = {r["args"][0]: r for r in records if r["task"].startswith(EXECUTOR_PREFIX) and r["args"]}
    coordinators = {node_run_of(r): r for r in records if r["task"] == COORDINATOR and r["args"]}
    by_key = {(run_id, node_id): pk for pk, (run_id, node_id, _, _) in nodes.items()}
    parts: dict[str, list[float]] = {k: [] for k in (
        "executor: finished_at -> task end (commit, link publish)",
        "broker: executor end -> coordinator task start",
        "coordinator task",
        "broker: coordinator end -> next executor task start",
        "next executor: task start -> started_at (claim)")}
    total: list[float] = []
    for a, (run_id, node_id, _, finished_a) in nodes.items():
        b = by_key.get((run_id, f"n{int(node_id[1:]) + 1:02d}")) if node_id.startswith("n") else None
        ea, c, eb = executors.get(a), coordinators.get(a), executors.get(b)
        if b is None or not (ea and c and eb):
            continue
        started_b = nodes[b][2]
        values = [ea["end"] - finished_a, c["start"] - ea["end"], c["end"] - c["start"], eb["start"] - c["end"],
                  started_b - eb["start"]]
        for key, value in zip(parts, values, strict=True):
            parts[key].append(value * 1000)
        total.append((started_b - finished_a) * 1000)
    return {"hops": len(total), "hop_ms": statistics.median(total) if total else None,
            "parts": {key: statistics.median(v) if v else None for key, v in parts.items()}}


def analyze(records: list[dict[str, Any]], middle_ids: set[int]) -> dict[str, Any]:
    """Statements of the executor and coordinator tasks of middle chain nodes (not the first node,
    which also moves the run to running, nor the last, which completes it)."""
    executor = [r for r in records if r["task"].startswith(EXECUTOR_PREFIX) and r["args"]
                and r["args"][0] in middle_ids]
    coordinator = [r for r in records if r["task"] == COORDINATOR and r["args"] and node_run_of(r) in middle_ids]
    return {"executor": _typical(executor), "coordinator": _typical(coordinator)}


# Where a hop's CPU goes, by the functions that name the parts (a regex for pstats).
FOCUS = (r"fast_trace_task|\(execute\)|\(claim\)|\(complete\)|\(coordinate\)|\(save\)|\(append\)|"
         r"\(connect\)|ensure_connection|\(commit\)|send_task|_dispatch_callbacks|send_task_message|"
         r"\(publish\)|\(send\)|\(handle\)|ir_for|\(resolve\)|run_transform|\(evaluate\)|"
         r"bulk_create|_fetch_all|\(update\)|execute_sql|on_commit|\(push\)|\(submit\)|"
         r"on_task_prerun|on_task_postrun|close_database|\(observe\)|\(inc\)")


def cprofile_report(directory: Path, limit: int = 40, save_to: Path | None = None) -> str:
    files = sorted(directory.glob("prof-*.pstats"))
    if not files:
        return "(no cProfile data)"
    stats = pstats.Stats(str(files[0]))
    for path in files[1:]:
        stats.add(str(path))
    if save_to is not None:
        stats.dump_stats(str(save_to))
    out = io.StringIO()
    stats.stream = out
    out.write(f"cProfile of {len(files)} pool processes, merged. Time in posix.read inside the pool's "
              "workloop is idle waiting for the next task.\n\n== focus: the parts of a hop (cumulative) ==\n")
    stats.strip_dirs().sort_stats("cumulative").print_stats(FOCUS, 60)
    out.write("\n== top by internal time ==\n")
    stats.sort_stats("tottime").print_stats(limit)
    out.write("\n== top by cumulative time ==\n")
    stats.sort_stats("cumulative").print_stats(limit)
    return out.getvalue()


if __name__ == "__main__":
    main()
