"""Schedules and hooks in the admin obey the rules they obey on the API: the services' checks show
as form errors (never a 500), and what is saved or deleted goes through the services."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.admin.utils import quote  # a hook id may hold "_" and hex: the admin escapes it
from django.contrib.auth.models import Permission, User
from django.db.models import ProtectedError
from django.test import Client
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from rest_framework.test import APIClient

from triggers.models import Hook, HookDelivery, Schedule, ScheduleFiring
from triggers.services import hooks, schedules
from workflows.models import Run
from workflows.services.definitions import workflow_save

ONE = {"nodes": [{"id": "a", "type": "transform", "config": {"expression": "1"}}], "edges": []}
ADD = "/admin/triggers/schedule/add/"


@pytest.fixture
def admin_client(make_user: Any) -> Client:
    client = Client()
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def bob(make_user: Any) -> Any:
    return make_user("bob")


def form(owner: Any, workflow: Any, **fields: Any) -> dict[str, Any]:
    return {"owner": owner.pk, "workflow": workflow.pk, "name": "nightly", "cron": "0 3 * * *", "timezone": "UTC",
            "inputs": "{}", "version": "", "catch_up": "skip", "enabled": "on", **fields}


def errors(response: Any) -> dict[str, list[str]]:
    assert response.status_code == 200, response.status_code  # the form again, with its errors
    form = response.context["adminform"].form
    return {field: [str(e) for e in errs] for field, errs in form.errors.items()}


def test_a_schedule_added_in_the_admin_goes_through_the_service(admin_client: Client, user: Any) -> None:
    workflow = workflow_save(owner=user, tag="nightly", definition=ONE).workflow

    response = admin_client.post(ADD, form(user, workflow, cron="0  3 * * *", inputs='{"day": 1}'))

    assert response.status_code == 302
    schedule = Schedule.objects.get()
    assert (schedule.owner, schedule.workflow, schedule.cron, schedule.inputs) == (user, workflow, "0 3 * * *",
                                                                                  {"day": 1})
    task = PeriodicTask.objects.get(pk=schedule.periodic_task_id)
    assert task.name == f"aob-schedule-{schedule.pk}" and task.crontab.hour == "3"


@pytest.mark.parametrize(("fields", "field", "message"), [
    ({"version": "99"}, "version", "workflow 'nightly' has no version 99"),
    ({"cron": "61 * * * *"}, "cron", "is not a five-field cron expression"),
    ({"timezone": "Mars/Olympus"}, "timezone", "unknown time zone 'Mars/Olympus'"),
    ({"inputs": "[1, 2]"}, "inputs", "a run's inputs are a JSON object"),
    # the service's bound, which the form did not say (it saved through the service, refused as a message)
    ({"inputs": '{"text": "' + "x" * 70_000 + '"}'}, "inputs", "bytes; at most 65536"),
])
def test_a_field_the_service_refuses_is_a_form_error(admin_client: Client, user: Any, fields: dict, field: str,
                                                     message: str) -> None:
    workflow = workflow_save(owner=user, tag="nightly", definition=ONE).workflow

    shown = errors(admin_client.post(ADD, form(user, workflow, **fields)))

    assert list(shown) == [field] and message in shown[field][0]
    assert not Schedule.objects.exists() and not PeriodicTask.objects.filter(task=schedules.FIRE_TASK).exists()


# JSON the API's parser refuses (``workflows.api.parsers.loads_strict``), typed into the admin's forms
UNSTORABLE_JSON = [
    ('{"to": "a\\u0000b"}', "NUL"), ('{"to\\u0000": 1}', "NUL"), ('{"to": "\\ud800"}', "surrogates"),
    ('{"amount": 1e999}', "outside the range of a double"), ('{"n": 99999999999999999999}', "64-bit"),
    ('{"a": ' * 5000 + "1" + "}" * 5000, "nesting"),
]


@pytest.mark.parametrize(("text", "rule"), UNSTORABLE_JSON, ids=["nul", "nul-key", "surrogate", "infinity", "int65",
                                                                  "deep"])
def test_json_the_api_refuses_is_a_form_error_in_the_admin_not_a_500(admin_client: Client, user: Any, text: str,
                                                                     rule: str) -> None:
    """The admin's forms parsed a schedule's inputs and a hook's mapping with Python's json, which
    takes what PostgreSQL refuses (NUL, lone surrogates), what no JSON is (1e999 is Infinity) and
    nesting past the recursion limit: each save was a 500. They are the API's rules, by field."""
    workflow = workflow_save(owner=user, tag="nightly", definition=ONE).workflow
    hook, _ = hooks.hook_create(owner=user, workflow=workflow, name="push")
    schedule = schedules.schedule_create(owner=user, workflow=workflow, cron="0 3 * * *")
    mapping = '{"template": {"k": ' + text + "}}"

    for response, field in [(admin_client.post(ADD, form(user, workflow, inputs=text)), "inputs"),
                            (admin_client.post(f"/admin/triggers/schedule/{schedule.pk}/change/",
                                               form(user, workflow, inputs=text)), "inputs"),
                            (admin_client.post(f"/admin/triggers/hook/{quote(hook.pk)}/change/",
                                               {"name": "push", "mapping": mapping, "enabled": "on"}), "mapping")]:
        shown = errors(response)
        assert list(shown) == [field] and rule in shown[field][0], shown

    assert list(Schedule.objects.values_list("pk", "inputs")) == [(schedule.pk, {})]
    assert Hook.objects.get().mapping is None


