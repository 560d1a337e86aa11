"""Two of an owner's changes to one hook or schedule at the same moment (a page and the CLI, a
double click): the change that waited on the other's row lock answers as the API answers that
state (the hook's or schedule's 404 once it is gone), never a 500. The delete is held open by the
test, so the other request is sure to wait on its lock."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.conftest import client_for
from tests.support.races import asked_while_held
from triggers.models import Hook, Schedule
from workflows.services.definitions import workflow_save

ECHO = {"nodes": [{"id": "echo", "type": "transform", "config": {"expression": "inputs"}}], "edges": []}


def _asked_while_held(user: Any, hold: Callable[[], None], ask: Callable[[Any], Any]) -> list[Any]:
    """``ask``'s answer (as ``user``) to a request made while ``hold()``'s writes are uncommitted
    and lock their rows, waiting on them until they commit; a 500 is an answer here."""
    def asking() -> Any:
        client = client_for(user)
        client.raise_request_exception = False
        return ask(client)

    return asked_while_held(hold, asking)[1]


def test_a_hook_update_that_waited_on_its_delete_is_the_hook_s_404_not_a_500(transactional_db, user):
    """``PATCH /hooks/{id}`` reads the hook, then saves the fields it changes
    (``hook.save(update_fields=...)``). A delete of the hook committed in between (the page's
    *Delete* while the CLI renames it) leaves the update no row: Django raises ``DatabaseError``
    ("Save with update_fields did not affect any rows") and the API answers 500. It should be
    the hook's 404, as a request that came a moment later gets."""
    from triggers.services.hooks import hook_delete

    workflow_save(owner=user, tag="on-push", definition=ECHO)
    made = client_for(user).post("/api/v1/hooks", {"tag": "on-push", "name": "ci"}, format="json")
    assert made.status_code == 201, made.json()
    hook_id = made.json()["id"]

    answers = _asked_while_held(user, lambda: hook_delete(hook=Hook.objects.get(pk=hook_id), user=user),
                                lambda client: client.patch(f"/api/v1/hooks/{hook_id}", {"name": "renamed"},
                                                            format="json"))

    assert not Hook.objects.filter(pk=hook_id).exists()
    assert answers, "the update never answered"
    response = answers[0]
    assert response.status_code == 404, (response.status_code, response.content[:500])
    assert response.json()["error"] == "not_found", response.json()


def test_a_schedule_update_that_waited_on_its_delete_is_the_schedule_s_404_not_a_500(transactional_db, user):
    """``PATCH /schedules/{id}`` reads the schedule, then locks it again to change it
    (``Schedule.objects.select_for_update().get(...)``). A delete committed in between leaves the
    ``get`` nothing: ``Schedule.DoesNotExist``, which the API answers as a 500. It should be the
    schedule's 404."""
    from triggers.services.schedules import schedule_delete

    workflow_save(owner=user, tag="nightly", definition=ECHO)
    made = client_for(user).post("/api/v1/schedules", {"tag": "nightly", "cron": "0 3 * * *"}, format="json")
    assert made.status_code == 201, made.json()
    schedule_id = made.json()["id"]

    answers = _asked_while_held(user, lambda: schedule_delete(schedule=Schedule.objects.get(pk=schedule_id)),
                                lambda client: client.patch(f"/api/v1/schedules/{schedule_id}",
                                                            {"cron": "0 4 * * *"}, format="json"))

    assert not Schedule.objects.filter(pk=schedule_id).exists()
    assert answers, "the update never answered"
    response = answers[0]
    assert response.status_code == 404, (response.status_code, response.content[:500])
    assert response.json()["error"] == "not_found", response.json()


def test_a_hook_or_schedule_made_as_its_workflow_is_deleted_is_the_workflow_s_404_not_a_500(transactional_db, user):
    """``POST /hooks`` and ``POST /schedules`` read the tag, then insert a row naming it. A delete
    of the tag held open meanwhile (it found no hook or schedule to refuse it for) makes the
    insert's key check wait on it, then fail once it commits (``ForeignKeyViolation``): a 500.
    It should be the tag's 404, as a start racing the same delete answers
    (``tests/api/test_definition_races.py``), and nothing made."""
    from workflows.models import Workflow
    from workflows.services.definitions import workflow_delete

    answers = []
    for path, body in (("/api/v1/hooks", {"tag": "doomed", "name": "ci"}),
                       ("/api/v1/schedules", {"tag": "doomed", "cron": "0 3 * * *"})):
        workflow_save(owner=user, tag="doomed", definition=ECHO)
        answers += _asked_while_held(user, lambda: workflow_delete(workflow=Workflow.objects.get(tag="doomed")),
                                     lambda client, path=path, body=body: client.post(path, body, format="json"))
        assert not Workflow.objects.filter(tag="doomed").exists()

    assert len(answers) == 2, "a create never answered"
    assert [a.status_code for a in answers] == [404, 404], [(a.status_code, a.content[:300]) for a in answers]
    assert all(a.json()["error"] == "not_found" for a in answers)
    assert not Hook.objects.exists() and not Schedule.objects.exists()


