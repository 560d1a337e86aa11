"""A user who owns one of everything, made once per module by the real worker stack.

``committed_world`` (module scope) starts the runs through the services, outside any test's
transaction, and waits for the worker processes to finish one and park the other at its approval.
Each test then sees that world under the ``db`` fixture, inside a transaction rolled back after
it: what a test writes never commits, so the Celery publishes and WebSocket pushes that wait for a
commit never fire, the workers never see it, and the next test finds the world as it was. The
module's teardown flushes the database, as pytest-django does after a transactional test, and so
does a transactional test of the module before it starts (it makes its own users).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any, TypeVar

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import override_settings
from rest_framework.authtoken.models import Token

from aob_project.exceptions import AobError
from approvals.models import Approval, Decision
from tests.conftest import RELAXED_LIMITS, TERMINAL, wait_for_run
from tests.support import stack
from workflows.models import Artifact, Event, NodeRun, PatchRefusal, Run, RunPatch, Workflow, WorkflowVersion
from workflows.services.definitions import workflow_save
from workflows.services.patches import run_patch_propose
from workflows.services.runs import run_start

PASSWORD = "s3cret-pass!"  # make_user's
WAITING = {"waiting_for_approval", *TERMINAL}
FAST_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
T = TypeVar("T")

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


@dataclass
class World:
    alice: User
    bob: User
    workflow: Workflow
    finished: Run
    waiting: Run
    approval: Approval
    patch: RunPatch
    refusal: PatchRefusal


def committed_user(username: str) -> User:
    """As ``make_user`` makes one, with the suite's fast hasher (see ``fast_password_hasher``)."""
    user = User.objects.create_user(username=username, password=PASSWORD)
    Token.objects.create(user=user)
    return user


def committed_run(owner: User, definition: dict[str, Any], inputs: dict[str, Any], status: str,
                  **start: Any) -> Run:
    """A run started outside any test's transaction, once the workers have brought it to ``status``."""
    run = wait_for_run(run_start(owner=owner, definition=definition, inputs=inputs, **start).pk,
                       statuses=WAITING if status == Run.Status.WAITING_FOR_APPROVAL else TERMINAL)
    assert run.status == status, (run.status, run.error)
    return run


class Committed:
    """The module's world while it is in the database; ``close`` flushes it."""

    def __init__(self, blocker: Any) -> None:
        self.blocker = blocker
        self.world: World | None = None

    def build(self, make: Callable[[], T]) -> T:
        """``make()``, committed as it goes (the services' own transactions), in the world's database."""
        with self.blocker.unblock(), override_settings(PASSWORD_HASHERS=FAST_HASHERS, **RELAXED_LIMITS):
            try:
                return make()
            except BaseException:
                self.flush()
                raise

    def close(self) -> None:
        if self.world is not None:
            self.world = None
            with self.blocker.unblock():
                self.flush()

    @staticmethod
    def flush() -> None:
        call_command("flush", verbosity=0, interactive=False)


_open: list[Committed] = []  # the module's, while its world is in the database


def _build_world() -> World:
    alice, bob = committed_user("alice"), committed_user("bob")
    workflow_save(owner=alice, tag="hello", definition=HELLO, description="first")
    second = {**HELLO, "metadata": {"description": "second"}}
    workflow = workflow_save(owner=alice, tag="hello", definition=second, description="second").workflow
    finished = committed_run(alice, second, {"name": "Ada"}, Run.Status.COMPLETED, workflow=workflow)
    waiting = committed_run(alice, refund_flow(["alice", "bob"]), {"amount": 42}, Run.Status.WAITING_FOR_APPROVAL)
    patch = run_patch_propose(run=waiting, operations=add_node_after("refund", "audit"), description="audit",
                              user=alice)
    with contextlib.suppress(AobError):  # refused, and kept as a refusal
        run_patch_propose(run=waiting, operations=[{"op": "remove", "path": "/nodes/99"}], user=alice)
    return World(alice=alice, bob=bob, workflow=workflow, finished=finished, waiting=waiting,
                 approval=Approval.objects.get(run=waiting), patch=patch,
                 refusal=PatchRefusal.objects.get(run=waiting))


@pytest.fixture(scope="module")
def committed(workers: dict[str, stack.Proc], django_db_blocker: Any) -> Iterator[Committed]:
    """alice owns a workflow ``hello`` (two versions), a finished run of it, and a run waiting at
    ``review`` for alice or bob, with one applied patch and one refused; bob owns nothing. Run by the workers."""
    holder = Committed(django_db_blocker)
    holder.world = holder.build(_build_world)
    _open.append(holder)
    yield holder
    _open.remove(holder)
    holder.close()


@pytest.fixture(autouse=True)
def _no_committed_world_under_transactions(request: pytest.FixtureRequest) -> None:
    """A transactional test makes its own users and flushes after itself: the module's world goes first."""
    marker = request.node.get_closest_marker("django_db")
    transactional = bool(marker and (marker.kwargs.get("transaction") or marker.kwargs.get("reset_sequences")))
    if transactional or {"transactional_db", "live_server"} & set(request.fixturenames):
        for holder in _open:
            holder.close()


@pytest.fixture
def world(committed: Committed, db: Any) -> World:
    """The module's world, read afresh in this test's transaction."""
    made = committed.world
    assert made is not None, "a transactional test of this module ran first and flushed the world"
    return World(**{field.name: _fresh(getattr(made, field.name)) for field in fields(World)})


def _fresh(instance: Any) -> Any:
    return type(instance)._default_manager.get(pk=instance.pk)


@contextlib.contextmanager
def swapped_worker(workers: dict[str, stack.Proc], stack_env: dict[str, str], name: str,
                   **settings: str) -> Iterator[stack.Proc]:
    """The stack's worker replaced by one started with ``settings`` in its environment (a worker
    reads its settings at start), then by a usual one again. Each swap starts the new worker before
    stopping the old, so the stack always has one (as tests/approvals/test_restart.py does)."""
    usual = workers["worker"]
    workers["worker"] = swapped = stack.start_worker({**stack_env, **settings}, name, concurrency=3)
    usual.stop()
    try:
        yield swapped
    finally:
        workers["worker"] = stack.start_worker(stack_env, usual.name, concurrency=3)
        swapped.stop()
