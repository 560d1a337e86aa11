"""An admin changelist reads of its rows only what it shows: no JSON or text column it does not
show (a node run's input and output, an event's data, an artifact's content, a patch's
operations), no row its columns do not name (a run's owner and artifacts behind its run column),
and the same few queries however many rows the page has."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.apps import apps
from django.contrib.auth.models import User
from django.db import connection, models
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from approvals.models import Approval, Decision, Delivery, NotificationTarget
from retention.models import RetentionPolicy
from tests.conftest import stored_run
from triggers.models import HookDelivery, ScheduleFiring
from triggers.services import hooks, schedules
from vault.services import secret_set
from workflows import registry
from workflows.models import Artifact, Event, NodeRun, PatchRefusal, RunPatch
from workflows.services.artifacts import artifact_store
from workflows.services.definitions import workflow_save
from workflows.services.patches import PatchRejected, Rule, run_patch_propose

ONE = {"nodes": [{"id": "a", "type": "transform", "config": {"expression": "1"}}], "edges": []}
PROJECT_APPS = ("workflows", "approvals", "triggers", "vault", "retention")
# JSON and text columns a list shows: an approval's approvers, and its message's head (read as
# LEFT(message, 121)); a patch's description.
SHOWN = {"approvals_approval": {"approvers", "message"}, "workflows_runpatch": {"description"}}


def heavy_columns() -> list[str]:
    """Every JSON and text column of the project's tables, as the SQL names it."""
    return [f'"{model._meta.db_table}"."{field.column}"'
            for app in PROJECT_APPS for model in apps.get_app_config(app).get_models()
            for field in model._meta.concrete_fields
            if isinstance(field, models.JSONField | models.TextField)
            and field.column not in SHOWN.get(model._meta.db_table, ())]


def everything(user: Any, n: int, big: str) -> None:
    """``n`` more rows of every kind the admin lists, their JSON and text columns ``big`` (each
    its own, so that artifacts, stored by content, are new rows too)."""
    for _ in range(n):
        big = f"{big[:-32]}{uuid.uuid4().hex}"
        run = stored_run(user, {**ONE, "metadata": {"description": big}})
        NodeRun.objects.create(run=run, node_id="a", node_type="transform", input={"big": big}, output={"big": big},
                               error={"message": big}, attempt_log=[{"big": big}], usage={"big": big})
        Event.objects.create(run=run, seq=1, type="node_completed", node_id="a", data={"big": big})
        operations = [{"op": "test", "path": "/nodes/0/id", "value": big}]
        RunPatch.objects.create(run=run, seq=1, operations=operations, description="d", status="applied",
                                patch_artifact=artifact_store(kind=Artifact.Kind.PATCH_SET, content=operations),
                                before_artifact_id=run.base_artifact_id, after_artifact_id=run.base_artifact_id,
                                proposed_by=user, reason=big)
        PatchRefusal.objects.create(run=run, rule="history_immutable", message=big, operations=operations,
                                    proposed_by=user)
        approval = Approval.objects.create(run=run, node_id="review", message="ok?", context={"big": big},
                                           form={"big": big}, approvers=[user.username])
        Decision.objects.create(approval=approval, username=user.username, approve=True, comment=big,
                                data={"big": big})
        Delivery.objects.create(approval=approval, recipient=user.username, channel="email", error=big)
        saved = workflow_save(owner=user, tag=f"tag-{run.pk}", definition=ONE)
        schedule = schedules.schedule_create(owner=user, workflow=saved.workflow, cron="* * * * *",
                                             inputs={"big": big})
        ScheduleFiring.objects.create(schedule=schedule, fire_time=timezone.now() - timedelta(minutes=1),
                                      fired_at=timezone.now(), outcome="started", run=run, error={"big": big})
        hook, _ = hooks.hook_create(owner=user, workflow=saved.workflow)
        HookDelivery.objects.create(hook=hook, delivery_id=str(run.pk), signature=str(run.pk), run=run)
        someone = User.objects.create(username=f"someone-{run.pk}")
        secret_set(owner=someone, name="TOKEN", value=big[:1000])
        RetentionPolicy.objects.create(owner=someone, days=30)
        NotificationTarget.objects.create(user=someone, webhook_url="https://hooks.example/x")


LISTS = ["workflows/run", "workflows/noderun", "workflows/event", "workflows/artifact", "workflows/runpatch",
         "workflows/patchrefusal", "workflows/workflow", "workflows/workflowversion", "approvals/approval",
         "approvals/decision", "approvals/delivery", "triggers/schedulefiring", "triggers/hookdelivery",
         "triggers/schedule", "triggers/hook", "approvals/notificationtarget", "vault/secret",
         "retention/retentionpolicy"]


@pytest.mark.parametrize("changelist", LISTS)
def test_a_changelist_reads_only_the_columns_it_shows_in_queries_as_few_for_any_rows(admin_client: Client,
                                                                                     user: Any,
                                                                                     changelist: str) -> None:
    everything(user, 1, "x" * 1000)
    with CaptureQueriesContext(connection) as one:
        assert admin_client.get(f"/admin/{changelist}/").status_code == 200
    everything(user, 3, "x" * 1000)
    with CaptureQueriesContext(connection) as four:
        page = admin_client.get(f"/admin/{changelist}/")

    assert page.context["cl"].result_count >= 4
    sql = "\n".join(q["sql"] for q in four)
    assert [column for column in heavy_columns() if column in sql] == []
    assert len(four) == len(one)  # nothing read row by row