def _deliver_held_behind(user: Any, hold: Callable[[], None], hook: dict, secret: str) -> list[Any]:
    """A delivery signed with ``secret``, sent while ``hold()``'s change to the hook is uncommitted
    (read before it, so judged by the hook as it was), answered once the change commits."""
    import json
    import time
    import uuid

    from rest_framework.test import APIClient

    from triggers.services.hooks import signature_for

    raw = json.dumps({"n": 1}).encode()
    ts = str(int(time.time()))
    sig = "sha256=" + signature_for(secret, ts, raw)
    return _asked_while_held(user, hold, lambda client: APIClient().post(
        f"/api/v1/hooks/{hook['id']}", raw, content_type="application/json", HTTP_X_AOB_TIMESTAMP=ts,
        HTTP_X_AOB_SIGNATURE=sig, HTTP_X_AOB_DELIVERY=str(uuid.uuid4())))


def test_a_delivery_signed_with_a_secret_cut_off_while_it_was_accepted_starts_no_run(transactional_db, user):
    """``grace_s: 0`` is for a secret that leaked: the old secret "stops now". A delivery signed
    with it that was judged before the rotation committed (its read saw the old secret) went on,
    waited on the rotation's row lock, and started its run after the rotation had answered: the
    owner, told the leaked secret is dead, still gets a run from it. It should be refused as any
    delivery signed with it after the rotation is (or have started its run before the rotation
    answered)."""
    from triggers.services.hooks import hook_rotate
    from workflows.models import Run

    workflow_save(owner=user, tag="on-push", definition=ECHO)
    made = client_for(user).post("/api/v1/hooks", {"tag": "on-push"}, format="json")
    assert made.status_code == 201, made.json()
    hook = made.json()
    rotated: list[str] = []

    answers = _deliver_held_behind(
        user, lambda: rotated.append(hook_rotate(hook=Hook.objects.get(pk=hook["id"]), grace_s=0)),
        hook, hook["secret"])

    assert rotated and answers, "the rotation or the delivery never answered"
    response = answers[0]
    assert (response.status_code, response.json().get("error")) == (401, "unauthorized"), (
        response.status_code, response.content[:300], list(Run.objects.values_list("created_at", flat=True)))
    assert not Run.objects.exists()


def test_a_delivery_signed_with_the_secret_a_graceful_rotation_replaced_meanwhile_still_lands(transactional_db,
                                                                                              user):
    """The control: a rotation with a grace period keeps the old secret signing, so a delivery
    judged by it while the rotation commits starts its run."""
    from triggers.services.hooks import hook_rotate
    from workflows.models import Run

    workflow_save(owner=user, tag="on-push", definition=ECHO)
    hook = client_for(user).post("/api/v1/hooks", {"tag": "on-push"}, format="json").json()

    answers = _deliver_held_behind(user, lambda: hook_rotate(hook=Hook.objects.get(pk=hook["id"]), grace_s=600),
                                   hook, hook["secret"])

    assert answers and answers[0].status_code in (200, 201, 202), (answers[0].status_code, answers[0].content[:300])
    assert Run.objects.count() == 1


def _fired_while_held(user: Any, hold: Callable[[Any], Any]) -> tuple[Any, list[Any]]:
    """A firing of a schedule due every minute, sent while ``hold(schedule)``'s change to it is
    uncommitted (read before it, so judged by the schedule as it was), finished once the change
    commits. Returns the schedule and what the firing returned."""
    from django.utils import timezone

    from triggers.services.schedules import schedule_create, schedule_fire
    from workflows.models import Workflow

    workflow_save(owner=user, tag="every-minute", definition=ECHO)
    schedule = schedule_create(owner=user, workflow=Workflow.objects.get(tag="every-minute"), cron="* * * * *",
                               inputs={"target": "old"})
    sent = timezone.now()
    held, fired = asked_while_held(lambda: hold(Schedule.objects.get(pk=schedule.pk)),
                                   lambda: schedule_fire(schedule_id=schedule.pk, fired_at=sent))
    assert held and not isinstance(held[0], Exception), held
    assert fired, "the firing never finished"
    return schedule, fired


def test_a_firing_read_before_its_schedule_was_disabled_starts_no_run_once_the_disable_answered(transactional_db,
                                                                                                user):
    """A firing read its schedule (enabled), then waited on the owner's disable (the firing's insert
    checks its schedule's key), and started its run after the disable had answered: the owner,
    told the schedule is off, still gets a run from it. A webhook's delivery is judged again under
    its hook's row (``hooks._still_signed``); a firing should be too: no run, nothing recorded."""
    from triggers.models import ScheduleFiring
    from triggers.services.schedules import schedule_update
    from workflows.models import Run

    _, fired = _fired_while_held(user, lambda schedule: schedule_update(schedule=schedule, enabled=False))

    assert fired == [None], fired
    assert not Run.objects.exists(), list(Run.objects.values_list("created_at", flat=True))
    assert not ScheduleFiring.objects.exists()


