"""Two people edit one workflow from the same version: the second save must not silently drop the
first's change. A write that names the version it was based on (``base_version``) is refused with
a 409 naming the current version when that is no longer current; a write that names none keeps the
old rule (the last write wins), so scripts keep working."""

from __future__ import annotations

import threading
from typing import Any

from django.db import connection

from tests.api.factories import API, assert_error, fetch_then_store, post_workflow
from tests.conftest import client_for
from tests.engine.flow import wait_until
from tests.support.races import together
from workflows.models import Workflow, WorkflowVersion


def with_store(expression: str) -> dict[str, Any]:
    definition = fetch_then_store()
    definition["nodes"][1]["config"]["expression"] = expression
    return definition


def patch(client: Any, tag: str, operations: Any, **extra: Any) -> Any:
    return client.patch(f"{API}/workflows/{tag}/patch", {"operations": operations, **extra}, format="json")


def current_definition(tag: str) -> dict[str, Any]:
    return Workflow.objects.get(tag=tag).current_version.artifact.content


def test_a_save_based_on_a_stale_version_is_a_409_naming_the_current_version(api):
    assert post_workflow(api, "shared", with_store("1")).status_code == 201
    alice = post_workflow(api, "shared", with_store("2"), base_version=0)
    assert (alice.status_code, alice.json()["version"]) == (201, 1)

    bob = post_workflow(api, "shared", with_store("3"), base_version=0)  # his editor still shows version 0

    body = assert_error(bob, 409, "version_conflict")
    assert body["details"] == {"field": "base_version", "rule": "current_version", "tag": "shared",
                               "base_version": 0, "current_version": 1}
    assert "version 1" in body["message"] and "version 0" in body["message"]
    assert current_definition("shared") == with_store("2")  # Alice's change is still the current one
    assert WorkflowVersion.objects.filter(workflow__tag="shared").count() == 2


def test_a_save_based_on_the_current_version_makes_the_next_one(api):
    post_workflow(api, "shared", with_store("1"))
    saved = post_workflow(api, "shared", with_store("2"), base_version=0)
    again = post_workflow(api, "shared", with_store("3"), base_version=1)
    assert (saved.status_code, again.status_code, again.json()["version"]) == (201, 201, 2)


def test_a_save_that_names_no_version_still_overwrites(api):
    post_workflow(api, "shared", with_store("1"))
    post_workflow(api, "shared", with_store("2"), base_version=0)
    blind = post_workflow(api, "shared", with_store("3"))
    assert (blind.status_code, blind.json()["version"]) == (201, 2)
    assert current_definition("shared") == with_store("3")


def test_base_version_null_creates_a_new_tag_and_never_saves_over_an_existing_one(api):
    created = post_workflow(api, "fresh", with_store("1"), base_version=None)
    assert (created.status_code, created.json()["version"]) == (201, 0)

    taken = post_workflow(api, "fresh", with_store("2"), base_version=None)  # "New workflow" with a tag in use

    body = assert_error(taken, 409, "version_conflict")
    assert body["details"]["rule"] == "new_tag"
    assert (body["details"]["field"], body["details"]["current_version"]) == ("base_version", 0)
    assert current_definition("fresh") == with_store("1")


def test_a_save_based_on_a_version_of_a_deleted_tag_is_a_409_and_creates_nothing(api):
    post_workflow(api, "gone", with_store("1"))
    assert api.delete(f"{API}/workflows/gone").status_code == 204

    late = post_workflow(api, "gone", with_store("2"), base_version=0)

    body = assert_error(late, 409, "version_conflict")
    assert (body["details"]["rule"], body["details"]["current_version"]) == ("tag_deleted", None)
    assert not Workflow.objects.filter(tag="gone").exists()


def test_an_editor_left_open_on_a_deleted_tag_never_saves_over_the_tag_made_again(api):
    """The tag made again has other definitions under its numbers: the old tag's version 2 must not
    pass for the new tag's, however many versions the new one has."""
    post_workflow(api, "remade", with_store("100"))
    post_workflow(api, "remade", with_store("101"))
    held = post_workflow(api, "remade", with_store("102")).json()["version"]  # an editor opens this one
    assert held == 2 and api.delete(f"{API}/workflows/remade").status_code == 204
    newest = with_store("200")
    made = post_workflow(api, "remade", newest, base_version=None).json()["version"]
    while made < held:  # a colleague saves the new tag until it has a version with the editor's number
        newest = with_store(str(201 + made))
        made = post_workflow(api, "remade", newest, base_version=made).json()["version"]

    for stale in (post_workflow(api, "remade", with_store("102 + 1"), base_version=held),
                  patch(api, "remade", [{"op": "replace", "path": "/nodes/1/config/expression", "value": "9"}],
                        base_version=held)):
        body = assert_error(stale, 409, "version_conflict")
        assert body["details"] == {"field": "base_version", "rule": "current_version", "tag": "remade",
                                   "base_version": held, "current_version": made}
    assert current_definition("remade") == newest
    assert_error(api.get(f"{API}/workflows/remade/versions/{held}"), 404, "not_found")  # 2 was the old tag's only


def test_the_same_save_sent_again_is_unchanged_not_a_conflict(api):
    """A client whose answer was lost sends its save again: what it would make is current already,
    its own version, so nothing is dropped and the answer says so."""
    post_workflow(api, "shared", with_store("1"))
    first = post_workflow(api, "shared", with_store("2"), base_version=0)
    again = post_workflow(api, "shared", with_store("2"), base_version=0)
    assert (first.status_code, again.status_code) == (201, 200), again.json()
    assert (again.json()["version"], again.json()["created"]) == (1, False)


