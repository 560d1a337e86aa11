"""An admin page costs the same whatever its object has gathered: a run's node runs, events and
refused patches, a workflow's versions, a hook's deliveries, a schedule's firings and an approval's
decisions and notifications are the latest 50, with a link to all of them in their changelist; a
stored JSON value is cut by the database; the approvals list shows a message's head."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.admin.utils import quote  # a hook id may hold "_" and hex: the admin escapes it
from django.contrib.admin.widgets import AutocompleteSelect
from django.contrib.auth.models import Group, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from approvals.models import Approval, Decision, Delivery, NotificationTarget
from tests.conftest import set_inputs, stored_run
from triggers.models import HookDelivery, ScheduleFiring
from triggers.services import hooks, schedules
from workflows.admin import COUNT_CAP, LATEST_ROWS, PRETTY_CHARS, SEARCH_MAX_TERMS
from workflows.models import Event, NodeRun, PatchRefusal, Run, RunPatch, WorkflowVersion
from workflows.services.definitions import workflow_save

ONE = {"nodes": [{"id": "a", "type": "transform", "config": {"expression": "1"}}], "edges": []}




def marks(page: str, prefix: str) -> list[int]:
    return [int(n) for n in re.findall(rf"{prefix}-(\d+)\b", page)]


def test_a_run_page_shows_the_latest_rows_and_links_the_rest(admin_client: Client, user: Any) -> None:
    run, other = stored_run(user), stored_run(user)
    NodeRun.objects.bulk_create([NodeRun(run=run, node_id=f"step-{i}", node_type="transform", status="completed",
                                         error={"message": "x" * 2000}) for i in range(300)])
    Event.objects.bulk_create([Event(run=run, seq=i, type="node_completed", node_id="", data={"mark": f"ev-{i}"})
                               for i in range(1, 601)])
    PatchRefusal.objects.bulk_create([PatchRefusal(run=run, rule="ops", message=f"refused-{i}") for i in range(80)])
    Event.objects.create(run=other, seq=1, type="workflow_started", node_id="", data={"mark": "ev-9999"})

    page = admin_client.get(f"/admin/workflows/run/{run.pk}/change/").content.decode()

    node_runs, events, refusals = marks(page, "step"), marks(page, "ev"), marks(page, "refused")
    assert len(node_runs) == len(events) == len(refusals) == LATEST_ROWS
    assert events == list(range(600, 600 - LATEST_ROWS, -1))  # the latest, newest first
    assert "x" * 288 not in page and "x" * 287 + "…</td>" in page  # a cell is cut at 300 characters
    for model in ("noderun", "event", "patchrefusal"):
        assert f'href="/admin/workflows/{model}/?run={run.pk}"' in page

    everything = admin_client.get(f"/admin/workflows/event/?run={run.pk}")
    assert everything.status_code == 200
    assert everything.context["cl"].result_count == 600  # the link's list is the run's, paged


def test_a_short_history_is_shown_whole_without_a_link(admin_client: Client, user: Any) -> None:
    run = stored_run(user)
    Event.objects.bulk_create([Event(run=run, seq=i, type="node_completed", node_id="", data={"mark": f"ev-{i}"})
                               for i in range(1, 4)])

    page = admin_client.get(f"/admin/workflows/run/{run.pk}/change/").content.decode()

    assert marks(page, "ev") == [3, 2, 1]
    assert "/admin/workflows/event/?run=" not in page


def test_workflow_hook_and_schedule_pages_show_the_latest_rows(admin_client: Client, user: Any) -> None:
    saved = workflow_save(owner=user, tag="many", definition=ONE)
    WorkflowVersion.objects.bulk_create([
        WorkflowVersion(workflow=saved.workflow, seq=i, artifact=saved.version.artifact, description=f"version-{i}")
        for i in range(1, 80)])
    hook, _ = hooks.hook_create(owner=user, workflow=saved.workflow)
    HookDelivery.objects.bulk_create([HookDelivery(hook=hook, delivery_id=f"delivery-{i}", signature=str(i))
                                      for i in range(80)])
    schedule = schedules.schedule_create(owner=user, workflow=saved.workflow, cron="* * * * *")
    now = timezone.now()
    ScheduleFiring.objects.bulk_create([
        ScheduleFiring(schedule=schedule, fire_time=now - timedelta(minutes=i), fired_at=now, outcome="failed",
                       error={"message": f"firing-{i}"}) for i in range(80)])

    versions = admin_client.get(f"/admin/workflows/workflow/{saved.workflow.pk}/change/").content.decode()
    deliveries = admin_client.get(f"/admin/triggers/hook/{quote(hook.pk)}/change/").content.decode()
    firings = admin_client.get(f"/admin/triggers/schedule/{schedule.pk}/change/").content.decode()

    assert len(marks(versions, "version")) == len(marks(deliveries, "delivery")) == LATEST_ROWS
    assert marks(firings, "firing") == list(range(LATEST_ROWS))  # the latest fire times first
    assert f'href="/admin/workflows/workflowversion/?workflow={saved.workflow.pk}"' in versions
    assert f'href="/admin/triggers/hookdelivery/?hook={hook.pk}"' in deliveries
    assert f'href="/admin/triggers/schedulefiring/?schedule={schedule.pk}"' in firings
    for link in (f"/admin/workflows/workflowversion/?workflow={saved.workflow.pk}",
                 f"/admin/triggers/hookdelivery/?hook={hook.pk}",
                 f"/admin/triggers/schedulefiring/?schedule={schedule.pk}"):
        assert admin_client.get(link).context["cl"].result_count == 80


def test_an_approval_context_is_cut_and_the_list_shows_a_message_head(admin_client: Client, user: Any) -> None:
    run = stored_run(user)
    Run.objects.filter(pk=run.pk).update(status="completed")
    approval = Approval.objects.create(run=run, node_id="review", message="m" * 5000,
                                       context={"upstream": {"fetch": "c" * 300_000}})

    page = admin_client.get(f"/admin/approvals/approval/{approval.pk}/change/").content.decode()
    listed = admin_client.get("/admin/approvals/approval/").content.decode()

    assert "c" * PRETTY_CHARS not in page and "c" * (PRETTY_CHARS - 100) in page
    assert f"Cut at {PRETTY_CHARS} characters" in page and f"/api/v1/approvals/{approval.pk}" in page
    assert len(page) < 2 * PRETTY_CHARS + 50_000  # the context and the page's own markup, not 300 kB
    assert "m" * 5000 in page  # the page shows the message whole
    assert "m" * 119 + "…" in listed and "m" * 120 not in listed


def test_an_artifact_page_cuts_its_content(admin_client: Client, user: Any) -> None:
    from workflows.services.artifacts import artifact_store

    artifact = artifact_store(kind="node_io", content={"big": "b" * 300_000})

    page = admin_client.get(f"/admin/workflows/artifact/{artifact.pk}/change/").content.decode()

    assert "b" * PRETTY_CHARS not in page and f"Cut at {PRETTY_CHARS} characters" in page


def read_whole(queries: CaptureQueriesContext, column: str) -> list[str]:
    """The queries that read ``column`` (a column's name, with its table's or any alias) other than
    cut: ``LEFT(jsonb_pretty(column), …)`` on a page, ``LEFT((column)::text, …)`` in a table's cell."""
    name = re.escape(column)
    cut = re.compile(rf'jsonb_pretty\([^()]*{name}\)|LEFT\(\([^()]*{name}\)::text')
    return [q["sql"] for q in queries if q["sql"].count(column) > len(cut.findall(q["sql"]))]