def test_a_firing_read_before_its_schedule_s_inputs_changed_runs_with_the_inputs_the_change_left(transactional_db,
                                                                                                  user):
    """The same race with a change that keeps the schedule on: the run that starts after the
    change answered starts with what the change left, not with the inputs the change replaced."""
    from triggers.services.schedules import schedule_update
    from workflows.models import Run

    _, fired = _fired_while_held(user, lambda schedule: schedule_update(schedule=schedule,
                                                                        inputs={"target": "new"}))

    assert fired[0] is not None and fired[0].outcome == "started", fired
    assert list(Run.objects.values_list("inputs", flat=True)) == [{"target": "new"}]


def test_a_delivery_read_before_its_hook_s_mapping_changed_starts_with_the_inputs_the_change_left(transactional_db,
                                                                                                 user):
    """A delivery reads its hook and evaluates its mapping before it holds the hook's row; once
    held, ``_still_signed`` judged again only the signing fields. So a delivery that met a
    ``PATCH /hooks/{id} {"mapping": ...}`` at the lock started its run, after the change had
    answered, with what the replaced mapping made (here a value the owner removed so it would no
    longer reach runs). The mapping the row holds once locked should make the inputs, as a
    schedule's firing reads the inputs an update left."""
    from triggers.services.hooks import hook_update
    from workflows.models import Run

    workflow_save(owner=user, tag="on-push", definition=ECHO)
    made = client_for(user).post("/api/v1/hooks", {"tag": "on-push", "mapping": {
        "cel": "{'n': body.n, 'leak': 'copied'}"}}, format="json")
    assert made.status_code == 201, made.json()
    hook = made.json()

    answers = _deliver_held_behind(
        user, lambda: hook_update(hook=Hook.objects.get(pk=hook["id"]), mapping={"cel": "{'n': body.n}"}),
        hook, hook["secret"])

    assert answers and answers[0].status_code == 202, (answers[0].status_code, answers[0].content[:300])
    assert list(Run.objects.values_list("inputs", flat=True)) == [{"n": 1}]


FIXED = {"nodes": [{"id": "fixed", "type": "transform", "config": {"expression": "'the fixed step'"}}], "edges": []}


def _runs_the_saved_version(tag: str) -> None:
    from workflows.models import Run, Workflow

    current = Workflow.objects.get(tag=tag).current_version
    assert list(Run.objects.values_list("base_artifact_id", flat=True)) == [current.artifact_id], (
        "the run started from the version the save had replaced")


def test_a_delivery_that_met_a_save_of_its_workflow_runs_the_version_the_save_left(transactional_db, user):
    """A delivery read its hook with the tag's current version, then met the owner's save of the
    tag (a fix removing a leaking step) at its run's insert, and started its run after the save
    answered, from the version the save replaced. The tag is held (``workflow_version_for_start``)
    and its version read once held: the delivery runs what the save left."""
    workflow_save(owner=user, tag="on-push", definition=ECHO)
    made = client_for(user).post("/api/v1/hooks", {"tag": "on-push"}, format="json")
    assert made.status_code == 201, made.json()
    hook = made.json()

    answers = _deliver_held_behind(user, lambda: workflow_save(owner=user, tag="on-push", definition=FIXED),
                                   hook, hook["secret"])

    assert answers and answers[0].status_code == 202, (answers[0].status_code, answers[0].content[:300])
    _runs_the_saved_version("on-push")


def test_a_firing_that_met_a_save_of_its_workflow_runs_the_version_the_save_left(transactional_db, user):
    """The same race for a schedule's firing: ``_held`` held the schedule's row, not the tag's."""
    _, fired = _fired_while_held(user, lambda schedule: workflow_save(owner=user, tag="every-minute",
                                                                      definition=FIXED))

    assert fired[0] is not None and fired[0].outcome == "started", fired
    _runs_the_saved_version("every-minute")


def test_a_delivery_or_firing_held_behind_a_forced_delete_of_its_workflow_starts_nothing(transactional_db, user):
    """The tag is held first, as its delete takes it first (then its hooks and schedules): a
    delivery or a firing that meets a forced delete waits for it and finds its hook or schedule
    gone (the unknown hook's 401; no firing), never a deadlock or a 500."""
    from triggers.models import ScheduleFiring
    from workflows.models import Run, Workflow
    from workflows.services.definitions import workflow_delete

    workflow_save(owner=user, tag="on-push", definition=ECHO)
    hook = client_for(user).post("/api/v1/hooks", {"tag": "on-push"}, format="json").json()
    answers = _deliver_held_behind(user, lambda: workflow_delete(workflow=Workflow.objects.get(tag="on-push"),
                                                                 force=True), hook, hook["secret"])
    _, fired = _fired_while_held(user, lambda schedule: workflow_delete(workflow=schedule.workflow, force=True))

    assert answers and (answers[0].status_code, answers[0].json().get("error")) == (401, "unauthorized"), (
        answers[0].status_code, answers[0].content[:300])
    assert fired == [None], fired
    assert not Run.objects.exists() and not ScheduleFiring.objects.exists()
