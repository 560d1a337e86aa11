"""A user who owns one of everything, made through the services and rolled back after each test.

Runs are driven in this process by the same calls a worker makes (claim and execute a node run,
then coordinate it), so there is a finished run and a run waiting for an approval without worker
processes. Under the ``db`` fixture nothing commits, so the Celery publishes and WebSocket pushes
that wait for a commit never fire.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import User

from approvals.models import Approval, Decision
from workflows import tasks
from workflows.engine import execution, heartbeat
from workflows.models import Artifact, Event, NodeRun, Run, RunPatch, Workflow, WorkflowVersion
from workflows.services.definitions import workflow_save
from workflows.services.patches import run_patch_propose
from workflows.services.runs import run_start

HELLO = {
    "nodes": [
        {"id": "greet", "type": "transform", "config": {"expression": "{'greeting': 'hello ' + inputs.name}"}},
        {"id": "done", "type": "transform", "config": {"expression": "{'final': nodes.greet.greeting}"}},
    ],
    "edges": [{"from": "greet", "to": "done"}],
}


def refund_flow(approvers: list[str], **review: Any) -> dict[str, Any]:
    """prepare → review (hitl) → refund if approved."""
    return {
        "nodes": [
            {"id": "prepare", "type": "transform", "config": {"expression": "{'amount': inputs.amount}"}},
            {"id": "review", "type": "hitl", "config": {"message": "Refund?", "approvers": approvers, **review}},
            {"id": "refund", "type": "transform", "config": {"expression": "{'refunded': nodes.prepare.amount}"}},
        ],
        "edges": [{"from": "prepare", "to": "review"},
                  {"from": "review", "to": "refund", "condition": "$.approved == true"}],
    }


def add_node_after(after: str, node_id: str) -> list[dict[str, Any]]:
    return [{"op": "add", "path": "/nodes/-", "value": {"id": node_id, "type": "transform",
                                                       "config": {"expression": "1"}}},
            {"op": "add", "path": "/edges/-", "value": {"from": after, "to": node_id}}]


def drive(run: Run) -> Run:
    """Do what the workers would: execute each queued node run and coordinate it, until none is queued."""
    with _no_heartbeat():
        while True:
            queued = list(NodeRun.objects.filter(run=run, status=NodeRun.Status.QUEUED).values_list("pk", flat=True))
            if not queued:
                break
            for pk in queued:
                tasks.coordinate(execution.execute(pk), pk)  # as the executor task's link does
    run.refresh_from_db()
    return run


def state() -> dict[str, Any]:
    """Everything a request to the API could write, to compare before and after a refusal."""
    return {
        "runs": list(Run.objects.order_by("pk").values_list("pk", "status", "current_artifact_id", "patch_seq")),
        "node_runs": list(NodeRun.objects.order_by("pk").values_list("pk", "status")),
        "events": Event.objects.count(),
        "patches": list(RunPatch.objects.order_by("pk").values_list("pk", "status")),
        "approvals": list(Approval.objects.order_by("pk").values_list("pk", "status", "approvers")),
        "decisions": Decision.objects.count(),
        "artifacts": Artifact.objects.count(),
        "workflows": list(Workflow.objects.order_by("pk").values_list("pk", "current_version_id")),
        "versions": WorkflowVersion.objects.count(),
    }


@contextlib.contextmanager
def _no_heartbeat() -> Any:
    """The lease heartbeat is a thread with its own connection; transforms finish long before a beat."""
    original = heartbeat.holding
    heartbeat.holding = lambda *held: contextlib.nullcontext()  # type: ignore[assignment]
    try:
        yield
    finally:
        heartbeat.holding = original


@dataclass
class World:
    alice: User
    bob: User
    workflow: Workflow
    finished: Run
    waiting: Run
    approval: Approval
    patch: RunPatch


@pytest.fixture
def world(make_user: Any) -> World:
    """alice owns a workflow ``hello`` (two versions), a finished run of it, and a run waiting at
    ``review`` for alice or bob, with one applied patch; bob owns nothing."""
    alice, bob = make_user("alice"), make_user("bob")
    workflow_save(owner=alice, tag="hello", definition=HELLO, description="first")
    second = {**HELLO, "metadata": {"description": "second"}}
    workflow = workflow_save(owner=alice, tag="hello", definition=second, description="second").workflow
    finished = drive(run_start(owner=alice, definition=second, inputs={"name": "Ada"}, workflow=workflow))
    assert finished.status == Run.Status.COMPLETED, finished.error
    waiting = drive(run_start(owner=alice, definition=refund_flow(["alice", "bob"]), inputs={"amount": 42}))
    assert waiting.status == Run.Status.WAITING_FOR_APPROVAL, waiting.error
    patch = run_patch_propose(run=waiting, operations=add_node_after("refund", "audit"), description="audit",
                              user=alice)
    return World(alice=alice, bob=bob, workflow=workflow, finished=finished, waiting=waiting,
                 approval=Approval.objects.get(run=waiting), patch=patch)
