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
its source's definition: what its source's fold came to, and the version the source's oldest
source started from, are stored on the replay when it starts (``replay_inherits``), and its own
patches fold onto them. They are never read back through ``Run.replay_of``: a source may be deleted
under a replay of its replay, or before a later one, and what its agents wrote must stay theirs.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Q

from workflows.models import Artifact, ReplayProvenance, Run, RunPatch, canonical_json


def edge_key(edge: dict[str, Any]) -> str:
    """An edge has no id: it is known by what it is."""
    return canonical_json(edge)


def patch_wrote(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What a patch changed of the definition: node ids added, changed and removed, edges added
    and removed. Nodes are compared as stored (canonical JSON), so ``1`` to ``true`` is a change.

    And where what it adds came from, for a person's patch to leave an agent's text the agent's:
    ``moved``, a node added for one removed with the same content but its id (a rename), and
    ``edges_moved``, an edge added for one removed with the same content but its ends (a node at
    either end renamed) or the same condition (a relabel); ``copied``, the nodes and edges of the
    definition before (``n:<id>``, ``e:<edge_key>``; ``*`` for more than ``_COPIED_AT_MOST``)
    whose text (``texts``) a node added or changed, or an edge added, carries."""
    old_nodes = {n["id"]: n for n in before.get("nodes", [])}
    new_nodes = {n["id"]: n for n in after.get("nodes", [])}
    old = {i: canonical_json(n) for i, n in old_nodes.items()}
    new = {i: canonical_json(n) for i, n in new_nodes.items()}
    old_edges = {edge_key(e): e for e in before.get("edges", [])}
    new_edges = {edge_key(e): e for e in after.get("edges", [])}
    added, removed = sorted(new.keys() - old.keys()), sorted(old.keys() - new.keys())
    changed = sorted(i for i in new.keys() & old.keys() if new[i] != old[i])
    edges_added, edges_removed = sorted(new_edges.keys() - old_edges.keys()), sorted(old_edges.keys() - new_edges.keys())
    wrote: dict[str, Any] = {"added": added, "changed": changed, "removed": removed,
                             "edges_added": edges_added, "edges_removed": edges_removed}

    gone = {_without(old_nodes[i], ("id",)): i for i in removed}
    moved = {i: gone[rest] for i in added if (rest := _without(new_nodes[i], ("id",))) in gone}
    gone_edges = {_without(old_edges[k], _EDGE_SHOWN): k for k in edges_removed}
    conditions = {old_edges[k]["condition"]: k for k in edges_removed if isinstance(old_edges[k].get("condition"), str)}
    edges_moved = {}
    for k in edges_added:
        edge, rest = new_edges[k], _without(new_edges[k], _EDGE_SHOWN)
        source = gone_edges.get(rest) if rest != "{}" else None
        if source is None and isinstance(edge.get("condition"), str):
            source = conditions.get(edge["condition"])
        if source is not None:
            edges_moved[k] = source
    if moved:
        wrote["moved"] = moved
    if edges_moved:
        wrote["edges_moved"] = edges_moved

    holders: dict[str, set[str]] = {}  # each text of the definition before -> the nodes and edges carrying it
    for i, n in old_nodes.items():
        for text in texts(n, _NODE_SHOWN):
            holders.setdefault(text, set()).add(f"n:{i}")
    for k, e in old_edges.items():
        for text in texts(e, _EDGE_SHOWN):
            holders.setdefault(text, set()).add(f"e:{k}")
    copied = {}
    for ref, item in [*((f"n:{i}", new_nodes[i]) for i in [*added, *changed]),
                      *((f"e:{k}", new_edges[k]) for k in edges_added)]:
        sources = set().union(*(holders.get(t, ()) for t in texts(item, _NODE_SHOWN if ref[0] == "n" else _EDGE_SHOWN)))
        sources.discard(ref)
        if sources:
            copied[ref] = sorted(sources) if len(sources) <= _COPIED_AT_MOST else ["*"]
    if copied:
        wrote["copied"] = copied
    return wrote


# The structure of a node and an edge, shown as written (agents.view); any other text may be an agent's.
_NODE_SHOWN = ("id", "type")
_EDGE_SHOWN = ("from", "to")
ID_SHAPED = re.compile(r"^[a-zA-Z0-9_-]{1,32}\Z")  # a key shaped like an agent's node id: no room for a sentence
# How deep under a node or edge its schema names every key (a node's fields, its config's: each
# type's config schema allows no others). Below, keys and numbers are free: ``agents.view`` hides
# them under an agent's node or edge, and ``texts`` takes a copy of a value that holds them for a
# copy of its text.
SHOWN_DEPTH = 2
# The shortest such value whose copy counts (``{"amount": 100}`` in a person's step is their own)
_COPIED_VALUE_MIN_CHARS = 40
_COPIED_AT_MOST = 50  # sources named for one copy; past it, "*": any agent's text


def texts(item: dict[str, Any], shown: tuple[str, ...]) -> set[str]:
    """Every string a node or edge carries outside its structure: values at any depth, keys not
    shaped like an id, and each value below its structure (``SHOWN_DEPTH``) whole, where
    ``agents.view`` hides keys and numbers too."""
    found: set[str] = set()
    stack: list[tuple[Any, int]] = [(v, 1) for k, v in item.items() if k not in shown]
    stack += [(k, 1) for k in item if k not in shown and not ID_SHAPED.match(k)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if value:  # "" says nothing
                found.add(value)
            continue
        if isinstance(value, list | dict) and depth >= SHOWN_DEPTH:
            # keys and numbers an agent spelled a message with: an owner's copy of them is theirs
            # (kept by its digest: each level's whole text, 58 levels of 0.9 MB, held 54 MB)
            whole = canonical_json(value)
            if len(whole) >= _COPIED_VALUE_MIN_CHARS:
                found.add("sha256:" + hashlib.sha256(whole.encode()).hexdigest())
        if isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
        elif isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
            stack.extend((k, depth + 1) for k in value if not ID_SHAPED.match(k))
    return found


def _without(item: dict[str, Any], shown: tuple[str, ...]) -> str:
    return canonical_json({k: v for k, v in item.items() if k not in shown})


@dataclass(frozen=True)
class Written:
    """The agent node that last wrote each node (by id) and edge (by ``edge_key``) agents wrote; and
    of each node a person's patch last added or changed, the definition right after it (its
    artifact id; ``inherited_persons``: the step itself, for a patch of the run a replay replays):
    the step as that person set it, which bounds what an agent may make of it (``policy.persons``)
    even once an agent has written it (``persons_steps``)."""

    nodes: dict[str, str] = field(default_factory=dict)
    edges: dict[str, str] = field(default_factory=dict)
    persons: dict[str, str] = field(default_factory=dict, compare=False)
    inherited_persons: dict[str, dict[str, Any]] = field(default_factory=dict, compare=False)


NOBODY = Written()


# How far back ``patches_in`` follows a replay's chain of sources (a replay of a replay of …) for
# the patches an approver may read; provenance is never read through it (``replay_inherits``).
REPLAY_DEPTH = 20


def _chain(run_id: Any) -> list[tuple[Any, Any]]:
    """(run, the moment its replay started) from the oldest source still there followed to
    ``run_id`` (None: every patch of its own), so a source's patches count up to the replay's start."""
    chain: list[tuple[Any, Any]] = [(run_id, None)]
    at = run_id
    for _ in range(REPLAY_DEPTH):
        row = Run.objects.filter(pk=at).values_list("replay_of_id", "created_at").first()
        if row is None or row[0] is None:
            break
        at, started = row
        chain.append((at, started))
    return chain[::-1]


def authored_base_id(run_id: Any, *, base_artifact_id: Any, replay_of_id: Any = None) -> Any:
    """The version the oldest run a replay goes back to started from (stored when the replay started,
    ``replay_inherits``): a replay starts from its source's patched definition, which is not its
    author's (the patch policy's "the author's", what an approver is told changed). A run that is no
    replay: its own base. ``replay_of_id`` is not read: a replay whose source was deleted has none."""
    inherited = ReplayProvenance.objects.filter(run_id=run_id).values_list("authored_base_id", flat=True).first()
    return inherited if inherited is not None else base_artifact_id


def patches_in(run_id: Any) -> Any:
    """The applied patches the run's definition holds that are still stored, for an approver to read:
    its own, and those of the runs it replays, each up to the start of the replay of it (a source
    deleted took its patches with it; what they wrote stays known, ``agent_written``)."""
    held = Q()
    for source, until in _chain(run_id):
        held |= Q(run_id=source) if until is None else Q(run_id=source, applied_at__lte=until)
    return RunPatch.objects.filter(held, status=RunPatch.Status.APPLIED)


def agent_written(run_id: Any) -> Written:
    """The fold of the run's applied patches, in the order they were applied, onto what it inherited
    as a replay (``replay_inherits``: its source's fold, when the replay started)."""
    inherited = ReplayProvenance.objects.filter(run_id=run_id).values_list("nodes", "edges", "persons").first()
    nodes, edges, before = (dict(inherited[0]), dict(inherited[1]), dict(inherited[2])) if inherited else ({}, {}, {})
    persons: dict[str, str] = {}
    for writer, wrote, after in (RunPatch.objects.filter(run_id=run_id, status=RunPatch.Status.APPLIED)
                                 .order_by("applied_at", "seq").values_list("node_id", "wrote", "after_artifact_id")):
        _fold(nodes, edges, writer, wrote)
        # a step removed keeps the person's version: an agent's removal and re-adding of it under
        # its id was bound by the run's start again (or by nothing, for a step a person patched in)
        if not writer:
            touched = [*wrote.get("added", []), *wrote.get("changed", [])]
            persons.update(dict.fromkeys(touched, after))
            for node_id in touched:
                before.pop(node_id, None)
    return Written(nodes=nodes, edges=edges, persons=persons, inherited_persons=before)


def persons_steps(written: Written, node_ids: set[str]) -> dict[str, dict[str, Any]]:
    """Of ``node_ids``, each step a person's patch set, as that patch left it (``Written.persons``)."""
    own = {node_id: written.persons[node_id] for node_id in node_ids if node_id in written.persons}
    contents = dict(Artifact.objects.filter(pk__in=set(own.values())).values_list("pk", "content")) if own else {}
    steps = {node_id: written.inherited_persons[node_id] for node_id in node_ids
             if node_id in written.inherited_persons and node_id not in own}
    steps.update({node_id: node for node_id, after in own.items()
                  for node in contents[after].get("nodes", []) if node.get("id") == node_id})
    return steps


def replay_inherits(*, replay: Run, source: Run) -> None:
    """Store on ``replay``, as it starts, what it inherits of ``source``'s provenance: the version
    the source's oldest source started from, and the fold of who wrote what (``agent_written``),
    its persons' steps read out of the definitions their patches left. The source is finished and
    held (``run_replay``'s lock): nothing changes it meanwhile."""
    written = agent_written(source.pk)
    ReplayProvenance.objects.create(
        run=replay, authored_base_id=authored_base_id(source.pk, base_artifact_id=source.base_artifact_id),
        nodes=written.nodes, edges=written.edges,
        persons=persons_steps(written, {*written.persons, *written.inherited_persons}))


def _fold(nodes: dict[str, str], edges: dict[str, str], writer: str, wrote: dict[str, Any]) -> None:
    prior_nodes, prior_edges = dict(nodes), dict(edges)
    for node_id in wrote.get("removed", []):
        nodes.pop(node_id, None)
    for key in wrote.get("edges_removed", []):
        edges.pop(key, None)
    if writer:
        nodes.update(dict.fromkeys([*wrote.get("added", []), *wrote.get("changed", [])], writer))
        edges.update(dict.fromkeys(wrote.get("edges_added", []), writer))
        return
    for node_id in wrote.get("added", []):
        nodes.pop(node_id, None)
    # a person's rename, relabel or copy of an agent's text leaves that text the agent's
    for new, old in wrote.get("moved", {}).items():
        if old in prior_nodes:
            nodes[new] = prior_nodes[old]
    for new, old in wrote.get("edges_moved", {}).items():
        if old in prior_edges:
            edges[new] = prior_edges[old]
    for ref, sources in wrote.get("copied", {}).items():
        writers = ([*prior_nodes.values(), *prior_edges.values()] if "*" in sources else
                   [w for s in sources if (w := (prior_nodes if s[0] == "n" else prior_edges).get(s[2:]))])
        if writers:
            (nodes if ref[0] == "n" else edges).setdefault(ref[2:], sorted(writers)[0])
