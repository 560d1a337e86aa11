"""The admin obeys the rules every other surface obeys: a run is cancelled only by its owner and
only by a user allowed to change runs; a workflow is read here, made and changed by its service."""

from __future__ import annotations

from typing import Any

from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission
from django.test import Client

from tests.conftest import stored_run
from workflows.models import Run, Workflow
from workflows.services.definitions import workflow_save

CHANGELIST = "/admin/workflows/run/"
ONE = {"nodes": [{"id": "a", "type": "transform", "config": {"expression": "1"}}], "edges": []}


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def cancel(client: Client, run: Run) -> list[str]:
    response = client.post(CHANGELIST, {"action": "cancel_runs", "_selected_action": [str(run.pk)], "index": 0},
                           follow=True)
    assert response.status_code == 200
    return [str(m) for m in response.context["messages"]]


def test_view_only_staff_is_not_offered_the_cancel_and_cannot_post_it(make_user: Any, user: Any) -> None:
    viewer = make_user("viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_run"))
    run = stored_run(user)
    client = logged_in(viewer)

    assert client.get(CHANGELIST).status_code == 200
    assert "cancel_runs" not in client.get(CHANGELIST).content.decode()
    cancel(client, run)
    assert Run.objects.get(pk=run.pk).status == run.status != "cancelled"


def test_staff_cancel_only_their_own_runs_as_on_the_api(make_user: Any, user: Any) -> None:
    root = make_user("root", is_staff=True, is_superuser=True)
    theirs, own = stored_run(user), stored_run(root)
    client = logged_in(root)

    assert cancel(client, theirs) == [f"run {theirs.pk}: only the run's owner may cancel it"]
    assert Run.objects.get(pk=theirs.pk).status == theirs.status != "cancelled"
    assert cancel(client, own) == [f"run {own.pk}: cancelled"]
    assert Run.objects.get(pk=own.pk).status == "cancelled"