@pytest.mark.parametrize("model", ["workflowversion", "runpatch", "patchrefusal"])
def test_version_patch_and_refusal_pages_cut_their_definition_and_operations(admin_client: Client, user: Any,
                                                                            model: str) -> None:
    from workflows.services.artifacts import artifact_store

    saved = workflow_save(owner=user, tag="big", definition=ONE)
    big = artifact_store(kind="dag_version", content={**ONE, "metadata": {"description": "o" * 300_000}})
    version = WorkflowVersion.objects.create(workflow=saved.workflow, seq=1, artifact=big)
    run = stored_run(user)
    operations = [{"op": "test", "path": "/nodes/0/id", "value": "o" * 300_000}]
    patch = RunPatch.objects.create(run=run, seq=1, operations=operations, status="applied",
                                    patch_artifact=artifact_store(kind="patch_set", content=operations),
                                    before_artifact_id=run.base_artifact_id, after_artifact_id=run.base_artifact_id)
    refusal = PatchRefusal.objects.create(run=run, rule="rfc6902", message="refused", operations=operations)
    pk, column, whole = {
        "workflowversion": (version.pk, '"workflows_artifact"."content"', f"GET /api/v1/artifacts/{big.pk}"),
        "runpatch": (patch.pk, '"workflows_runpatch"."operations"', f"GET /api/v1/runs/{run.pk}/patches/1"),
        "patchrefusal": (refusal.pk, '"workflows_patchrefusal"."operations"', f"GET /api/v1/runs/{run.pk}/refusals/{refusal.pk}"),
    }[model]

    with CaptureQueriesContext(connection) as queries:
        page = admin_client.get(f"/admin/workflows/{model}/{pk}/change/").content.decode()

    assert "o" * PRETTY_CHARS not in page and "o" * (PRETTY_CHARS - 1000) in page
    assert f"Cut at {PRETTY_CHARS} characters" in page and whole in page
    assert len(page) < 2 * PRETTY_CHARS + 50_000
    assert read_whole(queries, column) == []  # read only cut, by the database


