"""Who wrote which nodes and edges of a run's definition: the author (and people's patches) or an
agent node.

Agents are untrusted, and what an agent writes into the definition is read by every later agent
of the run (``agents.view``), so the run must know which text is an agent's. Each applied patch
keeps what it changed (``RunPatch.wrote``), measured once, when it is applied, on the definitions
before and after it (the only moment both are at hand and in the order they were applied). A
patch that names a proposing node is an agent's, whoever carries it, an approver included: an
approval says the change may happen, not that its text is the approver's.

``agent_written`` folds the run's applied patches, in the order they were applied, into the
writer of each node and edge agents wrote: one query, small rows. A person's patch that changes
an agent's node leaves it the agent's (the rest of its text still is); a node removed is
forgotten, so one a person adds again under the same id is the person's. A replay starts from
its source's definition: the source's patches (and its source's, ``REPLAY_DEPTH`` deep) are folded
first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from workflows.models import Run, RunPatch, canonical_json


def edge_key(edge: dict[str, Any]) -> str:
    """An edge has no id: it is known by what it is."""
    return canonical_json(edge)


def patch_wrote(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[str]]:
    """What a patch changed of the definition: node ids added, changed and removed, edges added
    and removed. Nodes are compared as stored (canonical JSON), so ``1`` to ``true`` is a change."""
    old = {n["id"]: canonical_json(n) for n in before.get("nodes", [])}
    new = {n["id"]: canonical_json(n) for n in after.get("nodes", [])}
    old_edges = {edge_key(e) for e in before.get("edges", [])}
    new_edges = {edge_key(e) for e in after.get("edges", [])}
    return {"added": sorted(new.keys() - old.keys()),
            "changed": sorted(i for i in new.keys() & old.keys() if new[i] != old[i]),
            "removed": sorted(old.keys() - new.keys()),
            "edges_added": sorted(new_edges - old_edges), "edges_removed": sorted(old_edges - new_edges)}


@dataclass(frozen=True)
class Written:
    """The agent node that last wrote each node (by id) and edge (by ``edge_key``) agents wrote."""

    nodes: dict[str, str] = field(default_factory=dict)
    edges: dict[str, str] = field(default_factory=dict)


NOBODY = Written()


# How far back a replay's chain of sources is followed (a replay of a replay of …): a replay's
# base is its source's definition, and what agents wrote there is still theirs.
REPLAY_DEPTH = 20


def _chain(run_id: Any) -> list[tuple[Any, Any]]:
    """(run, the moment its replay started) from the oldest source followed to ``run_id`` (None:
    every patch of its own), so a source's patches count up to the replay's start, as its base had them."""
    chain: list[tuple[Any, Any]] = [(run_id, None)]
    at = run_id
    for _ in range(REPLAY_DEPTH):
        row = Run.objects.filter(pk=at).values_list("replay_of_id", "created_at").first()
        if row is None or row[0] is None:
            break
        at, started = row
        chain.append((at, started))
    return chain[::-1]


def agent_written(run_id: Any) -> Written:
    """The fold of the applied patches of the run, after those of the runs it replays (each up to
    the start of the replay of it), in the order they were applied."""
    nodes: dict[str, str] = {}
    edges: dict[str, str] = {}
    for source, until in _chain(run_id):
        patches = RunPatch.objects.filter(run_id=source, status=RunPatch.Status.APPLIED)
        if until is not None:
            patches = patches.filter(applied_at__lte=until)
        for writer, wrote in patches.order_by("applied_at", "seq").values_list("node_id", "wrote"):
            _fold(nodes, edges, writer, wrote)
    return Written(nodes=nodes, edges=edges)


def _fold(nodes: dict[str, str], edges: dict[str, str], writer: str, wrote: dict[str, Any]) -> None:
    for node_id in wrote.get("removed", []):
        nodes.pop(node_id, None)
    for key in wrote.get("edges_removed", []):
        edges.pop(key, None)
    if writer:
        nodes.update(dict.fromkeys([*wrote.get("added", []), *wrote.get("changed", [])], writer))
        edges.update(dict.fromkeys(wrote.get("edges_added", []), writer))
    else:
        for node_id in wrote.get("added", []):
            nodes.pop(node_id, None)