def test_a_workflows_owner_and_tag_are_not_edited_in_the_admin(make_user: Any, user: Any) -> None:
    root, bob = make_user("root", is_staff=True, is_superuser=True), make_user("bob")
    workflow = workflow_save(owner=user, tag="refunds", definition=ONE).workflow
    client = logged_in(root)
    change = f"/admin/workflows/workflow/{workflow.pk}/change/"

    page = client.get(change).content.decode()
    assert 'name="tag"' not in page and 'name="owner"' not in page and 'name="_save"' not in page
    assert client.post(change, {"tag": "stolen", "owner": bob.pk}).status_code == 403
    assert client.post("/admin/workflows/workflow/add/", {"tag": "new", "owner": bob.pk}).status_code == 403
    workflow.refresh_from_db()
    assert (workflow.tag, workflow.owner) == ("refunds", user)

    assert client.post(f"/admin/workflows/workflow/{workflow.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Workflow.objects.filter(pk=workflow.pk).exists()  # deleted by workflow_delete (API, CLI)


def staff_with(make_user: Any, name: str, *codenames: str) -> Any:
    """A staff member (not a superuser) an operator gave these models' permissions."""
    member = make_user(name, is_staff=True)
    member.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return member


def test_staff_add_change_and_delete_only_their_own_schedules(make_user: Any, user: Any) -> None:
    from triggers.models import Schedule
    from triggers.services.schedules import schedule_create

    # who may see another's schedule at all (``test_staff_who_look_after_their_own_schedules_...``)
    lead = staff_with(make_user, "lead", "add_schedule", "change_schedule", "delete_schedule", "view_schedule",
                      "view_run", "view_workflow")
    theirs = schedule_create(owner=user, workflow=workflow_save(owner=user, tag="nightly", definition=ONE).workflow,
                             cron="0 3 * * *")
    client = logged_in(lead)
    form = {"owner": user.pk, "workflow": theirs.workflow_id, "name": "mine now", "cron": "* * * * *",
            "timezone": "UTC", "inputs": '{"to": "lead"}', "version": "", "catch_up": "skip", "enabled": "on"}

    # a schedule starts runs as its owner, with that owner's secrets: not one made for someone else
    response = client.post("/admin/triggers/schedule/add/", form)
    assert response.status_code == 200 and "owner" in response.context["adminform"].form.errors
    change = f"/admin/triggers/schedule/{theirs.pk}/change/"
    assert 'name="_save"' not in client.get(change).content.decode()  # read-only to them
    assert client.post(change, {**form, "cron": "* * * * *"}).status_code == 403
    assert client.post(f"/admin/triggers/schedule/{theirs.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Schedule.objects.filter(owner=user).count() == 1 and not Schedule.objects.filter(owner=lead).exists()
    assert Schedule.objects.get(pk=theirs.pk).cron == "0 3 * * *"

    own = workflow_save(owner=lead, tag="mine", definition=ONE).workflow
    assert client.post("/admin/triggers/schedule/add/", {**form, "owner": lead.pk, "workflow": own.pk}).status_code == 302
    assert Schedule.objects.get(owner=lead).inputs == {"to": "lead"}


def test_staff_set_only_their_own_secrets_and_targets(make_user: Any, user: Any) -> None:
    from approvals.models import NotificationTarget
    from vault import crypto
    from vault.models import Secret
    from vault.services import secret_set

    lead = staff_with(make_user, "lead", "add_secret", "change_secret", "view_secret",
                      "add_notificationtarget", "change_notificationtarget", "view_notificationtarget")
    secret, _ = secret_set(owner=user, name="CRM", value="the-real-token")
    client = logged_in(lead)

    # an overwritten value would send the owner's requests with a token the staff member chose
    assert client.post(f"/admin/vault/secret/{secret.pk}/change/", {"value": "lead-token-123"}).status_code == 403
    assert crypto.decrypt(Secret.objects.get(pk=secret.pk).ciphertext) == "the-real-token"
    response = client.post("/admin/vault/secret/add/", {"owner": user.pk, "name": "NEW", "value": "lead-token-123"})
    assert response.status_code == 200 and "owner" in response.context["adminform"].form.errors
    assert not Secret.objects.filter(name="NEW").exists()
    # their own: the form offers them as its owner (they may not list users), and saves it
    assert f'<option value="{lead.pk}" selected>lead</option>' in client.get("/admin/vault/secret/add/").content.decode()
    assert client.post("/admin/vault/secret/add/", {"owner": lead.pk, "name": "MINE", "value": "x" * 16}).status_code == 302
    assert Secret.objects.get(name="MINE").owner == lead

    # a target receives what its person is asked to approve, and the run's context with it
    response = client.post("/admin/approvals/notificationtarget/add/",
                           {"user": user.pk, "webhook_url": "https://hooks.example.com/lead", "enabled": "on"})
    assert response.status_code == 200 and "user" in response.context["adminform"].form.errors
    assert not NotificationTarget.objects.exists()


def test_api_tokens_are_a_superusers_page_only(make_user: Any, user: Any) -> None:
    viewer = staff_with(make_user, "viewer", "view_tokenproxy", "view_token")
    root = make_user("root", is_staff=True, is_superuser=True)
    key = user.auth_token.key

    assert logged_in(viewer).get("/admin/authtoken/tokenproxy/").status_code == 403
    assert "authtoken" not in logged_in(viewer).get("/admin/").content.decode()
    assert key in logged_in(root).get("/admin/authtoken/tokenproxy/").content.decode()


def test_staff_see_no_one_elses_notification_targets_a_webhook_url_is_a_credential(make_user: Any,
                                                                                   user: Any) -> None:
    """Others' rows are read-only to staff who are not superusers, but a target's webhook URL is
    all one needs to post into its person's channel: the list and page showed it whole (a red-team
    helper's finding). Now they see their own targets only; a superuser sees every one."""
    from approvals.models import NotificationTarget

    theirs = NotificationTarget.objects.create(user=user, webhook_url="https://hooks.example.com/T0/alice-token")
    helper = staff_with(make_user, "helper", "view_notificationtarget", "add_notificationtarget",
                        "change_notificationtarget")
    mine = NotificationTarget.objects.create(user=helper, webhook_url="https://hooks.example.com/T0/helper-token")
    client = logged_in(helper)
    listed = client.get("/admin/approvals/notificationtarget/").content.decode()
    assert "helper-token" in listed and "alice-token" not in listed
    assert client.get(f"/admin/approvals/notificationtarget/{theirs.pk}/change/").status_code == 302  # not found
    assert "helper-token" in client.get(f"/admin/approvals/notificationtarget/{mine.pk}/change/").content.decode()
    root = logged_in(make_user("root", is_staff=True, is_superuser=True))
    assert "alice-token" in root.get("/admin/approvals/notificationtarget/").content.decode()


def run_with_rows(owner: Any, secret: str) -> Run:
    """A run of ``owner`` whose inputs, node run, event, refused patch, approval (asking ``bob``) and
    schedule firing each carry ``secret``."""
    from approvals.models import Approval
    from tests.conftest import set_inputs
    from triggers.models import ScheduleFiring
    from triggers.services.schedules import schedule_create
    from workflows.models import Event, NodeRun, PatchRefusal

    run = stored_run(owner)
    set_inputs(run, {"salary": secret}, event_seq=1)
    NodeRun.objects.create(run=run, node_id="pay", node_type="transform", status="failed",
                           error={"message": secret})
    Event.objects.create(run=run, seq=1, type="node_failed", node_id="pay", data={"message": secret})
    PatchRefusal.objects.create(run=run, rule="max_operations", message=secret, operations=[])
    Approval.objects.create(run=run, node_id="gate", message=secret, approvers=["bob"])
    schedule = schedule_create(owner=owner, workflow=workflow_save(owner=owner, tag=f"{owner.username}-nightly",
                                                                   definition=ONE).workflow, cron="0 3 * * *")
    ScheduleFiring.objects.create(schedule=schedule, fire_time=run.created_at, fired_at=run.created_at,
                                  outcome="failed", run=run, error={"message": secret})
    return run


RUN_PAGES = ["workflows/run", "workflows/noderun", "workflows/event", "workflows/patchrefusal", "workflows/artifact",
             "approvals/approval", "triggers/schedulefiring"]


def test_staff_who_may_cancel_their_own_runs_read_no_one_else_s(make_user: Any, user: Any) -> None:
    """Django's admin takes a change permission as a view one: staff given ``change_run`` (to cancel
    their own runs, ``cancel_runs``) and the run rows' permissions read every tenant's runs, their
    inputs, node runs, events, refusals, approvals and firings, which every other surface refuses
    them without ``workflows.view_run`` (``visibility.reads_every_run``). They read their own."""
    theirs = run_with_rows(user, "ALICE-PRIVATE-123456")
    ops = staff_with(make_user, "ops", "change_run", "change_noderun", "view_event", "view_patchrefusal",
                     "view_artifact", "view_approval", "view_schedulefiring", "view_schedule")
    own = run_with_rows(ops, "OPS-OWN-654321")
    client = logged_in(ops)

    for page in RUN_PAGES:
        listed = client.get(f"/admin/{page}/")
        assert listed.status_code == 200, page
        assert "ALICE-PRIVATE" not in listed.content.decode() and str(theirs.pk) not in listed.content.decode(), page
        assert listed.context["cl"].result_count >= 1, page  # their own, as before
    assert str(own.pk) in client.get(CHANGELIST).content.decode()
    page = client.get(f"{CHANGELIST}{theirs.pk}/change/")
    assert page.status_code == 302 and "ALICE-PRIVATE" not in page.content.decode()  # as a run that does not exist
    assert "OPS-OWN" in client.get(f"{CHANGELIST}{own.pk}/change/").content.decode()
    # nor another owner's schedule, whose runs they may not read
    from triggers.models import Schedule

    alices = client.get(f"/admin/triggers/schedule/{Schedule.objects.get(owner=user).pk}/change/")
    assert alices.status_code == 302 and "ALICE-PRIVATE" not in alices.content.decode()
    assert "OPS-OWN" in client.get(f"/admin/triggers/schedule/{Schedule.objects.get(owner=ops).pk}/change/").content.decode()

    # the cancel still cancels their own
    assert cancel(client, own) == [f"run {own.pk}: cancelled"]
    assert Run.objects.get(pk=own.pk).status == "cancelled"
    assert Run.objects.get(pk=theirs.pk).status == theirs.status != "cancelled"

    # with the permission to read runs they read every owner's, as on the API
    reader = logged_in(staff_with(make_user, "reader", "view_run", "view_noderun"))
    assert "ALICE-PRIVATE" in reader.get(f"{CHANGELIST}{theirs.pk}/change/").content.decode()
    assert str(theirs.pk) in reader.get(CHANGELIST).content.decode()
    assert reader.get("/admin/workflows/noderun/").context["cl"].result_count == 2


def test_staff_asked_to_approve_see_those_approvals_in_the_admin_and_no_others(make_user: Any, user: Any) -> None:
    """The admin is one place to decide: an approval asking a staff member is listed to them, as the
    API lists it (``approvals.selectors.seen_by``); another's that does not ask them is not."""
    from approvals.models import Approval

    asked = run_with_rows(user, "ASKED-OF-BOB")
    other = stored_run(user)
    Approval.objects.create(run=other, node_id="gate", message="NOT-FOR-BOB", approvers=["carol"])
    bob = staff_with(make_user, "bob", "view_approval", "view_decision")
    listed = logged_in(bob).get("/admin/approvals/approval/").content.decode()

    assert "ASKED-OF-BOB" in listed and "NOT-FOR-BOB" not in listed
    assert logged_in(bob).get(f"{CHANGELIST}{asked.pk}/change/").status_code == 403  # no run permission at all


def test_staff_who_look_after_their_own_schedules_and_hooks_read_no_one_else_s(make_user: Any, user: Any) -> None:
    """A schedule's inputs are those of every run it starts, and a schedule or hook names its
    owner's workflow: staff given only the schedules' and hooks' permissions read another owner's
    inputs on its schedule's page and every owner's workflow tags in both lists (a red-team
    helper's finding), while the API answers them a 404 for those runs, schedules and workflows.
    Another owner's schedules and hooks are now read, read-only, by staff who read every owner's
    runs and workflows (``visibility.reads_every_run_and_workflow``), and by no one else."""
    from tests.conftest import client_for
    from triggers.services import hooks
    from triggers.services.schedules import schedule_create

    workflow = workflow_save(owner=user, tag="acquisition-of-initech", definition=ONE).workflow
    schedule = schedule_create(owner=user, workflow=workflow, cron="0 3 * * *", inputs={"target": "INITECH-42M"})
    hook, _ = hooks.hook_create(owner=user, workflow=workflow)
    pages = {f"/admin/triggers/schedule/{schedule.pk}/change/", f"/admin/triggers/hook/{quote(hook.pk)}/change/"}
    lists = ["/admin/triggers/schedule/", "/admin/triggers/hook/"]
    lead = staff_with(make_user, "lead", "add_schedule", "change_schedule", "delete_schedule", "view_schedule",
                      "change_hook", "view_hook")
    own = schedule_create(owner=lead, workflow=workflow_save(owner=lead, tag="lead-nightly", definition=ONE).workflow,
                          cron="0 4 * * *", inputs={"to": "LEAD-OWN"})
    client = logged_in(lead)

    assert client_for(lead).get(f"/api/v1/schedules/{schedule.pk}").status_code == 404  # as on the API
    for page in pages:
        response = client.get(page)
        assert response.status_code == 302, page  # as a row that does not exist
        assert "INITECH" not in response.content.decode() and "initech" not in response.content.decode(), page
    for page in lists:
        response = client.get(page)
        assert response.status_code == 200 and "acquisition-of-initech" not in response.content.decode(), page
    assert "lead-nightly" in client.get(lists[0]).content.decode()  # their own, as before
    assert "LEAD-OWN" in client.get(f"/admin/triggers/schedule/{own.pk}/change/").content.decode()

    # reading every owner's runs is not reading every owner's workflows
    runs_only = logged_in(staff_with(make_user, "runs", "view_schedule", "view_hook", "view_run"))
    assert all("acquisition-of-initech" not in runs_only.get(page).content.decode() for page in lists)
    # with both they read them, as they read those runs and workflows everywhere: read-only
    reader = logged_in(staff_with(make_user, "reader", "view_schedule", "change_hook", "view_hook", "view_run",
                                  "view_workflow"))
    assert all("acquisition-of-initech" in reader.get(page).content.decode() for page in lists)
    assert "INITECH-42M" in reader.get(f"/admin/triggers/schedule/{schedule.pk}/change/").content.decode()
    assert 'name="_save"' not in reader.get(f"/admin/triggers/hook/{quote(hook.pk)}/change/").content.decode()


def test_the_admin_tells_of_a_shared_artifact_only_what_the_api_tells_the_reader(make_user: Any, user: Any) -> None:
    """Same content, same artifact row, whose own kind and time are its first storer's. The API
    answers carol the kind and time of her own reference (``selectors.artifact_seen``: an id tells
    nobody whether, when or as what someone else stored the same content); the admin's artifact
    page told staff carol (given ``view_artifact`` to look at her own) alice's, its list showed and
    filtered by them, and every page naming the artifact (a version's list) named it by the row's
    kind (a red-team helper's finding). Staff who read every run and workflow read the row's own."""
    from datetime import timedelta

    from django.utils import timezone

    from tests.conftest import client_for
    from workflows.models import Artifact, WorkflowVersion
    from workflows.services.artifacts import artifact_store

    guessable = {"nodes": [{"id": "pay", "type": "transform", "config": {"expression": "'acme-merger'"}}],
                 "edges": []}
    stored_run(user)
    artifact = artifact_store(kind="node_io", content=guessable)  # alice's node's output, long ago
    Artifact.objects.filter(pk=artifact.pk).update(created_at=timezone.now() - timedelta(days=400))
    long_ago = timezone.localtime(Artifact.objects.get(pk=artifact.pk).created_at).strftime("%Y-%m-%d")
    carol = staff_with(make_user, "carol", "view_artifact", "view_workflowversion")
    stored_run(carol, guessable)  # carol stores the same content, as her run's definition
    WorkflowVersion.objects.create(workflow=workflow_save(owner=carol, tag="carols", definition=ONE).workflow,
                                   seq=2, artifact=artifact)
    assert client_for(carol).get(f"/api/v1/artifacts/{artifact.pk}").json()["kind"] == "dag_version"  # the API's rule
    client = logged_in(carol)

    page = client.get(f"/admin/workflows/artifact/{artifact.pk}/change/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "Dag Version" in text and "Node Io" not in text and "node_io" not in text  # her reference's kind
    assert long_ago not in text and timezone.localtime().strftime("%Y-%m-%d") in text  # and time
    listed = client.get("/admin/workflows/artifact/")
    assert listed.status_code == 200 and artifact.pk[:19] in listed.content.decode()
    assert "Node Io" not in listed.content.decode() and long_ago not in listed.content.decode()
    assert client.get("/admin/workflows/artifact/?kind=node_io").status_code == 400  # no filter to ask by
    versions = client.get("/admin/workflows/workflowversion/").content.decode()
    assert artifact.pk[:19] in versions and "node_io" not in versions  # a page naming it names it by id

    reader = logged_in(staff_with(make_user, "reader", "view_artifact", "view_run", "view_workflow"))
    assert "Node Io" in reader.get(f"/admin/workflows/artifact/{artifact.pk}/change/").content.decode()
    assert "Node Io" in reader.get("/admin/workflows/artifact/?kind=node_io").content.decode()


def test_the_admins_deliveries_do_not_list_who_is_in_a_group_ones_gate_names(make_user: Any) -> None:
    """carol (staff, given ``view_delivery`` to look at her own gates' notifications) names the
    group ``finance``, which she is not in, on a gate of her own run. The API answers her with the
    group's name only (test_ones_own_gate_does_not_list_who_is_in_a_group_it_names); the admin's
    Deliveries pages named each member: anyone so permitted listed every group's members, one gate
    at a time (a red-team helper's finding). Staff who read every run read whom each was sent to."""
    from django.contrib.auth.models import Group

    from approvals.models import Approval
    from approvals.notifications import approval_notify
    from tests.conftest import client_for

    finance = Group.objects.create(name="finance")
    for name in ("erin", "frank"):
        make_user(name, email=f"{name}@example.com").groups.add(finance)
    carol = staff_with(make_user, "carol", "view_delivery")
    approval = Approval.objects.create(run=stored_run(carol), approvers=["finance"])
    approval_notify(approval=approval)
    assert "frank" not in client_for(carol).get(f"/api/v1/approvals/{approval.pk}").content.decode()  # the API's
    erins = approval.deliveries.get(user__username="erin")
    client = logged_in(carol)

    listed = client.get("/admin/approvals/delivery/")
    assert listed.status_code == 200 and listed.context["cl"].result_count == 2  # an email to each
    detail = client.get(f"/admin/approvals/delivery/{erins.pk}/change/")
    assert detail.status_code == 200 and "finance" in detail.content.decode()
    for text in (listed.content.decode(), detail.content.decode()):
        assert "erin" not in text and "frank" not in text
    # nor filters by them: ?user=<id> counted 1 row for a member, 0 for anyone else (a red-team helper's)
    gina = make_user("gina", email="gina@example.com")
    for lookup in (f"user={erins.user_id}", f"user={gina.pk}", f"user__id__exact={erins.user_id}", "target=1",
                   "user__isnull=True"):
        assert client.get(f"/admin/approvals/delivery/?{lookup}").status_code == 400, lookup

    reader = logged_in(staff_with(make_user, "reader", "view_delivery", "view_run"))
    assert "erin" in reader.get("/admin/approvals/delivery/").content.decode()
    assert reader.get(f"/admin/approvals/delivery/?user={erins.user_id}").context["cl"].result_count == 1
    assert "erin" in reader.get(f"/admin/approvals/delivery/{erins.pk}/change/").content.decode()


def test_staff_read_another_owners_hook_deliveries_only_where_they_read_the_hook(make_user: Any, user: Any) -> None:
    """A hook's delivery names the hook (its id, in its URL) and the delivery's signature: staff
    given only ``view_run`` and ``view_hookdelivery`` read every owner's, while another's hook
    itself is read only by staff who read every owner's runs and workflows (``HookAdmin``)."""
    from triggers.models import HookDelivery
    from triggers.services import hooks

    hook, _ = hooks.hook_create(owner=user, workflow=workflow_save(owner=user, tag="alices", definition=ONE).workflow)
    HookDelivery.objects.create(hook=hook, delivery_id="ALICE-DELIVERY", signature="a" * 64)

    runs_only = logged_in(staff_with(make_user, "runs", "view_run", "view_hookdelivery"))
    listed = runs_only.get("/admin/triggers/hookdelivery/")
    assert listed.status_code == 200 and "ALICE-DELIVERY" not in listed.content.decode()
    assert hook.pk not in listed.content.decode()
    reader = logged_in(staff_with(make_user, "reader", "view_run", "view_workflow", "view_hookdelivery"))
    assert "ALICE-DELIVERY" in reader.get("/admin/triggers/hookdelivery/").content.decode()