def test_an_approval_page_shows_the_latest_decisions_and_deliveries(admin_client: Client, user: Any) -> None:
    approval = Approval.objects.create(run=stored_run(user), node_id="review", message="ok?")
    Decision.objects.bulk_create([Decision(approval=approval, username=f"voter-{i}", approve=True,
                                           comment="c" * 2000) for i in range(60)])
    Delivery.objects.bulk_create([Delivery(approval=approval, recipient=f"recipient-{i}", channel="email")
                                  for i in range(60)])

    page = admin_client.get(f"/admin/approvals/approval/{approval.pk}/change/").content.decode()

    assert marks(page, "voter") == list(range(59, 59 - LATEST_ROWS, -1))  # the latest, newest first
    assert marks(page, "recipient") == list(range(59, 59 - LATEST_ROWS, -1))
    assert "c" * 301 not in page and "c" * 300 + "…</td>" in page  # a comment is cut in its cell
    for model in ("decision", "delivery"):
        link = f"/admin/approvals/{model}/?approval={approval.pk}"
        assert f'href="{link}"' in page
        with CaptureQueriesContext(connection) as queries:
            assert admin_client.get(link).context["cl"].result_count == 60  # the link's list is the approval's
        assert not [q for q in queries if '"approvals_approval"."context"' in q["sql"]]  # rows name it by id


def test_an_approval_with_few_decisions_shows_them_without_a_link(admin_client: Client, user: Any) -> None:
    approval = Approval.objects.create(run=stored_run(user), node_id="review", message="ok?")
    Decision.objects.create(approval=approval, username="voter-1", approve=False, comment="not yet")

    page = admin_client.get(f"/admin/approvals/approval/{approval.pk}/change/").content.decode()

    assert marks(page, "voter") == [1] and "not yet" in page
    assert "/admin/approvals/decision/?approval=" not in page and "/admin/approvals/delivery/?approval=" not in page