def test_a_schedule_runs_its_owners_own_workflow(admin_client: Client, user: Any, bob: Any) -> None:
    bobs = workflow_save(owner=bob, tag="bobs", definition=ONE).workflow

    shown = errors(admin_client.post(ADD, form(user, bobs)))

    assert shown == {"workflow": ["the workflow is not 'alice''s: a schedule runs its owner's own workflow"]}
    assert not Schedule.objects.exists()
    with pytest.raises(schedules.ScheduleInvalid):  # the service's rule, not the form's
        schedules.schedule_create(owner=user, workflow=bobs, cron="* * * * *")


def test_another_owner_s_workflow_is_refused_first_and_unnamed(user: Any, bob: Any) -> None:
    """Of a workflow not the owner's the refusal says nothing: neither its tag nor whether it has a
    version (judged before the owner was, that told which versions another's workflow had)."""
    bobs = workflow_save(owner=bob, tag="acquisition-of-initech", definition=ONE).workflow

    for version in (0, 7):
        with pytest.raises(schedules.ScheduleInvalid) as refused:
            schedules.schedule_check(owner=user, workflow=bobs, cron="0 3 * * *", tz="UTC", version=version)
        assert refused.value.extra == {"field": "workflow", "rule": "workflow_owner"}
        assert "acquisition-of-initech" not in refused.value.message


def test_staff_adding_a_schedule_are_not_told_another_owner_s_workflow(make_user: Any, bob: Any) -> None:
    """Staff who may add schedules for themselves type a workflow's key by hand (``raw_id_fields``);
    another owner's is refused without its tag (Django's widget named any key's row beside the box)
    and without whether it has the version asked: counting up the keys listed every owner's tags."""
    bobs = workflow_save(owner=bob, tag="acquisition-of-initech", definition=ONE).workflow
    lead = make_user("lead", is_staff=True)
    lead.user_permissions.add(*Permission.objects.filter(codename__in=["add_schedule", "view_schedule"]))
    own = workflow_save(owner=lead, tag="leads-own", definition=ONE).workflow
    client = Client()
    client.force_login(lead)

    pages = {version: client.post(ADD, form(lead, bobs, version=version)) for version in ("", "0", "7")}

    for page in pages.values():
        assert list(errors(page)) == ["workflow"]
        assert "acquisition-of-initech" not in page.content.decode()
    assert errors(pages["0"]) == errors(pages["7"])
    assert not Schedule.objects.exists()
    # one's own is named beside the box, as before
    assert "leads-own" in client.post(ADD, form(lead, own, cron="nonsense")).content.decode()


def test_the_owners_schedule_limit_holds_in_the_admin(admin_client: Client, user: Any, settings: Any) -> None:
    settings.AOB_MAX_SCHEDULES_PER_OWNER = 1
    workflow = workflow_save(owner=user, tag="nightly", definition=ONE).workflow
    assert admin_client.post(ADD, form(user, workflow)).status_code == 302

    shown = errors(admin_client.post(ADD, form(user, workflow, name="second")))

    assert shown == {"__all__": ["an owner has at most 1 schedules (AOB_MAX_SCHEDULES_PER_OWNER); delete one first"]}
    assert Schedule.objects.count() == 1


