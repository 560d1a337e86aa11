"""An admin changelist reads its page in an index's order and stops at its rows: its default order
is one an index keeps (newest first by key, a run's by its created_at index, approvals pending
first by theirs), a column header sorts only by a column an index orders whole (a key, a unique
column) and a ``?o=`` naming another is ignored, and the artifacts of one staff member's runs are
found by their keys. Each plan is read with sequential scans off: a page in an index's order is an
index scan stopped at its rows; any other is a Sort of every row of the table for one page."""

from __future__ import annotations

from typing import Any

import pytest
from django.apps import apps
from django.db import connection
from django.test import Client

from tests.conftest import stored_run, with_permissions
from tests.web.test_admin_reads import everything
from workflows.models import Run

# the changelists of tables that grow with use (every tenant's runs, gates, votes, firings, deliveries)
GROWING = ["workflows/run", "workflows/artifact", "workflows/patchrefusal", "workflows/event",
           "workflows/noderun", "approvals/approval", "approvals/decision", "triggers/schedulefiring",
           "triggers/hookdelivery"]


def page_plan(client: Client, url: str) -> str:
    """The plan of ``url``'s page of rows, with sequential scans off."""
    response = client.get(url)
    assert response.status_code == 200
    sql, params = response.context["cl"].queryset[:100].query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("SET LOCAL enable_seqscan = on")
    return plan


def more_runs(n: int) -> None:
    """``n`` more runs, a second apart: a table of runs the planner weighs as one (a run's order is
    its created_at index's, ties sorted among themselves: fewer rows plan as a sort of them all)."""
    columns = ", ".join(f.column for f in Run._meta.concrete_fields if f.column not in ("id", "created_at"))
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO workflows_run (id, created_at, {columns}) SELECT gen_random_uuid(), "  # noqa: S608
                       f"created_at - g * interval '1 second', {columns} FROM workflows_run, generate_series(1, %s) g",
                       [n])
        cursor.execute("ANALYZE workflows_run")


@pytest.mark.django_db
@pytest.mark.parametrize("changelist", GROWING)
def test_a_default_changelist_page_reads_its_rows_in_an_index_s_order(admin_client: Client, user: Any,
                                                                     changelist: str) -> None:
    everything(user, 2, "x" * 100)
    if changelist == "workflows/run":
        more_runs(1000)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {apps.get_model(*changelist.split('/'))._meta.db_table}")

    if changelist == "workflows/run":  # by its created_at index; ties (one microsecond's runs) sorted among themselves
        plan = page_plan(admin_client, f"/admin/{changelist}/")
        assert plan.splitlines()[1].strip().startswith("->  Incremental Sort "), plan
    else:  # read from the query: a plan over a few rows sorts them whatever the order (a fresh clone's did)
        query = str(admin_client.get(f"/admin/{changelist}/").context["cl"].queryset.query)
        order = query.rpartition("ORDER BY")[2]
        assert not any(f'."{time}"' in order for time in ("created_at", "at", "fire_time", "received_at")), query


@pytest.mark.django_db
@pytest.mark.parametrize(("url", "column"), [("/admin/workflows/event/?o=4", "created_at"),
                                             ("/admin/workflows/event/?o=3.-5", "node_id"),
                                             ("/admin/workflows/noderun/?o=6", "started_at"),
                                             ("/admin/workflows/noderun/?o=1", "node_id"),
                                             ("/admin/workflows/runpatch/?o=5", "created_at"),
                                             ("/admin/workflows/run/?o=2.1", "owner_id")])
def test_a_column_header_sorts_only_by_a_column_an_index_orders(admin_client: Client, user: Any, url: str,
                                                                column: str) -> None:
    """The header's column, which no index orders whole, is not in the page's ORDER BY (read from
    the query: a plan over a few rows sorts them whatever the order, as a fresh clone's did)."""
    everything(user, 2, "x" * 100)

    query = str(admin_client.get(url).context["cl"].queryset.query)

    assert f'."{column}"' not in query.rpartition("ORDER BY")[2], query


@pytest.mark.django_db
def test_a_column_an_index_orders_whole_is_sorted_by_its_header(admin_client: Client, user: Any) -> None:
    everything(user, 2, "x" * 100)

    cl = admin_client.get("/admin/workflows/run/?o=2.1").context["cl"]  # by the tag (ignored), then the id

    assert cl.sortable_by == ["id"]  # the only header that is a link
    assert cl.get_ordering_field_columns() == {1: "asc"}
    assert 'ORDER BY "workflows_run"."id" ASC' in str(cl.queryset.query)


@pytest.mark.django_db
def test_the_artifacts_of_a_staff_member_s_own_runs_are_found_by_their_keys(make_user: Any) -> None:
    staff = with_permissions(make_user("ops", is_staff=True), "workflows.view_artifact")
    stored_run(staff)
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO workflows_artifact (id, kind, content, size_bytes, created_at) "
                       "SELECT 'sha256:' || md5(g::text) || md5((g + 1)::text), 'node_io', '{}'::jsonb, 2, now() "
                       "FROM generate_series(1, 50000) g")
        cursor.execute("ANALYZE workflows_artifact")
    client = Client()
    client.force_login(staff)

    plan = page_plan(client, "/admin/workflows/artifact/")

    lines = plan.splitlines()
    (scan,) = [i for i, line in enumerate(lines) if " on workflows_artifact" in line]
    assert "Index Cond" in lines[scan + 1], plan  # each by its key, not every artifact tested against them


@pytest.mark.django_db
@pytest.mark.parametrize("o", ["", "-", ".", "..", "1_0", "99999999999999999999", "-0", "--1", "1.1", "\u0661",
                               "1.x.-2", "a-1", "0"])
def test_a_header_order_of_any_shape_is_ignored_or_honoured_never_an_error(admin_client: Client, o: str) -> None:
    for url in ("/admin/workflows/run/", "/admin/approvals/approval/", "/admin/workflows/event/"):
        response = admin_client.get(url, {"o": o})
        assert response.status_code in (200, 302), (url, o, response.status_code)
