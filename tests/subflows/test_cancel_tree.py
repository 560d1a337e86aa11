"""Cancelling a run with many child runs: the request (or the decision that failed the parent)
cancels none of them itself; bounded tasks on the maintenance queue cancel the whole tree."""

from __future__ import annotations

from django.db import connection
from django.test.utils import CaptureQueriesContext

from subflows.models import SubRun
from subflows.services import CANCEL_BATCH
from tests.conftest import stored_run
from tests.engine.flow import wait_until
from tests.faults.harness import hooks
from workflows.models import NodeRun, Run

CHILDREN = CANCEL_BATCH + 2  # one task's batch, and the task again for the rest


def _children(parent: Run, count: int, depth: int = 1) -> list[Run]:
    """``count`` child runs of ``parent``, each started by a ``workflow`` node run that waits for it."""
    children = []
    for i in range(count):
        node = NodeRun.objects.create(run=parent, node_id=f"w{i}", node_type="workflow", status="waiting",
                                      wait_reason="workflow")
        child = stored_run(parent.owner)
        SubRun.objects.create(parent_run=parent, parent_node_run=node, child_run=child, depth=depth)
        children.append(child)
    return children


def test_cancelling_a_parent_of_many_children_answers_in_a_bounded_number_of_queries(engine, api, user):
    """The tasks alone cancel the tree: the sweep, their backstop, is off."""
    hooks().set("aob:test:subflows_sweep_off", 1)
    try:
        parent = stored_run(user)
        children = _children(parent, CHILDREN)
        grandchildren = _children(children[0], 3, depth=2)

        with CaptureQueriesContext(connection) as queries:
            assert api.post(f"/api/v1/runs/{parent.pk}/cancel").status_code == 200

        # a cancel of a run without children is about 15 statements; each child cancelled in the
        # request added about 20 (300 children: 6,000 statements, 4 s of a web process)
        assert len(queries) < 30, len(queries)
        tree = [c.pk for c in children + grandchildren]
        wait_until(lambda: not Run.objects.filter(pk__in=tree).exclude(status="cancelled").exists(),
                   what="every child and grandchild cancelled")
    finally:
        hooks().delete("aob:test:subflows_sweep_off")