def test_a_notification_target_form_searches_users_and_groups_instead_of_listing_them(admin_client: Client) -> None:
    User.objects.bulk_create([User(username=f"person-{i}") for i in range(30)])
    Group.objects.bulk_create([Group(name=f"team-{i}") for i in range(30)])
    seven = User.objects.get(username="person-7")
    target = NotificationTarget.objects.create(user=seven, webhook_url="https://hooks.example/seven")

    add = admin_client.get("/admin/approvals/notificationtarget/add/")
    change = admin_client.get(f"/admin/approvals/notificationtarget/{target.pk}/change/").content.decode()

    fields = add.context["adminform"].form.fields
    assert isinstance(fields["user"].widget.widget, AutocompleteSelect)  # inside the add/change-related wrapper
    assert isinstance(fields["group"].widget.widget, AutocompleteSelect)
    assert "person-" not in add.content.decode() and "team-" not in add.content.decode()
    assert "person-7" in change and not [n for n in marks(change, "person") if n != 7] and "team-" not in change

    def search(field: str, term: str) -> list[str]:
        found = admin_client.get("/admin/autocomplete/", {"app_label": "approvals", "model_name": "notificationtarget",
                                                          "field_name": field, "term": term})
        return sorted(row["text"] for row in found.json()["results"])

    assert search("user", "person-2") == ["person-2", *(f"person-2{i}" for i in range(10))]
    assert search("group", "team-1") == ["team-1", *(f"team-1{i}" for i in range(10))]
    made = admin_client.post("/admin/approvals/notificationtarget/add/",
                             {"group": Group.objects.get(name="team-3").pk, "webhook_url": "https://hooks.example/3",
                              "enabled": "on"})
    assert made.status_code == 302
    assert NotificationTarget.objects.filter(group__name="team-3", user=None).exists()


@pytest.mark.parametrize("model", ["vault/secret", "retention/retentionpolicy"])
def test_a_secret_or_retention_policy_form_searches_owners_instead_of_listing_them(admin_client: Client,
                                                                                   model: str) -> None:
    User.objects.bulk_create([User(username=f"person-{i}") for i in range(30)])
    app_label, model_name = model.split("/")

    add = admin_client.get(f"/admin/{model}/add/")

    assert isinstance(add.context["adminform"].form.fields["owner"].widget.widget, AutocompleteSelect)
    assert "person-" not in add.content.decode()
    found = admin_client.get("/admin/autocomplete/", {"app_label": app_label, "model_name": model_name,
                                                      "field_name": "owner", "term": "person-2"})
    assert sorted(row["text"] for row in found.json()["results"]) == ["person-2", *(f"person-2{i}" for i in range(10))]
    seven = User.objects.get(username="person-7")
    fields = {"owner": seven.pk, **({"name": "TOKEN", "value": "s3cret-value"} if model == "vault/secret" else
                                    {"days": "30"})}
    assert admin_client.post(f"/admin/{model}/add/", fields).status_code == 302
    made = add.context["adminform"].form._meta.model.objects.get()
    assert made.owner == seven
    assert "person-7" in admin_client.get(f"/admin/{model}/{made.pk}/change/").content.decode()


BIG_LISTS = ["workflows/run", "workflows/noderun", "workflows/event", "workflows/artifact", "workflows/runpatch",
             "workflows/patchrefusal", "workflows/workflow", "workflows/workflowversion", "approvals/approval",
             "approvals/decision", "approvals/delivery", "triggers/schedulefiring", "triggers/hookdelivery",
             "triggers/schedule", "triggers/hook", "approvals/notificationtarget", "vault/secret",
             "retention/retentionpolicy"]


def counts(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in queries if "COUNT(" in q["sql"].upper()]


@pytest.mark.parametrize("changelist", BIG_LISTS)
def test_a_changelist_counts_its_rows_once_and_only_up_to_the_cap(admin_client: Client, user: Any,
                                                                   changelist: str) -> None:
    Approval.objects.create(run=stored_run(user), node_id="review", message="ok?")

    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(f"/admin/{changelist}/", {"_facets": "True"})  # facets asked for, not counted

    assert response.status_code == 200
    (counted,) = counts(queries)  # the filtered count only: no count of the whole table
    assert f"LIMIT {COUNT_CAP + 1}" in counted and "ORDER BY" not in counted


