"""What of a run's definition an agent may read: the one place that decides it.

Agents are untrusted: any text an agent writes may be an attacker's. The definition an agent's
prompt carries is read by every later agent of the run, stronger ones included and ones its nodes
are not wired to, so a node or edge an agent wrote (``patches.provenance``) is shown by its
structure only: its id, its type, its edges' ends and the agent node that wrote it, with every
string it carries (at any depth, and keys not shaped like an id) replaced by a marker. The
author's nodes and people's patches are shown whole. An agent's own node, when another agent wrote
it (``delegate_to_agent``), is no exception: its task reaches it as the prompt's task.

Whatever else hands an agent text of the definition (a refused patch's message quoting a value,
say) is scrubbed of the strings this view hides (``AgentView.scrub``).

Upstream outputs are not judged here: an agent's output reaches another agent only through an
edge, which the patch policy judges.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from workflows.models import Artifact, Run
from workflows.services.patches.provenance import NOBODY, Written, agent_written, edge_key

_KEY = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")  # as a node id may be: no room for a sentence
_SHOWN = {"node": ("id", "type"), "edge": ("from", "to")}  # the structure, shown as written
_SCRUB_FROM = 8  # shorter strings are not looked for in other text: too little to instruct with


def marker(writer: str) -> str:
    return f"<written by agent node {writer!r}: not shown>"


@dataclass(frozen=True)
class AgentView:
    definition: dict[str, Any]  # the definition as an agent may read it
    hidden: frozenset[str]  # every string it does not show

    def scrub(self, value: Any) -> Any:
        """``value`` (a tool result) with every hidden string in it, as written or quoted, and any
        clipped quote of one, replaced by a marker."""
        if isinstance(value, str):
            return _scrub_text(value, self.hidden)
        if isinstance(value, dict):
            return {self.scrub(k): self.scrub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.scrub(v) for v in value]
        return value


def agent_view(*, definition: dict[str, Any], written: Written) -> AgentView:
    """The one function that decides what of ``definition`` an agent may read."""
    hidden: set[str] = set()
    nodes = [_structure(n, "node", written.nodes[n["id"]], hidden) if n.get("id") in written.nodes else n
             for n in definition.get("nodes", [])]
    edges = []
    for e in definition.get("edges", []):
        writer = written.edges.get(edge_key(e)) if written.edges else None
        edges.append(_structure(e, "edge", writer, hidden) if writer is not None else e)
    hidden -= {n.get("id") for n in definition.get("nodes", [])}  # ids are shown: a message may name them
    shown = {**definition, "nodes": nodes}
    if "edges" in definition:
        shown["edges"] = edges
    return AgentView(definition=shown, hidden=frozenset(hidden))


def run_view(run_id: Any) -> AgentView:
    """The agent view of a run's definition as it is now: for the prompt, and for a tool result."""
    current_id, patched = Run.objects.values_list("current_artifact_id", "patch_seq").get(pk=run_id)
    definition = Artifact.objects.values_list("content", flat=True).get(pk=current_id)
    return agent_view(definition=definition, written=agent_written(run_id) if patched else NOBODY)


def _structure(item: dict[str, Any], kind: str, writer: str, hidden: set[str]) -> dict[str, Any]:
    mark = marker(writer)
    shown = {k: item[k] for k in _SHOWN[kind] if k in item}
    rest = {k: _masked(v, mark, hidden) for k, v in item.items() if k not in shown}
    return {**shown, "written_by": writer, **rest}


def _masked(value: Any, mark: str, hidden: set[str]) -> Any:
    if isinstance(value, str):
        hidden.add(value)
        return mark
    if isinstance(value, list):
        return [_masked(v, mark, hidden) for v in value]
    if isinstance(value, dict):
        out = {}
        for i, (key, v) in enumerate(value.items()):
            if not _KEY.match(key):
                hidden.add(key)
                key = f"<key {i}: not shown>"
            out[key] = _masked(v, mark, hidden)
        return out
    return value


def _scrub_text(text: str, hidden: frozenset[str]) -> str:
    for secret in sorted(hidden, key=len, reverse=True):
        if len(secret) >= _SCRUB_FROM:
            text = _cut(text, {secret, repr(secret)[1:-1], json.dumps(secret)[1:-1],
                               json.dumps(secret, ensure_ascii=False)[1:-1]})
    return text


def _cut(text: str, forms: set[str]) -> str:
    """``text`` with each of ``forms`` (one string, as written or quoted) and each clipped start
    of one (its first ``_SCRUB_FROM`` characters on) replaced by a marker, the longest match first."""
    out, at = [], 0
    while True:
        found = min((i for f in forms if (i := text.find(f[:_SCRUB_FROM], at)) != -1), default=-1)
        if found == -1:
            return "".join(out) + text[at:]
        out.append(text[at:found] + "<not shown>")
        at = found + max(_common(text, found, f) for f in forms)


def _common(text: str, at: int, form: str) -> int:
    """How many characters of ``form`` ``text`` has from ``at`` on."""
    n = 0
    while n < len(form) and at + n < len(text) and text[at + n] == form[n]:
        n += 1
    return n
