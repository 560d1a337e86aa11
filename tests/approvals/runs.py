"""Submitting runs with a ``hitl`` node and reading back their approval, for the approval tests."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from rest_framework.response import Response

from approvals.models import Approval
from tests.conftest import client_for, wait_for_run
from tests.engine.flow import wait_until  # noqa: F401 - the approvals tests' import of it
from workflows.models import Event, NodeRun, Run

WAITING = {"waiting_for_approval", "completed", "failed", "cancelled"}


def refund_flow(review: dict[str, Any] | None = None, *, reject_edge: bool = True) -> dict[str, Any]:
    """examples/approval.json: prepare → review → refund if approved, else notify_rejected."""
    config = {"message": "Refund ${$nodes.prepare.amount} to ${$nodes.prepare.customer}?", **(review or {})}
    nodes = [
        {"id": "prepare", "type": "transform",
         "config": {"expression": "{'amount': inputs.amount, 'customer': inputs.customer}"}},
        {"id": "review", "type": "hitl", "config": config},
        {"id": "refund", "type": "transform", "config": {"expression": "{'refunded': nodes.prepare.amount}"}},
    ]
    edges = [{"from": "prepare", "to": "review"},
             {"from": "review", "to": "refund", "condition": "$.approved == true"}]
    if reject_edge:
        nodes.append({"id": "notify_rejected", "type": "transform",
                      "config": {"expression": "{'refunded': 0, 'reason': 'rejected'}"}})
        edges.append({"from": "review", "to": "notify_rejected"})
    return {"nodes": nodes, "edges": edges}


def submit(owner: User, definition: dict[str, Any], inputs: dict[str, Any] | None = None) -> str:
    response = client_for(owner).post("/api/v1/runs", {"workflow": definition,
                                                       "inputs": inputs or {"amount": 42, "customer": "ACME"}},
                                      format="json")
    assert response.status_code == 201, response.json()
    return str(response.json()["run_id"])


def parked(owner: User, review: dict[str, Any] | None = None, **kwargs: Any) -> tuple[str, Approval]:
    """A refund run waiting at ``review``, and its approval."""
    run_id = submit(owner, refund_flow(review, **kwargs))
    return run_id, approval_of(run_id)


def approval_of(run_id: str, timeout: float = 20.0) -> Approval:
    run = wait_for_run(run_id, timeout=timeout, statuses=WAITING)
    assert run.status == "waiting_for_approval", (run.status, run.error)
    return Approval.objects.get(run_id=run_id)


def decide(user: User, approval: Approval | int, approve: bool = True, comment: str = "",
           **body: Any) -> Response:
    pk = approval.pk if isinstance(approval, Approval) else approval
    return client_for(user).post(f"/api/v1/approvals/{pk}/decide",
                                 {"approve": approve, "comment": comment, **body}, format="json")


def finished(run_id: str, timeout: float = 20.0) -> Run:
    return wait_for_run(run_id, timeout=timeout)


def statuses(run_id: str) -> dict[str, str]:
    return dict(NodeRun.objects.filter(run_id=run_id).values_list("node_id", "status"))


def output(run_id: str, node_id: str = "review") -> Any:
    return NodeRun.objects.get(run_id=run_id, node_id=node_id).output


def events(run_id: str, type_: str) -> list[dict[str, Any]]:
    return list(Event.objects.filter(run_id=run_id, type=type_).order_by("seq").values_list("data", flat=True))


def ids(response: Response) -> list[int]:
    assert response.status_code == 200, response.json()
    return [a["id"] for a in response.json()["results"]]