def test_past_the_cap_a_changelist_says_so_and_filters_and_search_count_exactly(admin_client: Client,
                                                                                 user: Any) -> None:
    run = stored_run(user)
    NodeRun.objects.bulk_create([NodeRun(run=run, node_id=f"step-{i}", node_type="transform", status="completed")
                                 for i in range(COUNT_CAP + 1)])
    NodeRun.objects.bulk_create([NodeRun(run=run, node_id=f"broken-{i}", node_type="http", status="failed")
                                 for i in range(3)])
    changelist = "/admin/workflows/noderun/"

    everything = admin_client.get(changelist)
    page = everything.content.decode()
    assert everything.context["cl"].result_count == COUNT_CAP
    assert f"{COUNT_CAP}+ node runs" in page and f"{COUNT_CAP}+ results" in page
    # never the true total (a node run's key, shown in its link, may be that number)
    assert not re.search(rf"{COUNT_CAP + 4}|{COUNT_CAP + 4:,}", re.sub(r'noderun/\d+/|value="\d+"', "", page))
    last = COUNT_CAP // everything.context["cl"].list_per_page
    assert admin_client.get(changelist, {"p": last}).status_code == 200
    assert "e=1" in admin_client.get(changelist, {"p": last + 1})["Location"]  # no deeper OFFSET

    failed = admin_client.get(changelist, {"status": "failed"})
    assert failed.context["cl"].result_count == 3 and "3 node runs" in failed.content.decode()
    assert admin_client.get(changelist, {"q": "broken"}).context["cl"].result_count == 3
    assert admin_client.get(changelist, {"q": "step-1234", "node_type": "transform"}).context["cl"].result_count == 1


def test_run_node_run_and_event_pages_cut_their_json_values(admin_client: Client, user: Any) -> None:
    """A run's inputs (up to 16 MiB), a node run's input, output and attempt log, and an event's
    data were shown whole on their admin pages: one click read and rendered megabytes. A page that
    names a run (a node run's, an approval's, a replay's source) read its inputs too, and one that
    names an artifact (a run's or a node run's output) its content."""
    from workflows.services.artifacts import artifact_store

    source, run = stored_run(user), stored_run(user)
    set_inputs(source, {"big": "s" * 300_000})
    set_inputs(run, {"big": "i" * 300_000})
    big = {"big": "n" * 300_000}
    artifact = artifact_store(kind="node_io", content=big)
    Run.objects.filter(pk=run.pk).update(replay_of=source, output_artifact=artifact)  # keys to large rows
    node_run = NodeRun.objects.create(run=run, node_id="a", iteration=0, node_type="transform", status="completed",
                                      input=big, output=big, attempt_log=[big], output_artifact=artifact)
    event = Event.objects.create(run=run, seq=1, type="node_started", node_id="a", data=big)
    approval = Approval.objects.create(run=run, node_id="review", message="m", context={})
    pages = {"run": f"/admin/workflows/run/{run.pk}/change/", "noderun": f"/admin/workflows/noderun/{node_run.pk}/change/",
             "event": f"/admin/workflows/event/{event.pk}/change/",
             "approval": f"/admin/approvals/approval/{approval.pk}/change/"}

    with CaptureQueriesContext(connection) as queries:
        shown = {name: admin_client.get(path) for name, path in pages.items()}

    for name, response in shown.items():
        page = response.content.decode()
        assert response.status_code == 200, name
        assert len(page) < 3 * PRETTY_CHARS + 60_000, name  # at most three values cut, and the page's markup
        assert name == "approval" or f"Cut at {PRETTY_CHARS} characters" in page, name
    assert f"/api/v1/runs/{run.pk}/inputs" in shown["run"].content.decode()
    assert f"/api/v1/runs/{run.pk}/nodes/a/iterations/0/attempt_log" in shown["noderun"].content.decode()
    # any table's alias: a run and an artifact are also read through keys (a replay's source, an output)
    for column in ('."inputs"', '"workflows_noderun"."input"', '"workflows_noderun"."output"',
                   '"workflows_noderun"."attempt_log"', '"workflows_event"."data"', '."content"'):
        assert not read_whole(queries, column), column


