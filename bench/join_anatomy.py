"""Where a fan-out's join delay goes (issue 20): fan-outs on the probe worker (``bench.join_probe``),
then, per fan-out, the last parent's finish, its executor's end, its coordinator message (sent,
received by the worker, started), the coordinator that emitted the join and the join's message and
claim, with every pool process's tasks around it; medians at the end, and chains of 20 for the hop.

    .venv/bin/python -m bench.join_anatomy [fanouts] [width]       # JOIN_PGLOG=1: server-side statement times
    JOIN_WORKER_ARGS="--prefetch-multiplier 2" .venv/bin/python -m bench.join_anatomy    # a worker what-if

A stack of its own (PostgreSQL, Redis, beat, the probe worker), like the bench's; not timed by it.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
from collections import defaultdict
from typing import Any

from bench.stack import Stack, log


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    width = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    stack = Stack()
    try:
        env = stack.start_services()
        stack.migrate()
        os.environ.update(env)
        import django

        django.setup()
        directory = stack.root / "probe"
        shutil.rmtree(directory, ignore_errors=True)
        wenv = dict(stack.env, BENCH_PROFILE_DIR=str(directory), BENCH_CPROFILE="0")
        stack.spawn("beat", [sys.executable, "-m", "celery", "-A", "aob_project", "beat", "--loglevel", "INFO",
                             "--schedule", str(stack.root / "celerybeat-schedule")])
        extra = os.environ.get("JOIN_WORKER_ARGS", "").split()  # a what-if, e.g. "--prefetch-multiplier 2"
        if os.environ.get("JOIN_SPLIT"):  # a what-if: one process for the coordinator queue, one for the rest
            from aob_project.celery import COORDINATOR_QUEUE, STATIC_QUEUES

            argv = stack.aob_worker_argv(module=["-m", "bench.join_probe"])
            rest = ",".join(q for q in STATIC_QUEUES if q != COORDINATOR_QUEUE)
            queues = argv.index("-Q") + 1
            executors = [*argv[:queues], rest, *argv[queues + 1:]]
            executors[executors.index("-c") + 1] = "1"
            coordinators = [a for a in executors if a not in ("--node-types", "*")]
            coordinators[coordinators.index("-Q") + 1] = COORDINATOR_QUEUE
            coordinators[coordinators.index("-n") + 1] = "coord@%h"
            stack.spawn("aob-worker", executors, wenv).wait_for_line("ready.")
            stack.spawn("aob-coordinator", coordinators, wenv).wait_for_line("ready.")
        elif extra:
            stack.spawn("aob-worker", [*stack.aob_worker_argv(module=["-m", "bench.join_probe"]), *extra],
                        wenv).wait_for_line("ready.")
        else:
            stack.start_aob_worker(module=["-m", "bench.join_probe"], env=wenv)
        from bench import aob
        from workflows.models import NodeRun

        owner = aob.bench_user()
        if os.environ.get("JOIN_PGLOG"):
            from django.db import connection

            with connection.cursor() as c:
                c.execute("ALTER SYSTEM SET log_min_duration_statement = 0")
                c.execute("SELECT pg_reload_conf()")
        aob.run_chains(owner, 5, 2)
        aob.run_fanouts(owner, 4, 2)
        warm = set(NodeRun.objects.values_list("pk", flat=True))
        delays = aob.run_fanouts(owner, width, count)["join_delay_ms"]
        hops = aob.run_chains(owner, 20, 3)["hop_ms"]
        stack.stop_child("aob-worker")
        stack.stop_child("aob-coordinator")
        analyse(directory, warm, delays, hops)
        if os.environ.get("JOIN_PGLOG"):
            pglog(stack.postgres.log_path)
    finally:
        stack.stop()


def pglog(path: Any) -> None:
    import re

    kinds: dict[str, list[float]] = defaultdict(list)
    pat = re.compile(r"duration: ([0-9.]+) ms\s+(parse|bind|execute)[^:]*: (.*)")
    entries: list[str] = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(("\t", " ")) and entries:
            entries[-1] += " " + line.strip()
        else:
            entries.append(line)
    for line in entries:
        m = pat.search(line)
        if not m:
            continue
        sql = m.group(3).strip()
        name = ("JOIN_STEP" if "absorbable" in sql else "CHAIN_STEP" if "jsonb_to_recordset(" in sql and "locked AS" in sql
                else "END_STEP" if "others AS" in sql else "LOCK_RUN" if sql.startswith("SELECT id FROM workflows_run")
                else sql[:60])
        kinds[f"{m.group(2)} {name}"].append(float(m.group(1)))
    for k, v in sorted(kinds.items(), key=lambda kv: -len(kv[1]))[:25]:
        print(f"  pg {k:75s} n={len(v):5d} p50 {statistics.median(v):.3f} ms")


def ms(a: float, b: float) -> str:
    return f"{(b - a) * 1000:7.2f}"


def analyse(directory: Any, warm: set[int], delays: list[float], hops: list[float]) -> None:
    from bench import profiling
    from workflows.models import NodeRun

    by_pid: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for path in sorted(directory.glob("tasks-*.jsonl")):
        pid = path.stem.split("-")[1]
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            rec["pid"] = pid
            by_pid[pid].append(rec)
    records = [r for rs in by_pid.values() for r in rs]
    msgs: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for path in sorted(directory.glob("msgs-*.jsonl")):
        for line in path.read_text().splitlines():
            m = json.loads(line)
            m["pid"] = path.stem.split("-")[1]
            msgs[m["target"]].append(m)
    for v in msgs.values():
        v.sort(key=lambda m: m["t"])
    execs = {r["args"][0]: r for r in records if r["task"].startswith(profiling.EXECUTOR_PREFIX) and r["args"]}
    coords: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r["task"] == profiling.COORDINATOR and r["args"]:
            coords[profiling.node_run_of(r)].append(r)
    rows = list(NodeRun.objects.exclude(pk__in=warm).values_list(
        "pk", "run_id", "node_id", "queued_at", "dispatched_at", "started_at", "finished_at"))
    runs: dict[Any, dict[str, Any]] = defaultdict(dict)
    for pk, run, node_id, q, d, s, f in rows:
        runs[run][node_id] = {"pk": pk, "q": q.timestamp(), "d": d.timestamp() if d else None,
                              "s": s.timestamp(), "f": f.timestamp()}
    summary: dict[str, list[float]] = defaultdict(list)
    for run, nodes in runs.items():
        if "join" not in nodes:
            continue
        parents = {k: v for k, v in nodes.items() if k.startswith("m")}
        last_id = max(parents, key=lambda k: parents[k]["f"])
        last = parents[last_id]
        join = nodes["join"]
        ex_last = execs.get(last["pk"])
        ex_join = execs.get(join["pk"])
        # the coordinator that emitted the join: the last parent's coordinator to end before the
        # join's executor started (a heuristic; the timeline below shows the rest)
        parent_pks = {v["pk"]: k for k, v in parents.items()}
        pcoords = sorted((c for pk in parent_pks for c in coords.get(pk, [])), key=lambda c: c["start"])
        emitter = None
        if ex_join:
            cands = [c for c in pcoords if c["end"] <= ex_join["start"] + 0.0005]
            emitter = cands[-1] if cands else None
        t0 = last["f"]
        print(f"\n=== run {str(run)[:8]}: join delay {(join['s'] - t0) * 1000:.2f} ms; last parent {last_id}")
        print(f"  last parent executor end      +{ms(t0, ex_last['end']) if ex_last else '?'}")
        for m in msgs.get(last["pk"], []) + msgs.get(join["pk"], []):
            print(f"    msg {m['kind']:9s} {m['task'][:20]:20s} target {m['target']} +{ms(t0, m['t'])} pid {m['pid']}")
        lc = coords.get(last["pk"], [])
        for c in lc:
            print(f"  last parent's coordinator     start +{ms(t0, c['start'])} end +{ms(t0, c['end'])} pid {c['pid']}"
                  f" parts {[(p['part'], round((p['end'] - p['start']) * 1000, 2), p['result']) for p in c.get('parts', [])]}")
        if emitter:
            print(f"  emitter? coordinator of {parent_pks[profiling.node_run_of(emitter)]} start +{ms(t0, emitter['start'])}"
                  f" end +{ms(t0, emitter['end'])} pid {emitter['pid']}")
        print(f"  join queued_at +{ms(t0, join['q'])} dispatched +{ms(t0, join['d'])}"
              f" exec start +{ms(t0, ex_join['start']) if ex_join else '?'} started_at +{ms(t0, join['s'])}")
        # timelines of both processes from t0 - 10 ms to join start
        for pid, recs in sorted(by_pid.items()):
            print(f"  pid {pid}:")
            for r in recs:
                if r["end"] < t0 - 0.010 or r["start"] > join["s"] + 0.002:
                    continue
                if not r["args"]:
                    print(f"    {r['task']} +{ms(t0, r['start'])} .. +{ms(t0, r['end'])}")
                    continue
                target = r["args"][0] if r["task"].startswith(profiling.EXECUTOR_PREFIX) else profiling.node_run_of(r)
                name = next((k for k, v in nodes.items() if v["pk"] == target), str(target))
                kind = "exec " if r["task"].startswith(profiling.EXECUTOR_PREFIX) else "coord"
                parts = [(p["part"], round((p["start"] - t0) * 1000, 2), round((p["end"] - p["start"]) * 1000, 2),
                          p["result"]) for p in r.get("parts", [])]
                print(f"    {kind} {name:5s} +{ms(t0, r['start'])} .. +{ms(t0, r['end'])} {parts}")
        lm = {m["kind"] + ":" + m["task"][:8]: m["t"] for m in msgs.get(last["pk"], [])}
        jm = {m["kind"] + ":" + m["task"][:8]: m["t"] for m in msgs.get(join["pk"], [])}
        if "sent:workflow" in lm and "received:workflow" in lm:
            sent, received = lm["sent:workflow"], lm["received:workflow"]
            summary["last coord msg sent"].append((sent - t0) * 1000)
            summary["last coord msg sent->received"].append((received - sent) * 1000)
            # when each pool process was next free after the message was sent
            frees = []
            for recs in by_pid.values():
                busy = [r for r in recs if r["start"] <= sent <= r["end"]]
                frees.append(busy[0]["end"] if busy else sent)
            summary["sent->first process free"].append((min(frees) - sent) * 1000)
            summary["first process free->received"].append((received - min(frees)) * 1000)
            summary["both busy at send"].append(1.0 if min(frees) > sent else 0.0)
        if "sent:workers." in jm and "received:workers." in jm:
            summary["join msg sent->received"].append((jm["received:workers."] - jm["sent:workers."]) * 1000)
            summary["join msg received->exec start"].append(((ex_join or {}).get("start", 0) - jm["received:workers."]) * 1000)
        emitter_is_last = bool(emitter) and profiling.node_run_of(emitter) == last["pk"]
        summary["emitted by the last parent's coordinator"].append(1.0 if emitter_is_last else 0.0)
        summary["delay"].append((join["s"] - t0) * 1000)
        if ex_last:
            summary["last exec end"].append((ex_last["end"] - t0) * 1000)
        if lc:
            summary["last coord start"].append((lc[0]["start"] - t0) * 1000)
            summary["last coord dur"].append((lc[0]["end"] - lc[0]["start"]) * 1000)
        summary["join queued"].append((join["q"] - t0) * 1000)
        if ex_join:
            summary["join exec start"].append((ex_join["start"] - t0) * 1000)
    print("\nmedians (ms from last parent's finished_at):")
    for k, v in summary.items():
        print(f"  {k:42s} p50 {statistics.median(v):7.2f} mean {statistics.mean(v):7.2f} ({min(v):.2f}–{max(v):.2f}) n={len(v)}")
    chain = {v["pk"]: (str(run), k, v["s"], v["f"]) for run, nodes in runs.items() if "n00" in nodes
             for k, v in nodes.items()}
    link = []
    for pk in chain:
        mm = {m["kind"] + ":" + m["task"][:8]: m["t"] for m in msgs.get(pk, [])}
        if "sent:workflow" in mm and "received:workflow" in mm:
            link.append((mm["received:workflow"] - mm["sent:workflow"]) * 1000)
    if link:
        print(f"chain: coordinator msg sent->received p50 {statistics.median(link):.2f} mean {statistics.mean(link):.2f} n={len(link)}")
    print("chain anatomy:", json.dumps(profiling.hop_anatomy(records, chain), indent=1))
    print(f"bench delays p50 {statistics.median(delays):.2f}; chain hop p50 {statistics.median(hops):.2f}")
    # coordinator task stats by outcome
    outcomes: dict[str, list[float]] = defaultdict(list)
    for r in records:
        if r["task"] != profiling.COORDINATOR:
            continue
        parts = r.get("parts", [])
        key = "+".join(f"{p['part']}={p['result']}" for p in parts if p["part"] in ("step_plain", "decide", "locked_statement"))
        outcomes[key].append(r["wall_ms"])
    for k, v in sorted(outcomes.items(), key=lambda kv: -len(kv[1])):
        print(f"  coord {k:70s} n={len(v):4d} wall p50 {statistics.median(v):.2f}")
    log("done")


if __name__ == "__main__":
    main()
