"""What of a run's definition an agent may read: the one place that decides it.

Agents are untrusted: any text an agent writes may be an attacker's. The definition an agent's
prompt carries is read by every later agent of the run, stronger ones included and ones its nodes
are not wired to, so a node or edge an agent wrote (``patches.provenance``) is shown by its
structure only: its id, its type, its edges' ends and the agent node that wrote it, with every
string it carries replaced by a marker, and every key, number and boolean the schema does not
name (under a node's own fields and its config's: a payload's, a form's, a list's). The
author's nodes and people's patches are shown whole. An agent's own node, when another agent wrote
it (``delegate_to_agent``), is no exception: its task reaches it as the prompt's task.

A refused patch's answer (``refusal``) quotes nothing of the definition: it is built from the
operation's index, op and path, the rule broken and the JSON types involved, never a value.

Upstream outputs are not judged here: an agent's output reaches another agent only through an
edge, which the patch policy judges.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from workflows.models import Artifact, Run
from workflows.services.patches.policy import Rule
from workflows.services.patches.provenance import (
    ID_SHAPED,
    NOBODY,
    SHOWN_DEPTH,
    Written,
    agent_written,
    edge_key,
)

_SHOWN = {"node": ("id", "type"), "edge": ("from", "to")}  # the structure, shown as written
_SEGMENT = re.compile(r"^(?:[a-zA-Z0-9_-]{1,32}|-)\Z")  # a pointer's segment a refusal may name
_WORD = re.compile(r"^[a-zA-Z0-9_.]{1,64}\Z")  # a rule's name, a failure's kind, a JSON type: ours
_POINTER_MAX_CHARS = 300
_REQUIRED = re.compile(r"^(?:[a-z]+ config: )?'([a-zA-Z0-9_]{1,32})' is a required property$")
_OPS = frozenset({"add", "remove", "replace", "move", "copy", "test"})


def marker(writer: str) -> str:
    return f"<written by agent node {writer!r}: not shown>"


@dataclass(frozen=True)
class AgentView:
    definition: dict[str, Any]  # the definition as an agent may read it


def agent_view(*, definition: dict[str, Any], written: Written) -> AgentView:
    """The one function that decides what of ``definition`` an agent may read."""
    nodes = [_structure(n, "node", written.nodes[n["id"]]) if n.get("id") in written.nodes else n
             for n in definition.get("nodes", [])]
    edges = []
    for e in definition.get("edges", []):
        writer = written.edges.get(edge_key(e)) if written.edges else None
        edges.append(_structure(e, "edge", writer) if writer is not None else e)
    shown = {**definition, "nodes": nodes}
    if "edges" in definition:
        shown["edges"] = edges
    return AgentView(definition=shown)


def run_view(run_id: Any) -> AgentView:
    """The agent view of a run's definition as it is now: for the prompt, and for a tool result."""
    # a replay (``replay_from_node``, kept when its source goes) inherits what its source's agents wrote
    current_id, patched, replays = (Run.objects.values_list("current_artifact_id", "patch_seq", "replay_from_node")
                                    .get(pk=run_id))
    definition = Artifact.objects.values_list("content", flat=True).get(pk=current_id)
    return agent_view(definition=definition, written=agent_written(run_id) if patched or replays else NOBODY)


def _structure(item: dict[str, Any], kind: str, writer: str) -> dict[str, Any]:
    mark = marker(writer)
    shown = {k: item[k] for k in _SHOWN[kind] if k in item}
    rest = {k: _masked(v, mark, 1) for k, v in item.items() if k not in shown}
    return {**shown, "written_by": writer, **rest}


def _masked(value: Any, mark: str, depth: int, listed: bool = False) -> Any:
    """``value`` at ``depth`` under a node or edge an agent wrote, its words hidden: every string;
    a key or a number or boolean only where the schema names it (``SHOWN_DEPTH``: a node's own
    fields and its config's, never in a list). Any key shaped like an id, and any
    number, were shown: a payload's keys in order, or a list of character codes, spelled a
    message to every later agent (a red team's find)."""
    if isinstance(value, str):
        return mark
    if isinstance(value, list):
        return [_masked(v, mark, depth + 1, True) for v in value]
    if isinstance(value, dict):
        shown = depth + 1 <= SHOWN_DEPTH and not listed
        return {(key if shown and ID_SHAPED.match(key) else f"<key {i}: not shown>"):
                _masked(v, mark, depth + 1, listed) for i, (key, v) in enumerate(value.items())}
    return value if value is None or (depth <= SHOWN_DEPTH and not listed) else mark