def test_an_admin_search_compares_a_bounded_number_of_terms(make_user: Any) -> None:
    """Django's changelist search splits ``q`` into words and ANDs one ``UPPER(..) LIKE`` per word
    and search field, with no cap on the words and no statement timeout (``workflows.admin``: no
    ``get_search_results``; the runs API's ``q`` has both, ``workflows/search.py``). A staff
    member's search of 1,000 matching words and one that never matches scans every row with
    2,000 comparisons each, twice (the capped count, the page). Measured on 20,000 node runs:
    one word 0.15 s, 100 words 0.18 s, 1,000 words 1.08 s (0.45 + 0.38 s in the database); it
    grows with the table (a million node runs: some 40 s a statement) and the URL takes ~7,000.
    Now the first ``SEARCH_MAX_TERMS`` words are searched, and the page says so."""
    root = make_user("root", is_staff=True, is_superuser=True)
    run = stored_run(make_user("alice"))
    NodeRun.objects.bulk_create([NodeRun(run=run, node_id=f"n{i}", node_type="transform") for i in range(3)])
    admin = Client()
    admin.force_login(root)

    with CaptureQueriesContext(connection) as reads:
        page = admin.get("/admin/workflows/noderun/", {"q": " ".join(["a"] * 1000 + ["zzzz"])})

    assert page.status_code == 200
    assert f"first {SEARCH_MAX_TERMS} of 1001 words" in page.content.decode()
    comparisons = max(q["sql"].count(" LIKE ") for q in reads.captured_queries)
    assert comparisons <= 100, f"{comparisons} LIKE comparisons in one statement"


def test_a_vote_notification_firing_or_delivery_page_names_its_approval_or_run_without_reading_it_whole(
        admin_client: Client, user: Any) -> None:
    """These pages show the approval or run a row belongs to by its name, and Django read that row
    whole to name it: an approval's context (every upstream output, up to hundreds of megabytes)
    and message, a run's inputs (up to AOB_MAX_RUN_INPUTS_BYTES), as the approval's and run's own
    pages never do."""
    big = "c" * 2_000_000
    run = stored_run(user)
    set_inputs(run, {"big": big})
    approval = Approval.objects.create(run=run, node_id="review", message=big, context={"big": big})
    decision = Decision.objects.create(approval=approval, username="voter", approve=True)
    delivery = Delivery.objects.create(approval=approval, recipient="alice", channel="email")
    workflow = workflow_save(owner=user, tag="nightly", definition=ONE).workflow
    schedule = schedules.schedule_create(owner=user, workflow=workflow, cron="0 3 * * *")
    firing = ScheduleFiring.objects.create(schedule=schedule, fire_time=timezone.now(), fired_at=timezone.now(),
                                           outcome="started", run=run)
    hook, _ = hooks.hook_create(owner=user, workflow=workflow)
    received = HookDelivery.objects.create(hook=hook, delivery_id="d-1", signature="s" * 64, run=run)

    for page in (f"approvals/decision/{decision.pk}", f"approvals/delivery/{delivery.pk}",
                 f"triggers/schedulefiring/{firing.pk}", f"triggers/hookdelivery/{received.pk}"):
        with CaptureQueriesContext(connection) as queries:
            response = admin_client.get(f"/admin/{page}/change/")
        assert response.status_code == 200
        assert len(response.content) < 100_000
        whole = [column for column in ('"approvals_approval"."context"', '"approvals_approval"."message"',
                                       '"workflows_run"."inputs"') if any(column in q["sql"] for q in queries)]
        assert whole == [], f"{page} read {whole}"


def test_deleting_a_user_who_owns_runs_is_refused_without_reading_their_rows(admin_client: Client, user: Any) -> None:
    """Their runs are history no one deletes by hand, so the delete was always refused, but only
    after Django read every row it would cascade to, to list it: one run of 10,000 node runs and
    20,000 events took 15 s and 80 MB of a web process, at each view of the page, each post, and
    each bulk delete of a selection."""
    run = stored_run(user)
    NodeRun.objects.bulk_create([NodeRun(run=run, node_id=f"n{i}", node_type="transform") for i in range(3)])

    for method, url, data in [("get", f"/admin/auth/user/{user.pk}/delete/", None),
                              ("post", f"/admin/auth/user/{user.pk}/delete/", {"post": "yes"}),
                              ("post", "/admin/auth/user/", {"action": "delete_selected", "_selected_action": [user.pk]})]:
        with CaptureQueriesContext(connection) as queries:
            answer = getattr(admin_client, method)(url, data)
        read = " ".join(q["sql"] for q in queries.captured_queries)
        assert "workflows_noderun" not in read and "workflows_event" not in read, (method, url)
        assert answer.status_code in (200, 403)
    assert User.objects.filter(pk=user.pk).exists() and NodeRun.objects.filter(run=run).count() == 3
