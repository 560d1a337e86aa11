"""AOB's side of the scenarios: definitions, submitting runs, and reading the stored timings.

Needs Django set up (the bench does it after its stack is up; the smoke test runs inside
pytest-django). Runs are submitted with ``workflows.services.runs.run_start``, what the API's
execute calls, from this process; the workers are separate processes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token

from workflows.models import NodeRun, Run
from workflows.services.runs import run_start

TERMINAL = {Run.Status.COMPLETED, Run.Status.FAILED, Run.Status.CANCELLED}
# Called on every poll while waiting (the bench checks that its processes are alive): a dead
# worker ends the wait at once instead of at its timeout.
watchdog: Callable[[], None] | None = None


def _watch() -> None:
    if watchdog is not None:
        watchdog()
# Worker nodes: a transform that asks for the queue, so every hop is a real queue hop (issue 20:
# pure transforms otherwise run inside the decision). ``PURE``: the same node left to the decision.
EXPRESSION = {"expression": "1", "dispatch": "queue"}
PURE = {"expression": "1"}


def chain_definition(length: int, pure: bool = False) -> dict[str, Any]:
    ids = [f"n{k:02d}" for k in range(length)]
    config = PURE if pure else EXPRESSION
    return {"nodes": [{"id": i, "type": "transform", "config": dict(config)} for i in ids],
            "edges": [{"from": a, "to": b} for a, b in zip(ids, ids[1:], strict=False)],
            "metadata": {"bench": f"chain-{length}{'-pure' if pure else ''}"}}


def fanout_definition(width: int) -> dict[str, Any]:
    members = [f"m{k:02d}" for k in range(width)]
    nodes = [{"id": "root", "type": "transform", "config": dict(EXPRESSION)}]
    nodes += [{"id": m, "type": "transform", "config": dict(EXPRESSION)} for m in members]
    nodes.append({"id": "join", "type": "transform", "config": dict(EXPRESSION)})
    edges = [{"from": "root", "to": m} for m in members] + [{"from": m, "to": "join"} for m in members]
    return {"nodes": nodes, "edges": edges, "metadata": {"bench": f"fanout-{width}"}}


def bench_user(username: str = "bench") -> User:
    user, _ = User.objects.get_or_create(username=username)
    Token.objects.get_or_create(user=user)
    return user


def submit(owner: User, definition: dict[str, Any]) -> str:
    return str(run_start(owner=owner, definition=definition, inputs={}).pk)


def wait_runs(run_ids: list[str], timeout: float) -> None:
    """Until every run is terminal; raises if one did not complete."""
    pending = set(run_ids)
    deadline = time.monotonic() + timeout
    while pending:
        finished = list(Run.objects.filter(pk__in=pending, status__in=TERMINAL).values_list("pk", "status"))
        bad = [(str(pk), status) for pk, status in finished if status != Run.Status.COMPLETED]
        if bad:
            raise RuntimeError(f"AOB runs did not complete: {bad[:5]}")
        pending -= {str(pk) for pk, _ in finished}
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} AOB runs unfinished after {timeout:.0f}s")
        _watch()
        time.sleep(0.05)


def wait_idle(timeout: float = 120.0) -> None:
    """Until no node run anywhere is queued or running (between scenarios)."""
    deadline = time.monotonic() + timeout
    active = [NodeRun.Status.QUEUED, NodeRun.Status.RUNNING]
    while NodeRun.objects.filter(status__in=active).exists() or Run.objects.filter(
            status__in=[Run.Status.QUEUED, Run.Status.RUNNING]).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"AOB still busy after {timeout:.0f}s")
        _watch()
        time.sleep(0.1)


def node_timings(run_ids: list[str]) -> dict[str, dict[str, tuple[float, float]]]:
    """``{run: {node_id: (started, finished)}}`` in epoch seconds, from NodeRun rows."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    rows = NodeRun.objects.filter(run_id__in=run_ids, status=NodeRun.Status.COMPLETED).values_list(
        "run_id", "node_id", "started_at", "finished_at")
    for run_id, node_id, started, finished in rows:
        out.setdefault(str(run_id), {})[node_id] = (started.timestamp(), finished.timestamp())
    return out


def chain_hops_ms(nodes: dict[str, tuple[float, float]], length: int) -> list[float]:
    """finished_at of n<k> → started_at of n<k+1>, for each k."""
    ids = [f"n{k:02d}" for k in range(length)]
    return [(nodes[b][0] - nodes[a][1]) * 1000 for a, b in zip(ids, ids[1:], strict=False)]


def fanout_join_delay_ms(nodes: dict[str, tuple[float, float]]) -> float:
    last_parent = max(finished for node_id, (_, finished) in nodes.items() if node_id.startswith("m"))
    return (nodes["join"][0] - last_parent) * 1000


def last_finish(nodes: dict[str, tuple[float, float]]) -> float:
    return max(finished for _, finished in nodes.values())


# --- scenario bodies (one repetition each) --------------------------------------------------------------

def run_chains(owner: User, length: int, count: int, timeout: float = 120.0,
               pure: bool = False) -> dict[str, list[float]]:
    """``count`` chains of ``length`` transform nodes, one after the other (``pure``: left to the
    decision, so only the first goes through a worker)."""
    definition = chain_definition(length, pure)
    hops: list[float] = []
    e2e: list[float] = []
    for _ in range(count):
        t0 = time.time()
        run_id = submit(owner, definition)
        wait_runs([run_id], timeout)
        nodes = node_timings([run_id])[run_id]
        if len(nodes) != length:
            raise RuntimeError(f"chain run {run_id}: {len(nodes)} of {length} nodes completed")
        hops += chain_hops_ms(nodes, length)
        e2e.append((last_finish(nodes) - t0) * 1000)
    return {"hop_ms": hops, "e2e_ms": e2e}


def run_fanouts(owner: User, width: int, count: int, timeout: float = 120.0) -> dict[str, list[float]]:
    definition = fanout_definition(width)
    delays: list[float] = []
    e2e: list[float] = []
    for _ in range(count):
        t0 = time.time()
        run_id = submit(owner, definition)
        wait_runs([run_id], timeout)
        nodes = node_timings([run_id])[run_id]
        if len(nodes) != width + 2:
            raise RuntimeError(f"fan-out run {run_id}: {len(nodes)} of {width + 2} nodes completed")
        delays.append(fanout_join_delay_ms(nodes))
        e2e.append((last_finish(nodes) - t0) * 1000)
    return {"join_delay_ms": delays, "e2e_ms": e2e}


def run_throughput(owner: User, runs: int, length: int, timeout: float = 600.0, pure: bool = False) -> dict[str, Any]:
    """``runs`` chains of ``length`` submitted at once; node transitions per second until all finish."""
    definition = chain_definition(length, pure)
    t0 = time.time()
    run_ids = [submit(owner, definition) for _ in range(runs)]
    submitted = time.time()
    wait_runs(run_ids, timeout)
    by_run = node_timings(run_ids)
    nodes = sum(len(n) for n in by_run.values())
    if nodes != runs * length:
        raise RuntimeError(f"throughput: {nodes} of {runs * length} nodes completed")
    end = max(last_finish(n) for n in by_run.values())
    hops = [h for n in by_run.values() for h in chain_hops_ms(n, length)]
    return {"nodes": nodes, "seconds": end - t0, "nodes_per_s": nodes / (end - t0),
            "hops_per_s": runs * (length - 1) / (end - t0), "submit_s": submitted - t0, "hop_ms": hops}