def test_base_version_is_a_non_negative_integer(api):
    post_workflow(api, "shared", with_store("1"))
    for wrong in ("0", -1, 1.5, True):
        body = assert_error(post_workflow(api, "shared", with_store("2"), base_version=wrong), 400)
        assert body["details"]["field"] == "base_version", (wrong, body)
    assert WorkflowVersion.objects.count() == 1


def test_a_patch_based_on_a_stale_version_is_a_409(api):
    post_workflow(api, "shared", with_store("1"))
    post_workflow(api, "shared", with_store("2"))
    replace = [{"op": "replace", "path": "/nodes/1/config/expression", "value": "9"}]

    body = assert_error(patch(api, "shared", replace, base_version=0), 409, "version_conflict")
    assert (body["details"]["base_version"], body["details"]["current_version"]) == (0, 1)
    assert current_definition("shared") == with_store("2")

    applied = patch(api, "shared", replace, base_version=1)
    assert (applied.status_code, applied.json()["version"]) == (200, 2)


def test_if_match_is_refused_naming_the_body_field_instead_of_being_ignored(api):
    post_workflow(api, "shared", with_store("1"))
    ignored = api.post(f"{API}/workflows", {"tag_name": "shared", "workflow": with_store("2")}, format="json",
                       HTTP_IF_MATCH='"0"')
    body = assert_error(ignored, 400)
    assert (body["details"]["field"], body["details"]["rule"]) == ("If-Match", "use_base_version")
    assert WorkflowVersion.objects.count() == 1


def test_concurrent_saves_from_one_version_let_exactly_one_through(transactional_db, user):
    assert post_workflow(client_for(user), "shared", with_store("0")).status_code == 201

    answers = together(8, lambda i: post_workflow(client_for(user), "shared", with_store(str(i + 1)),
                                                  base_version=0))

    codes = sorted(a.status_code for a in answers)
    assert codes == [201] + [409] * 7, [(a.status_code, a.json()) for a in answers]
    winner = next(a.json() for a in answers if a.status_code == 201)
    assert winner["version"] == 1
    assert WorkflowVersion.objects.filter(workflow__tag="shared").count() == 2


def test_concurrent_patches_without_a_precondition_all_apply(transactional_db, user):
    """A patch is relative to what is current when it is applied: none may be applied to a version
    another patch has already replaced."""
    definition = with_store("0")
    definition["metadata"] = {"labels": {}}
    assert post_workflow(client_for(user), "shared", definition).status_code == 201

    answers = together(6, lambda i: patch(client_for(user), "shared",
                                          [{"op": "add", "path": f"/metadata/labels/l{i}", "value": str(i)}]))

    assert [a.status_code for a in answers] == [200] * 6, [a.json() for a in answers]
    assert current_definition("shared")["metadata"]["labels"] == {f"l{i}": str(i) for i in range(6)}
    assert WorkflowVersion.objects.filter(workflow__tag="shared").count() == 7


def test_the_schema_documents_base_version_and_the_409(api):
    document = api.get(f"{API}/schema/", {"format": "json"}).json()
    for path, method, schema, nullable in (("/api/v1/workflows", "post", "WorkflowCreateInRequest", True),
                                           ("/api/v1/workflows/{tag}/patch", "patch",
                                            "PatchedWorkflowPatchInRequest", False)):
        assert "409" in document["paths"][path][method]["responses"]
        field = document["components"]["schemas"][schema]["properties"]["base_version"]
        assert (field["type"], field["minimum"], field.get("nullable", False)) == ("integer", 0, nullable)


def test_a_save_that_waited_on_a_delete_makes_the_tag_again_not_a_500(transactional_db, user):
    """The save finds the tag's row and waits for its lock while a delete holds it; the delete
    commits: the save makes the tag again, numbered after the deleted one's versions."""
    from django.db import connections

    from workflows.services.definitions import workflow_delete

    assert post_workflow(client_for(user), "shared", with_store("0")).status_code == 201
    deleting, release = threading.Event(), threading.Event()
    deleter_pid: list[int] = []

    def delete_and_hold() -> None:
        try:
            from django.db import transaction

            with transaction.atomic():
                workflow_delete(workflow=Workflow.objects.get(tag="shared"))
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_backend_pid()")
                    deleter_pid.append(cursor.fetchone()[0])
                deleting.set()
                release.wait(10)
        finally:
            connections.close_all()

    deleter = threading.Thread(target=delete_and_hold)
    deleter.start()
    assert deleting.wait(10)
    answers: list[Any] = []
    saver = threading.Thread(target=lambda: (answers.append(post_workflow(client_for(user), "shared", with_store("1"))),
                                             connections.close_all()))
    saver.start()
    def save_waits() -> bool:  # a backend waits on a lock the delete holds: the save's
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                           deleter_pid)
            return bool(cursor.fetchone()[0])

    wait_until(save_waits, timeout=10, what="the save waiting on the delete's lock")
    release.set()
    deleter.join(10)
    saver.join(10)
    assert answers and answers[0].status_code == 201, answers and answers[0].content
    assert answers[0].json()["version"] == 1  # after the deleted tag's version 0
    assert current_definition("shared") == with_store("1")