def test_a_change_goes_through_the_service_and_keeps_owner_and_workflow(admin_client: Client, user: Any,
                                                                        bob: Any) -> None:
    workflow = workflow_save(owner=user, tag="nightly", definition=ONE).workflow
    schedule = schedules.schedule_create(owner=user, workflow=workflow, cron="0 3 * * *")
    bobs = workflow_save(owner=bob, tag="bobs", definition=ONE).workflow
    change = f"/admin/triggers/schedule/{schedule.pk}/change/"

    assert errors(admin_client.post(change, form(user, workflow, version="7")))["version"] == [
        "workflow 'nightly' has no version 7"]
    response = admin_client.post(change, form(bob, bobs, cron="30 4 * * *", enabled=""))

    assert response.status_code == 302
    schedule.refresh_from_db()
    assert (schedule.owner, schedule.workflow, schedule.cron, schedule.enabled) == (user, workflow, "30 4 * * *",
                                                                                  False)
    task = PeriodicTask.objects.get(pk=schedule.periodic_task_id)
    assert (task.crontab.minute, task.crontab.hour, task.enabled) == ("30", "4", False)


def test_deleting_schedules_in_the_admin_removes_their_beat_entries(admin_client: Client, user: Any) -> None:
    workflow = workflow_save(owner=user, tag="nightly", definition=ONE).workflow
    made = [schedules.schedule_create(owner=user, workflow=workflow, cron="0 3 * * *") for _ in range(3)]

    response = admin_client.post(f"/admin/triggers/schedule/{made[0].pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    response = admin_client.post("/admin/triggers/schedule/", {
        "action": "delete_selected", "_selected_action": [s.pk for s in made[1:]], "post": "yes"})

    assert response.status_code == 302
    assert not Schedule.objects.exists()
    assert not PeriodicTask.objects.filter(task=schedules.FIRE_TASK).exists()


def test_beat_s_entry_of_a_schedule_is_changed_only_through_its_schedule(admin_client: Client, user: Any) -> None:
    """Deleted in django-celery-beat's admin, the entry took the schedule's link with it and the
    schedule stayed enabled, never firing again, with nothing to say so; disabled or changed there,
    the schedule said one thing and beat did another."""
    workflow = workflow_save(owner=user, tag="nightly", definition=ONE).workflow
    schedule = schedules.schedule_create(owner=user, workflow=workflow, cron="0 3 * * *")
    other = PeriodicTask.objects.create(name="someone's own", task="workflows.sweep",
                                        crontab=schedule.periodic_task.crontab)
    entries = "/admin/django_celery_beat/periodictask/"

    listed = admin_client.get(entries)
    change = admin_client.get(f"{entries}{schedule.periodic_task_id}/change/")
    delete = admin_client.post(f"{entries}{schedule.periodic_task_id}/delete/", {"post": "yes"})
    disable = admin_client.post(entries, {"action": "disable_tasks", "post": "yes",
                                          "_selected_action": [schedule.periodic_task_id, other.pk]})

    assert listed.status_code == 200 and "someone&#x27;s own" in listed.content.decode()
    assert f"aob-schedule-{schedule.pk}" not in listed.content.decode()
    assert change.status_code == 302 and delete.status_code == 302 and disable.status_code == 302
    assert PeriodicTask.objects.filter(pk=schedule.periodic_task_id, enabled=True).exists()
    assert not PeriodicTask.objects.get(pk=other.pk).enabled  # the page still works for other entries
    with pytest.raises(ProtectedError):  # nor may anything else delete it on its own
        PeriodicTask.objects.filter(pk=schedule.periodic_task_id).delete()
    schedules.schedule_delete(schedule=schedule)  # with its schedule it goes
    assert not PeriodicTask.objects.filter(task=schedules.FIRE_TASK).exists()


def test_a_hook_mapping_saved_in_the_admin_is_checked_as_on_the_api(admin_client: Client, user: Any) -> None:
    workflow = workflow_save(owner=user, tag="nightly", definition=ONE).workflow
    hook, _ = hooks.hook_create(owner=user, workflow=workflow, name="push")
    change = f"/admin/triggers/hook/{quote(hook.pk)}/change/"

    shown = errors(admin_client.post(change, {"name": "push", "mapping": '{"x": 1}', "enabled": "on"}))
    assert shown == {"mapping": ['mapping is {"cel": "<expression>"} or {"template": <JSON>}']}
    shown = errors(admin_client.post(change, {"name": "push", "mapping": '{"cel": "body."}', "enabled": "on"}))
    assert list(shown) == ["mapping"] and shown["mapping"][0].startswith("mapping.cel: ")
    hook.refresh_from_db()
    assert hook.mapping is None

    response = admin_client.post(change, {"name": "renamed", "mapping": '{"cel": "{\'n\': body.n}"}', "enabled": "on"})
    assert response.status_code == 302
    hook.refresh_from_db()
    assert (hook.name, hook.mapping) == ("renamed", {"cel": "{'n': body.n}"})