def test_a_page_of_node_runs_or_events_of_megabytes_each_stays_small(admin_client: Client, user: Any) -> None:
    big = "m" * 1_000_000
    run = stored_run(user, {**ONE, "metadata": {"description": big}})
    NodeRun.objects.bulk_create([
        NodeRun(run=run, node_id=f"step-{i}", node_type="transform", input={"big": big}, output={"big": big},
                error={"message": big}, attempt_log=[{"big": big}]) for i in range(5)])
    Event.objects.bulk_create([Event(run=run, seq=i, type="node_completed", node_id=f"step-{i}", data={"big": big})
                               for i in range(5)])

    for changelist in ("/admin/workflows/noderun/", "/admin/workflows/event/"):
        with CaptureQueriesContext(connection) as queries:
            page = admin_client.get(changelist)
        assert page.status_code == 200 and "step-4" in page.content.decode()
        assert len(page.content) < 100_000
        sql = "\n".join(q["sql"] for q in queries)
        for column in ("input", "output", "error", "attempt_log", "data", "content", "inputs"):
            assert f'."{column}"' not in sql  # of no table: not the run's, nor its artifacts'


def choices(response: Any, title: str) -> list[str]:
    """A list filter's choices as the page offers them, "All" left out."""
    changelist = response.context["cl"]
    spec = next(spec for spec in changelist.filter_specs if spec.title == title)
    return [str(choice["display"]) for choice in spec.choices(changelist)][1:]


def test_node_type_and_rule_filters_offer_what_is_declared_without_reading_the_table(admin_client: Client,
                                                                                      user: Any) -> None:
    run = stored_run(user)
    NodeRun.objects.bulk_create([NodeRun(run=run, node_id=f"n-{i}", node_type=node_type)
                                 for i, node_type in enumerate(["transform", "http", "retired"])])
    with pytest.raises(PatchRejected):  # an agent's patch of the run's rules: a refusal as the policy names it
        run_patch_propose(run=run, operations=[{"op": "add", "path": "/metadata", "value": {}}], node_id="a")
    PatchRefusal.objects.bulk_create([PatchRefusal(run=run, rule=rule, message=rule)
                                      for rule in ["gate_bypass", "schema.required", "edge_node_exists"]])

    with CaptureQueriesContext(connection) as queries:
        node_runs = admin_client.get("/admin/workflows/noderun/")
        refusals = admin_client.get("/admin/workflows/patchrefusal/")

    assert not [q["sql"] for q in queries if "DISTINCT" in q["sql"].upper()]
    assert choices(node_runs, "node type") == sorted(registry.catalogue())  # "retired" is no choice
    assert {"transform", "http", "agent", "hitl"} <= set(choices(node_runs, "node type"))
    assert choices(refusals, "rule")[:-1] == [rule.value for rule in Rule]

    def count(changelist: str, **query: str) -> int:
        return admin_client.get(f"/admin/workflows/{changelist}/", query).context["cl"].result_count

    assert count("noderun", node_type="http") == count("noderun", node_type="retired") == 1
    assert count("patchrefusal", rule="metadata_immutable") == count("patchrefusal", rule="gate_bypass") == 1
    assert count("patchrefusal", rule="other") == 2  # the validator's rules
    assert count("patchrefusal", rule="schema.required") == 1


@pytest.mark.parametrize(("changelist", "lookup"), [
    ("workflows/noderun", "output__icontains"), ("workflows/noderun", "attempt_log__icontains"),
    ("workflows/event", "data__icontains"), ("workflows/artifact", "content__icontains"),
    ("workflows/run", "inputs__regex"), ("workflows/runpatch", "operations__icontains"),
    ("approvals/approval", "context__icontains"), ("approvals/approval", "message__iregex"),
    ("workflows/noderun", "error__icontains"),
])
def test_a_changelist_filters_by_its_filters_and_the_row_it_belongs_to_not_by_any_column(
        admin_client: Client, user: Any, changelist: str, lookup: str) -> None:
    """Django lets a changelist's address filter by any column of its table (``?output__icontains=``),
    whatever the page's filters and search offer: one such page read every node run's output (up
    to AOB_MAX_NODE_OUTPUT_BYTES each) in one statement, 2.7 s for 40 outputs of 4 MB, growing with
    the table, where the search reads a bounded number of terms over short columns. A page filters
    by its declared filters and, from the links ``latest_rows`` makes, by the row it belongs to."""
    big = "m" * 1_000_000
    run = stored_run(user, {**ONE, "metadata": {"description": big}})
    NodeRun.objects.bulk_create([NodeRun(run=run, node_id=f"step-{i}", node_type="transform", output={"big": big},
                                         error={"message": big}, attempt_log=[{"big": big}]) for i in range(3)])
    Event.objects.create(run=run, seq=1, type="node_completed", node_id="step-0", data={"big": big})

    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(f"/admin/{changelist}/", {lookup: "(m+)+z"})

    assert response.status_code == 400, response.status_code
    assert response.json()["details"] == {"rule": "disallowed_model_admin_lookup"}
    assert lookup in response.json()["message"]
    sql = "\n".join(q["sql"] for q in queries)
    assert [column for column in heavy_columns() if column in sql] == []
    # what the pages link to still filters
    assert admin_client.get("/admin/workflows/noderun/", {"run": run.pk, "status__exact": "queued"}).status_code == 200
