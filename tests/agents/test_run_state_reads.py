"""What the patch policy reads of a run (``patches.run_state``) under its lock, for every patch (a
person's in the web process, an approver's settling a held one, an agent's): each node's latest
status, what has begun, and which gates approved, never the outputs themselves. It read and parsed
every node run's output, every pass of a loop: 48 passes of 1.4 MB made each patch, an empty one
too, take 2 s and 650 MB of a shared web process (a red team's find)."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.conftest import stored_run
from workflows.models import NodeRun
from workflows.services.patches import run_state

pytestmark = pytest.mark.django_db

FLOW = {"nodes": [{"id": "gate", "type": "hitl", "config": {"message": "ok?"}},
                  {"id": "denied", "type": "hitl", "config": {"message": "ok?"}},
                  {"id": "a", "type": "transform", "config": {"expression": "1"}},
                  {"id": "more", "type": "loop", "config": {"max_iterations": 100, "loop_back_to": "a",
                                                              "condition": "true"}}],
        "edges": [{"from": "gate", "to": "a"}, {"from": "a", "to": "more"}]}


def test_the_policy_reads_statuses_and_decisions_not_outputs(user):
    run = stored_run(user, FLOW)
    big = {"items": ["x" * 100] * 100}
    NodeRun.objects.bulk_create(
        [NodeRun(run=run, node_id="gate", node_type="hitl", status="completed", attempts=1,
                 output={"approved": True, "approvals": []}),
         NodeRun(run=run, node_id="denied", node_type="hitl", status="completed", attempts=1,
                 output={"approved": False}),
         *(NodeRun(run=run, node_id="a", node_type="transform", status="completed", iteration=i, attempts=1,
                   output=big) for i in range(5)),
         NodeRun(run=run, node_id="a", node_type="transform", status="queued", iteration=5, attempts=1,
                 output=big),
         NodeRun(run=run, node_id="more", node_type="loop", status="queued", iteration=5)])

    with CaptureQueriesContext(connection) as queries:
        state = run_state(run)

    selected = [re.split(r"\bFROM\b", q["sql"], maxsplit=1)[0] for q in queries.captured_queries
                if "workflows_noderun" in q["sql"]]
    assert selected and not any('"workflows_noderun"."output"' in columns for columns in selected), selected
    assert state.approved == frozenset({"gate"})
    assert state.statuses == {"gate": "completed", "denied": "completed", "a": "queued", "more": "queued"}
    assert state.started == frozenset({"gate", "denied", "a"})  # a's latest pass is queued for its retry