def test_a_stored_mapping_the_rule_refuses_is_a_clear_error_not_a_500(user: Any) -> None:
    workflow = workflow_save(owner=user, tag="nightly", definition=ONE).workflow
    hook, secret = hooks.hook_create(owner=user, workflow=workflow)
    Hook.objects.filter(pk=hook.pk).update(mapping={"x": 1})  # saved before the admin checked mappings
    body, timestamp = b'{"a": 1}', str(int(time.time()))

    response = APIClient().post(f"/api/v1/hooks/{hook.pk}", body, content_type="application/json",
                                HTTP_X_AOB_TIMESTAMP=timestamp, HTTP_X_AOB_DELIVERY="d1",
                                HTTP_X_AOB_SIGNATURE="sha256=" + hooks.signature_for(secret, timestamp, body))

    assert response.status_code == 400
    assert response.json()["error"] == "mapping_invalid"
    assert "its owner must correct it" in response.json()["message"]
    assert not HookDelivery.objects.exists() and not Run.objects.exists()


def test_a_hook_is_deleted_in_the_admin_by_its_owner_only(admin_client: Client, user: Any) -> None:
    theirs, _ = hooks.hook_create(owner=user, workflow=workflow_save(owner=user, tag="push", definition=ONE).workflow)
    root = User.objects.get(username="root")
    workflow = workflow_save(owner=root, tag="push", definition=ONE).workflow
    own = [hooks.hook_create(owner=root, workflow=workflow)[0] for _ in range(3)]
    changelist = "/admin/triggers/hook/"

    assert admin_client.post(f"{changelist}{quote(theirs.pk)}/delete/", {"post": "yes"}).status_code == 403
    assert admin_client.post(changelist, {"action": "delete_selected", "_selected_action": [theirs.pk, own[2].pk],
                                          "post": "yes"}).status_code == 403
    assert Hook.objects.count() == 4

    assert admin_client.post(f"{changelist}{quote(own[0].pk)}/delete/", {"post": "yes"}).status_code == 302
    assert admin_client.post(changelist, {"action": "delete_selected", "_selected_action": [h.pk for h in own[1:]],
                                          "post": "yes"}).status_code == 302
    assert list(Hook.objects.values_list("pk", flat=True)) == [theirs.pk]


def test_a_schedule_or_hook_with_history_is_deleted_in_the_admin_with_it(admin_client: Client) -> None:
    """Their firings and delivery ids are read-only history: Django asked for a permission to
    delete them that no one has, so the owner's delete was refused once there was one (and the
    confirmation listed every row)."""
    root = User.objects.get(username="root")
    workflow = workflow_save(owner=root, tag="push", definition=ONE).workflow
    hook, _ = hooks.hook_create(owner=root, workflow=workflow)
    schedule = schedules.schedule_create(owner=root, workflow=workflow, cron="0 3 * * *")
    for i in range(3):
        HookDelivery.objects.create(hook=hook, delivery_id=f"d{i}", signature=str(i) * 64)
        ScheduleFiring.objects.create(schedule=schedule, fire_time=timezone.now() - timedelta(days=i),
                                      fired_at=timezone.now(), outcome="started")

    for page, history in ((f"/admin/triggers/hook/{quote(hook.pk)}/delete/", "hook deliverys: 3"),
                          (f"/admin/triggers/schedule/{schedule.pk}/delete/", "schedule firings: 3")):
        asked = admin_client.get(page)
        assert asked.status_code == 200 and history in asked.content.decode().lower(), asked.content[-3000:]
        assert admin_client.post(page, {"post": "yes"}).status_code == 302

    assert not Hook.objects.exists() and not HookDelivery.objects.exists()
    assert not Schedule.objects.exists() and not ScheduleFiring.objects.exists()


