"""Red-team (rt-web): the cost of reads in the web tier. Each test builds one user's data with bulk
inserts in the real database and measures one request: what its statements read, how many there
are, or how large its answer is. They fail on the code as found (see each docstring's figures)."""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from subflows.models import SubRun
from tests.conftest import client_for, stored_run
from workflows.models import NodeRun, Run

API = "/api/v1"
RUN_INPUTS = '"workflows_run"."inputs"'
NODE_VALUES = ('"workflows_noderun"."input"', '"workflows_noderun"."output"', '"workflows_noderun"."attempt_log"')


def statements(client: Any, path: str) -> tuple[Any, list[str]]:
    with CaptureQueriesContext(connection) as reads:
        response = client.get(path)
    assert response.status_code == 200, response.content[:300]
    return response, [q["sql"] for q in reads.captured_queries]


def test_a_run_s_family_reads_no_child_inputs_nor_node_values(make_user: Any) -> None:
    """``run_family`` (``GET /runs/{id}/family`` and the run page's family) ``select_related``s each
    child run and each parent node run whole: a child's inputs (up to 16 MiB), the workflow node's
    resolved input (16 MiB), output (32 MiB) and attempt log, for every child the run ever started
    (a loop may start thousands), to answer an id, a node id and a status each. Measured: 2,000
    children with 50 kB inputs, node input and output each: 0.88 s for the API (about 300 MB read)
    and 1.26 s for the run page; at the bounds, gigabytes for one page view."""
    alice = make_user("alice")
    parent = stored_run(alice)
    blob = {"blob": "x" * 500_000}
    children = Run.objects.bulk_create([Run(owner=alice, base_artifact=parent.base_artifact,
                                            current_artifact=parent.base_artifact, inputs=blob, inputs_bytes=500_012)
                                        for _ in range(4)])
    nodes = NodeRun.objects.bulk_create([NodeRun(run=parent, node_id="child", iteration=i, node_type="workflow",
                                                 status="completed", input=blob, output=blob, attempt_log=[blob])
                                         for i in range(4)])
    SubRun.objects.bulk_create([SubRun(parent_run=parent, parent_node_run=node, child_run=child)
                                for node, child in zip(nodes, children, strict=True)])
    browser = Client()
    browser.force_login(alice)

    for client, path in ((client_for(alice), f"{API}/runs/{parent.pk}/family"), (browser, f"/runs/{parent.pk}/")):
        response, sql = statements(client, path)
        family = [s for s in sql if "subflows_subrun" in s]
        assert family, path
        assert [c for c in (RUN_INPUTS, *NODE_VALUES) if any(c in s for s in family)] == [], path
    assert len(client_for(alice).get(f"{API}/runs/{parent.pk}/family").json()["children"]) == 4


def test_an_admin_search_compares_a_bounded_number_of_terms(make_user: Any) -> None:
    """Django's changelist search splits ``q`` into words and ANDs one ``UPPER(..) LIKE`` per word
    and search field, with no cap on the words and no statement timeout (``workflows.admin``: no
    ``get_search_results``; the runs API's ``q`` has both, ``workflows/search.py``). A staff
    member's search of 1,000 matching words and one that never matches scans every row with
    2,000 comparisons each, twice (the capped count, the page). Measured on 20,000 node runs:
    one word 0.15 s, 100 words 0.18 s, 1,000 words 1.08 s (0.45 + 0.38 s in the database); it
    grows with the table (a million node runs: some 40 s a statement) and the URL takes ~7,000."""
    root = make_user("root", is_staff=True, is_superuser=True)
    run = stored_run(make_user("alice"))
    NodeRun.objects.bulk_create([NodeRun(run=run, node_id=f"n{i}", node_type="transform") for i in range(3)])
    admin = Client()
    admin.force_login(root)

    with CaptureQueriesContext(connection) as reads:
        page = admin.get("/admin/workflows/noderun/", {"q": " ".join(["a"] * 1000 + ["zzzz"])})

    assert page.status_code == 200
    comparisons = max(q["sql"].count(" LIKE ") for q in reads.captured_queries)
    assert comparisons <= 100, f"{comparisons} LIKE comparisons in one statement"
