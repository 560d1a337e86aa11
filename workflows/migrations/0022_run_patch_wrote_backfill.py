# What the applied patches of runs still going (queued, running, waiting) changed, measured as
# patches.provenance.patch_wrote measures it when a patch applies: each patch's definition after
# against the one before it in the order they were applied (the run's base for the first). A held
# patch's before_artifact is the definition it was held against, not always the one it applied to,
# so the chain is followed instead. Finished runs start no agent: their patches are left as they are.
#
# A rolling deploy: a process still on the code before 0021 applies patches with wrote = {}, so
# their agents' text would be shown to later agents. Once the last one is gone,
# `python manage.py migrate workflows 0021 && python manage.py migrate workflows` runs this again.

import json
import re

from django.db import migrations

GOING = ("queued", "running", "waiting_for_approval")


def _canonical(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def patch_wrote(before, after):  # patches.provenance.patch_wrote as of this migration
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
    old = {i: _canonical(n) for i, n in old_nodes.items()}
    new = {i: _canonical(n) for i, n in new_nodes.items()}
    old_edges = {_canonical(e): e for e in before.get("edges", [])}
    new_edges = {_canonical(e): e for e in after.get("edges", [])}
    added, removed = sorted(new.keys() - old.keys()), sorted(old.keys() - new.keys())
    changed = sorted(i for i in new.keys() & old.keys() if new[i] != old[i])
    edges_added, edges_removed = sorted(new_edges.keys() - old_edges.keys()), sorted(old_edges.keys() - new_edges.keys())
    wrote = {"added": added, "changed": changed, "removed": removed,
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

    holders = {}  # each text of the definition before -> the nodes and edges carrying it
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
ID_SHAPED = re.compile(r"^[a-zA-Z0-9_-]{1,32}$")  # a key shaped like an agent's node id: no room for a sentence
_COPIED_AT_MOST = 50  # sources named for one copy; past it, "*": any agent's text


def texts(item, shown):
    """Every string a node or edge carries outside its structure: values at any depth, and keys
    not shaped like an id (``agents.view`` hides the same)."""
    found = set()
    stack = [v for k, v in item.items() if k not in shown]
    stack += [k for k in item if k not in shown and not ID_SHAPED.match(k)]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if value:  # "" says nothing
                found.add(value)
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, dict):
            stack.extend(value.values())
            stack.extend(k for k in value if not ID_SHAPED.match(k))
    return found


def _without(item, shown):
    return _canonical({k: v for k, v in item.items() if k not in shown})


def backfill(apps, schema_editor):
    Run = apps.get_model("workflows", "Run")
    RunPatch = apps.get_model("workflows", "RunPatch")
    runs = Run.objects.filter(status__in=GOING, patches__status="applied").distinct()
    for run in runs.only("base_artifact").select_related("base_artifact").iterator(chunk_size=100):
        before = run.base_artifact.content
        for patch in (RunPatch.objects.filter(run=run, status="applied").order_by("applied_at", "seq")
                      .select_related("after_artifact").only("after_artifact__content")):
            after = patch.after_artifact.content
            RunPatch.objects.filter(pk=patch.pk).update(wrote=patch_wrote(before, after))
            before = after


class Migration(migrations.Migration):

    dependencies = [
        ('workflows', '0021_run_patch_wrote'),
    ]

    operations = [
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
