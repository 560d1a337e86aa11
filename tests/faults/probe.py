"""The workflow every fault is tried on, and the accounting of what a trial lost or doubled.

The probe takes each kind of decision the coordinator makes: a fan-out (chain step), a join
(join step), a branch rule (the full decision, under the run lock), the end of a branch (end
step) and a skipped branch. Its http nodes POST to the test's remote at a path of their own, so
the remote counts each node's effect; node ids carry the run's tag, so a kill point or a dropped
publish marked for a node id hits exactly one run.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tests.conftest import TERMINAL
from tests.support.remote import RemoteServer
from workflows.models import Event, NodeRun, Run

from .harness import Outcome

# node: what it is; the effect nodes are the http ones
PROBE = {"a": "http", "b": "transform", "c": "http", "j": "transform", "d": "http", "e": "transform"}
EXPECTED = {"a": "completed", "b": "completed", "c": "completed", "j": "completed", "d": "completed",
            "e": "skipped"}


@dataclass
class Probe:
    tag: str
    definition: dict[str, Any]
    effects: dict[str, str]  # node id -> the remote path its POST counts under

    def id(self, node: str) -> str:
        return f"{node}_{self.tag}"


def probe(base: str, tag: str, *, hold_c: bool = False, keyed: bool = True) -> Probe:
    """With ``hold_c``, c's request is answered only once the test calls ``remote.release(hold_key(tag))``.
    Without ``keyed`` (a negative control), the http nodes send no ``Idempotency-Key``
    (``idempotency_header: false``) and repeat a request lost with its worker all the same
    (``on_lost: repeat``), as a client that cannot be deduplicated would."""
    def n(node: str) -> str:
        return f"{node}_{tag}"

    paths = {node: f"/echo/fx/{tag}/{node}" for node in ("a", "c", "d")}
    if hold_c:
        paths["c"] = f"/hold/{hold_key(tag)}"

    def post(node: str) -> dict[str, Any]:
        config = {"url": f"{base}{paths[node]}", "method": "POST", "payload": {"node": node}}
        if not keyed:
            config.update(idempotency_header=False, on_lost="repeat")
        return {"id": n(node), "type": "http", "config": config}

    def transform(node: str, expression: str) -> dict[str, Any]:
        # on a worker (``dispatch: "queue"``): every node of the probe is a hop an executor, a
        # publish and a decision can die in; evaluated in the decision it would be none of them
        return {"id": n(node), "type": "transform", "config": {"expression": expression, "dispatch": "queue"}}

    definition = {
        "nodes": [post("a"), transform("b", f"nodes.{n('a')}.status_code"), post("c"),
                  transform("j", f"nodes.{n('b')} + nodes.{n('c')}.status_code"), post("d"),
                  transform("e", "'not taken'")],
        "edges": [{"from": n("a"), "to": n("b")}, {"from": n("a"), "to": n("c")},
                  {"from": n("b"), "to": n("j")}, {"from": n("c"), "to": n("j")},
                  {"from": n("j"), "to": n("d"), "condition": "output == 400"}, {"from": n("j"), "to": n("e")}],
    }
    return Probe(tag, definition, paths)


def hold_key(tag: str) -> str:
    return f"fx-{tag}-c"


def settle(run_ids: list[str], timeout: float) -> None:
    """Wait until every run has ended, or the timeout (what has not ended by then is lost)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Run.objects.filter(pk__in=run_ids).exclude(status__in=TERMINAL).exists():
            return
        time.sleep(0.1)


def account(run_ids: list[str], probes: list[Probe], remote: RemoteServer, fault_at: float, *,
            resend_ok: bool = False, expected: dict[str, str] = EXPECTED, dedupe_by: str | None = None) -> Outcome:
    """What the trial cost. A run is lost unless it completed with every node as the graph says;
    an effect is doubled when a node run key has two rows, a node two ``node_completed`` events or
    the remote two effects for one node. With ``resend_ok`` extra requests are counted as re-sent
    instead of doubled. With ``dedupe_by`` (a header, e.g. ``Idempotency-Key``) the remote is one
    that honours it, as ``tests/support/remote.py``'s ``/effect`` does: requests repeating a value
    are counted as re-sent, and each distinct value (or request without the header) is an effect."""
    outcome = Outcome(runs=len(run_ids))
    ends: list[datetime] = []
    for p, run_id in zip(probes, run_ids, strict=True):
        run = Run.objects.get(pk=run_id)
        rows = Counter(NodeRun.objects.filter(run=run).values_list("node_id", "iteration"))
        completions = Counter(Event.objects.filter(run=run, type="node_completed").values_list("node_id", flat=True))
        statuses = {node: NodeRun.objects.filter(run=run, node_id=p.id(node)).order_by("-iteration")
                    .values_list("status", flat=True).first() for node in expected}
        if run.status != "completed" or statuses != expected:
            outcome.lost += 1
            outcome.detail.append(f"run {run_id} ({p.tag}) {run.status}: {statuses}")
        elif run.finished_at:
            ends.append(run.finished_at)
        for (node_id, iteration), count in rows.items():
            if count > 1:
                outcome.doubled += count - 1
                outcome.detail.append(f"{node_id}#{iteration}: {count} node runs")
        for node_id, count in completions.items():
            if count > 1:
                outcome.doubled += count - 1
                outcome.detail.append(f"{node_id}: completed {count} times")
        for node, path in p.effects.items():
            requests = remote.hits(path)
            hits = len(requests)
            if dedupe_by is not None:  # requests without the header are an effect each
                keys = [next((v for h, v in r["headers"].items() if h.lower() == dedupe_by.lower()), None)
                        for r in requests]
                effects = len({k for k in keys if k}) + sum(1 for k in keys if not k)
                outcome.resent += hits - effects
                hits = effects
            if hits > 1:
                if resend_ok:
                    outcome.resent += hits - 1
                else:
                    outcome.doubled += hits - 1
                    outcome.detail.append(f"{p.id(node)}: the remote saw {hits} requests")
    if ends and not outcome.lost:
        outcome.recover_s = max(0.0, max(e.timestamp() for e in ends) - fault_at)
    return outcome