def test_a_crontab_a_schedule_uses_is_read_only_in_beat_s_admin(admin_client: Client, user: Any) -> None:
    """Schedules with one cron share django-celery-beat's crontab row: edited there, it moved all of
    them while each schedule's cron still said the old time."""
    from django_celery_beat.models import CrontabSchedule

    workflow = workflow_save(owner=user, tag="nightly", definition=ONE).workflow
    schedule = schedules.schedule_create(owner=user, workflow=workflow, cron="0 3 * * *")
    used = schedule.periodic_task.crontab
    spare = CrontabSchedule.objects.create(minute="5", hour="4")
    crontabs = "/admin/django_celery_beat/crontabschedule/"
    fields = {"minute": "30", "hour": "9", "day_of_month": "*", "month_of_year": "*", "day_of_week": "*",
              "timezone": "UTC"}

    page = admin_client.get(f"{crontabs}{used.pk}/change/").content.decode()
    changed = admin_client.post(f"{crontabs}{used.pk}/change/", fields)
    deleted = admin_client.post(f"{crontabs}{used.pk}/delete/", {"post": "yes"})

    assert f"aob-schedule-{schedule.pk}" in page  # the entries using it, listed
    assert changed.status_code == 403 and deleted.status_code == 403
    used.refresh_from_db()
    assert (used.minute, used.hour) == ("0", "3")
    assert admin_client.post(f"{crontabs}{spare.pk}/change/", fields).status_code == 302  # others as before
    spare.refresh_from_db()
    assert (spare.minute, spare.hour) == ("30", "9")


def test_a_copy_of_a_schedule_s_crontab_made_in_beat_s_admin_does_not_break_the_next_schedule(
        admin_client: Client, user: Any) -> None:
    """The crontab table has no unique key: a spare row edited into a copy of a schedule's cron made
    the next schedule of that cron fail (MultipleObjectsReturned, a 500 on the API)."""
    from django_celery_beat.models import CrontabSchedule

    workflow = workflow_save(owner=user, tag="nightly", definition=ONE).workflow
    first = schedules.schedule_create(owner=user, workflow=workflow, cron="0 3 * * *")
    spare = CrontabSchedule.objects.create(minute="5", hour="4")
    fields = {"minute": "0", "hour": "3", "day_of_month": "*", "month_of_year": "*", "day_of_week": "*",
              "timezone": "UTC"}
    assert admin_client.post(f"/admin/django_celery_beat/crontabschedule/{spare.pk}/change/", fields).status_code == 302

    second = schedules.schedule_create(owner=user, workflow=workflow, cron="0 3 * * *")

    assert second.periodic_task.crontab_id == first.periodic_task.crontab_id  # the oldest row of that cron


BEAT_PAGES = ["periodictask", "crontabschedule", "intervalschedule", "solarschedule", "clockedschedule"]


def test_beat_s_pages_are_superusers_only_whatever_a_staff_member_was_given(admin_client: Client, user: Any,
                                                                            make_user: Any) -> None:
    """A beat entry sends any task with any arguments: a staff member given beat's permissions added
    ``triggers.fire_schedule`` entries naming another user's schedule and future slots, and each
    started a run as that user (a red-team helper's finding)."""
    from django.contrib.auth.models import Permission
    from django_celery_beat.models import IntervalSchedule

    workflow = workflow_save(owner=user, tag="nightly", definition=ONE).workflow
    schedule = schedules.schedule_create(owner=user, workflow=workflow, cron="0 3 * * *")
    helper = make_user("helper", is_staff=True)
    helper.user_permissions.add(*Permission.objects.filter(content_type__app_label="django_celery_beat"))
    staff = Client()
    staff.force_login(helper)
    every_day = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.DAYS)
    entry = {"name": "fire", "regtask": "", "task": schedules.FIRE_TASK, "enabled": "on", "interval": every_day.pk,
             "args": f'[{schedule.pk}, "2099-01-01T03:00:00+00:00"]', "kwargs": "{}", "headers": "{}"}

    assert staff.post("/admin/django_celery_beat/periodictask/add/", entry).status_code == 403
    for page in BEAT_PAGES:
        assert staff.get(f"/admin/django_celery_beat/{page}/").status_code == 403, page
        assert admin_client.get(f"/admin/django_celery_beat/{page}/").status_code == 200, page
    assert "django_celery_beat" not in staff.get("/admin/").content.decode()
    assert not PeriodicTask.objects.exclude(pk=schedule.periodic_task_id).exists()


def test_a_firing_stamped_ahead_of_the_clock_starts_nothing(user: Any) -> None:
    """Beat stamps a firing with the moment it sends it: a message naming a later moment is not
    beat's, and would start the run of a slot that is not due."""
    workflow = workflow_save(owner=user, tag="nightly", definition=ONE).workflow
    schedule = schedules.schedule_create(owner=user, workflow=workflow, cron="* * * * *")
    ahead = timezone.now() + timedelta(hours=1)
    assert schedules.schedule_fire(schedule_id=schedule.pk, fired_at=ahead) is None
    assert not ScheduleFiring.objects.exists() and not Run.objects.exists()
    now = schedules.schedule_fire(schedule_id=schedule.pk, fired_at=timezone.now())  # the control: due now
    assert now is not None and now.outcome == "started"
