"""A workflow's newest run, which every list of workflows shows (``selectors.with_last_run``), is
read by the workflow's own index (``run_workflow_created``): by the key's index alone, PostgreSQL
walked every tenant's runs newest first for each workflow shown, and one user's `GET /workflows`
took 4.6 s with 200,000 runs of another's (a red team's measure; 6 ms with none). Judged here by
the plan, on the same shape at a smaller size: at 2,000 runs the planner takes the workflow's index
and reads none of them (the created_at index alone, the plan of old, reads all 2,001); at 20 runs it
walks created_at even with the index, so the size is kept well clear of that."""

from __future__ import annotations

from typing import Any

from django.db import connection

from tests.conftest import client_for, stored_run
from workflows import selectors
from workflows.models import Workflow
from workflows.services.definitions import workflow_save

GREETING = {"nodes": [{"id": "a", "type": "transform", "config": {"expression": "1"}}], "edges": []}


def test_a_workflow_s_newest_run_is_read_by_its_own_index_whatever_others_run(db: Any, user: Any,
                                                                              make_user: Any) -> None:
    bob = make_user("bob")
    workflow_save(owner=user, tag="mine", definition=GREETING)
    for i in range(10):
        workflow_save(owner=bob, tag=f"b{i}", definition=GREETING)
    template = stored_run(bob)
    with connection.cursor() as cursor:  # 2,000 runs of bob's, newest last, none of alice's
        cursor.execute("""INSERT INTO workflows_run SELECT (jsonb_populate_record(NULL::workflows_run, to_jsonb(r) ||
                          jsonb_build_object('id', gen_random_uuid(), 'workflow_id', w.id, 'status', 'completed',
                          'created_at', now() - g * interval '1 second'))).*
                          FROM workflows_run r, workflows_workflow w, generate_series(1, 200) g
                          WHERE r.id = %s AND w.owner_id = %s""", [template.pk, bob.pk])
        cursor.execute("ANALYZE workflows_run")
    sql, params = selectors.with_last_run(Workflow.objects.filter(owner=user), user=user).query.sql_with_params()

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params)
        plan = cursor.fetchone()[0][0]

    scans = []
    def walk(node: dict[str, Any]) -> None:
        if "Relation Name" in node and node["Relation Name"] == "workflows_run":
            scans.append((node.get("Index Name"), node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)))
        for child in node.get("Plans", []):
            walk(child)
    walk(plan["Plan"])
    # by the workflow's index; the runs an approval asks the reader about (``runs_visible``) by their key
    assert scans and all(index in ("run_workflow_created", "workflows_run_pkey") for index, _ in scans), scans
    assert any(index == "run_workflow_created" for index, _ in scans), scans
    assert sum(read for _, read in scans) == 0, scans  # none of bob's 2,000 read for alice's workflow
    listed = client_for(user).get("/api/v1/workflows").json()
    assert [(w["tag"], w["last_run"]) for w in listed["results"]] == [("mine", None)], listed