# What each rule asks, in a refusal an agent reads (the rule's name says the rest): the policy's
# rules say it themselves (``Rule.asks``); a patched definition's own validation, its size.
_RULES = {**{rule.value: rule.asks for rule in Rule}, "max_bytes": "the patched definition would be too large"}


def pointer(path: Any) -> str:
    """A JSON Pointer as a refusal may name it: each segment shaped like a short id, an index or
    ``-`` as written (unescaped, so ``~1`` hides nothing), any other ``<key>``; clipped."""
    if not isinstance(path, str):
        return "<not a pointer>"
    if path == "":
        return ""
    parts = [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]
    text = "/" + "/".join(p if _SEGMENT.match(p) else "<key>" for p in parts)
    return text if len(text) <= _POINTER_MAX_CHARS else text[:_POINTER_MAX_CHARS] + "…"


def refusal(*, code: str, extra: dict[str, Any], operations: Any) -> dict[str, Any]:
    """A refused patch's answer to the agent that proposed it, which quotes no value of the
    definition (a failed ``test`` quoted the value it found, a validation error the value it
    judged, and any of them may be another agent's words): the operation's index, op and path, the
    rule broken, the kind of failure and the JSON types involved. Bounded by construction."""
    def word(value: Any) -> str | None:
        return value if isinstance(value, str) and _WORD.match(value) else None

    op = extra.get("op") if isinstance(extra.get("op"), int) and not isinstance(extra.get("op"), bool) else None
    operation = operations[op] if (op is not None and isinstance(operations, list)
                                   and 0 <= op < len(operations)) else None
    name = operation.get("op") if isinstance(operation, dict) and operation.get("op") in _OPS else None
    path = pointer(operation.get("path")) if isinstance(operation, dict) else None
    rule = word(str(extra.get("rule") or code)) or "unknown"
    details: dict[str, Any] = {"rule": rule, "op": op, "path": path}
    for key in ("failure", "found_type", "tested_type", "reason"):
        if word(extra.get(key)):
            details[key] = extra[key]
    for key in ("limit", "size", "copied", "count"):
        if isinstance(extra.get(key), int) and not isinstance(extra.get(key), bool):
            details[key] = extra[key]
    if isinstance(extra.get("node_id"), str):
        details["node_id"] = pointer("/" + extra["node_id"])[1:]
    if isinstance(extra.get("at"), str):
        details["at"] = pointer(extra["at"])
    if isinstance(extra.get("errors"), list):
        details["errors"] = [{"path": pointer(e.get("path")), "rule": word(e.get("rule")) or "unknown"}
                             for e in extra["errors"][:5] if isinstance(e, dict)]
    first = extra["errors"][0] if details.get("errors") else None
    required = _REQUIRED.search(str(first.get("message", ""))) if (
        rule.endswith(".required") and isinstance(first, dict)) else None
    if required:  # a name the schema requires: the schema's word, not the definition's
        details["missing"] = required.group(1)
    said = [f"operation {op}" + (f" ({name} {path})" if name else "") if op is not None else "the patch",
            f" was refused by rule {rule}"]
    explained = _RULES.get(rule) or ("the patched workflow does not match the workflow schema"
                                     if rule.startswith("schema.") else "")
    if explained:
        said.append(f": {explained}")
    if details.get("failure") == "test_failed":
        said.append(f"; the value at its path is of type {details.get('found_type')}, the test's of type "
                    f"{details.get('tested_type')}, and they differ")
    elif "failure" in details:
        said.append(f" ({details['failure'].replace('_', ' ')})")
    elif "missing" in details:
        said.append(f" at {details['at']}: {details['missing']!r} is required")
    elif "at" in details:
        said.append(f" at {details['at']} (found: {details.get('found_type', 'a value')})")
    return {"status": "error", "error": word(code) or "patch_rejected", "message": "".join(said) + ".",
            "details": details}
