"""Settling a child measures its end nodes' outputs before reading them (``final_outputs``) by
their kept sizes: past the ceiling they are not read (16 MiB of them allocated 48 MiB in the
coordinator first), and the measure must not fail a child whose outputs fit by the one ``resume``
judges by (``canonical_json``). Each failed on the code before (a red-team helper's and a
review's findings)."""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest
from django.db import close_old_connections, transaction

from subflows.models import SubRun
from subflows.services import subflow_settle
from workflows.models import Artifact, NodeRun, Run, canonical_json
from workflows.services.artifacts import artifact_store

CEILING = 1024 * 1024  # AOB_MAX_NODE_OUTPUT_BYTES in this test
ENDS = 8  # the child's terminal nodes in the second test, each output twice the ceiling: 16 MiB together


def child_awaited(user, outputs: dict[str, Any]) -> SubRun:
    """A parent's ``workflow`` node waiting on a completed child whose end nodes (named by
    ``outputs``' keys, no edges) completed with those outputs."""
    child_def = {"nodes": [{"id": node_id, "type": "transform", "config": {"expression": "1"}} for node_id in outputs],
                 "edges": []}
    parent_def = {"nodes": [{"id": "child", "type": "workflow", "config": {"tag": "sized"}}], "edges": []}
    with transaction.atomic():
        child_art = artifact_store(kind=Artifact.Kind.DAG_VERSION, content=child_def)
        parent_art = artifact_store(kind=Artifact.Kind.DAG_VERSION, content=parent_def)
    parent = Run.objects.create(owner=user, base_artifact=parent_art, current_artifact=parent_art,
                                status=Run.Status.WAITING_FOR_APPROVAL)
    waiting = NodeRun.objects.create(run=parent, node_id="child", node_type="workflow", status=NodeRun.Status.WAITING,
                                     wait_reason="workflow", attempts=1)
    child = Run.objects.create(owner=user, base_artifact=child_art, current_artifact=child_art,
                               status=Run.Status.COMPLETED, budget={Run.WITHIN: str(parent.pk)})
    NodeRun.objects.bulk_create([NodeRun(run=child, node_id=node_id, node_type="transform", attempts=1,
                                         status=NodeRun.Status.COMPLETED, output=output)
                                 for node_id, output in outputs.items()])
    link = SubRun.objects.create(parent_run=parent, parent_node_run=waiting, child_run=child)
    close_old_connections()
    return link


@pytest.mark.django_db(transaction=True)
def test_a_child_whose_outputs_fit_the_ceiling_is_not_failed_by_its_kept_sizes(user, settings):
    """One end node's output, 400,000 small numbers: 800 KB as stored and judged (``canonical_json``,
    no whitespace), under the 1 MiB ceiling, so the node that made it completed and the parent's
    output (it, plus a run id and a status) fits too. Its kept size (``output_bytes``) is
    ``octet_length(output::text)``, jsonb's text with a space after each comma: 1.2 MB. Adding kept
    sizes fails the parent's node OutputTooLarge though its output fits (before the change it
    completed)."""
    settings.AOB_MAX_NODE_OUTPUT_BYTES = CEILING
    numbers = [0] * 400_000
    assert len(canonical_json({"run_id": "x" * 36, "status": "completed", "outputs": {"end": numbers}})) < CEILING
    link = child_awaited(user, {"end": numbers})
    waiting, child = link.parent_node_run, link.child_run

    assert subflow_settle(link=link) is True

    node = NodeRun.objects.get(pk=waiting.pk)
    assert node.status == "completed", (node.error, NodeRun.objects.get(run=child, node_id="end").output_bytes)


@pytest.mark.django_db(transaction=True)
def test_settling_a_child_whose_outputs_pass_the_ceiling_reads_no_more_than_the_ceiling(user, settings):
    """`subflow_settle` runs where the child's run ends: in the run-finished hook of the coordinator
    every user shares (or the sweep). It reads every terminal output of the child whole
    (`final_outputs`), up to the child's AOB_MAX_RUN_OUTPUT_BYTES (256 MiB by default: 8 nodes at the
    32 MiB node ceiling), serialises them again, and only then measures them (`resume`:
    `refuse_large_output`), to fail the node with OutputTooLarge. `GET /runs/{id}/output` bounds the
    same read by the kept sizes (`results.run_output_text`). Here: 16 MiB of outputs against a 1 MiB
    ceiling; the node fails as it should, but the settle allocates many times the ceiling."""
    settings.AOB_MAX_NODE_OUTPUT_BYTES = CEILING
    link = child_awaited(user, {f"end{i}": chr(97 + i) * (2 * CEILING) for i in range(ENDS)})
    waiting = link.parent_node_run

    tracemalloc.start()
    try:
        assert subflow_settle(link=link) is True
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    node = NodeRun.objects.get(pk=waiting.pk)
    assert node.status == "failed" and node.error["error_type"] == "OutputTooLarge", node.error
    assert peak < 4 * CEILING, f"settling allocated {peak / 2**20:.1f} MiB against a {CEILING / 2**20:.0f} MiB ceiling"
