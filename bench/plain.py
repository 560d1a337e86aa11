"""The plain-Celery side of the scenarios: the same shapes as ``bench.aob``, on ``bench.baseline``."""

from __future__ import annotations

import time
import uuid
from typing import Any

from bench import baseline


def _batch() -> str:
    return uuid.uuid4().hex[:12]


def _hops_ms(nodes: dict[int, tuple[float, float]], length: int) -> list[float]:
    return [(nodes[k + 1][0] - nodes[k][1]) * 1000 for k in range(length - 1)]


def _last_finish(nodes: dict[int, tuple[float, float]]) -> float:
    return max(finished for _, finished in nodes.values())


def run_chains(length: int, count: int, timeout: float = 120.0) -> dict[str, list[float]]:
    hops: list[float] = []
    e2e: list[float] = []
    for _ in range(count):
        batch = _batch()
        t0 = time.time()
        baseline.send_chain_node(batch, "r", 0, length)
        baseline.wait_done(batch, length, timeout)
        nodes = baseline.timings(batch)["r"]
        hops += _hops_ms(nodes, length)
        e2e.append((_last_finish(nodes) - t0) * 1000)
        baseline.reset(batch)
    return {"hop_ms": hops, "e2e_ms": e2e}


def run_fanouts(width: int, count: int, join: str, timeout: float = 120.0) -> dict[str, list[float]]:
    """``join`` is ``chord`` (Celery's) or ``counted`` (an INCR per parent; the last enqueues the join)."""
    delays: list[float] = []
    e2e: list[float] = []
    for _ in range(count):
        batch = _batch()
        t0 = time.time()
        baseline.send_fanout_root(batch, "r", width, join)
        baseline.wait_done(batch, width + 2, timeout)
        nodes = baseline.timings(batch)["r"]
        last_parent = max(nodes[k][1] for k in range(1, width + 1))
        delays.append((nodes[width + 1][0] - last_parent) * 1000)
        e2e.append((_last_finish(nodes) - t0) * 1000)
        baseline.reset(batch)
    return {"join_delay_ms": delays, "e2e_ms": e2e}


def run_throughput(runs: int, length: int, timeout: float = 600.0) -> dict[str, Any]:
    batch = _batch()
    t0 = time.time()
    for r in range(runs):
        baseline.send_chain_node(batch, str(r), 0, length)
    submitted = time.time()
    baseline.wait_done(batch, runs * length, timeout)
    by_run = baseline.timings(batch)
    nodes = sum(len(n) for n in by_run.values())
    end = max(_last_finish(n) for n in by_run.values())
    hops = [h for n in by_run.values() for h in _hops_ms(n, length)]
    baseline.reset(batch)
    return {"nodes": nodes, "seconds": end - t0, "nodes_per_s": nodes / (end - t0),
            "hops_per_s": runs * (length - 1) / (end - t0), "submit_s": submitted - t0, "hop_ms": hops}
