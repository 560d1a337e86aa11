"""Settling a child measures its end nodes' outputs before reading them (``final_outputs``) by
their kept sizes; the measure must be the one ``resume`` judges by (``canonical_json``), or a child
whose outputs fit is failed."""

from __future__ import annotations

import pytest
from django.db import close_old_connections, transaction

from subflows.models import SubRun
from subflows.services import subflow_settle
from workflows.models import Artifact, NodeRun, Run, canonical_json
from workflows.services.artifacts import artifact_store

CEILING = 1024 * 1024  # AOB_MAX_NODE_OUTPUT_BYTES in this test


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
    child_def = {"nodes": [{"id": "end", "type": "transform", "config": {"expression": "inputs.numbers"}}],
                 "edges": []}
    parent_def = {"nodes": [{"id": "child", "type": "workflow", "config": {"tag": "numbers"}}], "edges": []}
    with transaction.atomic():
        child_art = artifact_store(kind=Artifact.Kind.DAG_VERSION, content=child_def)
        parent_art = artifact_store(kind=Artifact.Kind.DAG_VERSION, content=parent_def)
    parent = Run.objects.create(owner=user, base_artifact=parent_art, current_artifact=parent_art,
                                status=Run.Status.WAITING_FOR_APPROVAL)
    waiting = NodeRun.objects.create(run=parent, node_id="child", node_type="workflow", status=NodeRun.Status.WAITING,
                                     wait_reason="workflow", attempts=1)
    child = Run.objects.create(owner=user, base_artifact=child_art, current_artifact=child_art,
                               status=Run.Status.COMPLETED, budget={Run.WITHIN: str(parent.pk)})
    NodeRun.objects.create(run=child, node_id="end", node_type="transform", attempts=1,
                           status=NodeRun.Status.COMPLETED, output=numbers)
    link = SubRun.objects.create(parent_run=parent, parent_node_run=waiting, child_run=child)
    close_old_connections()

    assert subflow_settle(link=link) is True

    node = NodeRun.objects.get(pk=waiting.pk)
    assert node.status == "completed", (node.error, NodeRun.objects.get(run=child, node_id="end").output_bytes)
