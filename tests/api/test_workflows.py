"""Workflow tags over the REST API: content-addressed versions, the version chain, delete."""

from __future__ import annotations

import json

import pytest

from tests.api.factories import (
    API,
    assert_error,
    content_id,
    fetch_then_store,
    post_raw,
    post_workflow,
    with_url,
)
from tests.conftest import client_for
from workflows.models import Artifact, Workflow, WorkflowVersion
from workflows.models.workflow import TAG_RULE
from workflows.services.definitions import workflow_save

SAVED_KEYS = {"artifact_id", "cas_id", "version_hash", "tag", "owner", "nodes_count", "edges_count", "created_at",
              "warnings"}


def test_create_answers_201_with_the_content_address(api, user):
    definition = fetch_then_store()

    response = post_workflow(api, "fetcher", definition)

    assert response.status_code == 201, response.json()
    body = response.json()
    assert SAVED_KEYS <= set(body)
    assert body["artifact_id"] == content_id(definition)
    assert body["cas_id"] == body["artifact_id"]
    assert body["version_hash"] == body["artifact_id"].removeprefix("sha256:")
    assert (body["tag"], body["owner"], body["version"]) == ("fetcher", user.username, 0)
    assert (body["nodes_count"], body["edges_count"]) == (2, 1)
    assert body["warnings"] == []


def test_same_workflow_twice_is_the_same_artifact_and_no_new_version(api):
    first = post_workflow(api, "fetcher", fetch_then_store())
    second = post_workflow(api, "fetcher", fetch_then_store())

    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["artifact_id"] == first.json()["artifact_id"]
    assert (first.json()["created"], second.json()["created"]) == (True, False)
    assert second.json()["version"] == 0
    assert WorkflowVersion.objects.filter(workflow__tag="fetcher").count() == 1
    assert Artifact.objects.filter(kind="dag_version").count() == 1


def test_key_order_and_whitespace_do_not_change_the_artifact(api):
    definition = fetch_then_store()
    compact = json.dumps({"tag_name": "fetcher", "workflow": definition}, separators=(",", ":"))
    reordered = json.dumps({"workflow": definition, "tag_name": "fetcher"}, sort_keys=True, indent=4)

    first = post_raw(api, "/workflows", compact)
    second = post_raw(api, "/workflows", reordered)

    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["artifact_id"] == second.json()["artifact_id"] == content_id(definition)


def test_same_content_under_another_tag_shares_the_artifact(api):
    first = post_workflow(api, "one", fetch_then_store())
    second = post_workflow(api, "two", fetch_then_store())

    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["artifact_id"] == second.json()["artifact_id"]
    assert Workflow.objects.count() == 2
    assert Artifact.objects.filter(kind="dag_version").count() == 1


def test_changed_content_is_a_new_version_of_the_tag(api):
    first = post_workflow(api, "fetcher", with_url("https://example.com/a"))
    second = post_workflow(api, "fetcher", with_url("https://example.com/b"))

    assert (first.status_code, second.status_code) == (201, 201)
    assert second.json()["artifact_id"] != first.json()["artifact_id"]
    assert second.json()["version"] == 1
    current = api.get(f"{API}/workflows/fetcher", {"materialize": "true"}).json()
    assert current["version"] == 1
    assert current["artifact_id"] == second.json()["artifact_id"]
    assert current["definition"] == with_url("https://example.com/b")
    assert [v["seq"] for v in api.get(f"{API}/workflows/fetcher/versions").json()] == [0, 1]


def test_version_zero_still_returns_the_first_definition(api):
    post_workflow(api, "fetcher", with_url("https://example.com/a"))
    post_workflow(api, "fetcher", with_url("https://example.com/b"))
    post_workflow(api, "fetcher", with_url("https://example.com/c"))

    response = api.get(f"{API}/workflows/fetcher/versions/0", {"materialize": "true"})

    assert response.status_code == 200
    assert response.json()["seq"] == 0
    assert response.json()["definition"] == with_url("https://example.com/a")
    assert response.json()["artifact_id"] == content_id(with_url("https://example.com/a"))


def test_a_version_without_materialize_has_no_definition(api):
    post_workflow(api, "fetcher", fetch_then_store())

    response = api.get(f"{API}/workflows/fetcher/versions/0")

    assert response.status_code == 200
    assert "definition" not in response.json()


def test_going_back_to_earlier_content_is_a_new_version_on_the_old_artifact(api):
    a = post_workflow(api, "fetcher", with_url("https://example.com/a")).json()
    post_workflow(api, "fetcher", with_url("https://example.com/b"))
    again = post_workflow(api, "fetcher", with_url("https://example.com/a"))

    assert again.status_code == 201
    assert again.json()["version"] == 2
    assert again.json()["artifact_id"] == a["artifact_id"]
    assert Artifact.objects.filter(kind="dag_version").count() == 2


@pytest.mark.parametrize("seq", ["2", "99", "999999999"])
def test_a_version_out_of_range_is_a_404_json_error(api, seq):
    post_workflow(api, "fetcher", with_url("https://example.com/a"))
    post_workflow(api, "fetcher", with_url("https://example.com/b"))

    response = api.get(f"{API}/workflows/fetcher/versions/{seq}", {"materialize": "true"})

    assert_error(response, 404, "not_found")


@pytest.mark.parametrize("path", ["/workflows/fetcher/versions/-1", "/workflows/fetcher/versions/x",
                                  "/workflows/fetcher/versions/9999999999"])
def test_a_version_that_is_not_a_sequence_number_is_a_404_json_error(api, path):
    post_workflow(api, "fetcher", fetch_then_store())

    assert_error(api.get(f"{API}{path}"), 404, "not_found")


def test_unknown_tag_is_a_404_json_error(api):
    assert_error(api.get(f"{API}/workflows/nope"), 404, "not_found")
    assert_error(api.get(f"{API}/workflows/nope/versions/0"), 404, "not_found")


def test_list_shows_the_users_tags_with_their_current_version(api):
    post_workflow(api, "alpha", with_url("https://example.com/a"))
    post_workflow(api, "beta", with_url("https://example.com/b"))
    post_workflow(api, "beta", with_url("https://example.com/c"))

    response = api.get(f"{API}/workflows")

    assert response.status_code == 200
    items = {w["tag"]: w for w in response.json()["results"]}
    assert set(items) == {"alpha", "beta"}
    assert items["beta"]["version"] == 1
    assert "definition" not in items["beta"]
    materialized = api.get(f"{API}/workflows", {"materialize": "true"}).json()["results"]
    assert {w["tag"]: w["definition"] for w in materialized}["beta"] == with_url("https://example.com/c")


def test_delete_answers_204_then_the_tag_is_gone(api):
    post_workflow(api, "fetcher", fetch_then_store())

    response = api.delete(f"{API}/workflows/fetcher")

    assert response.status_code == 204
    assert response.content == b""
    assert_error(api.get(f"{API}/workflows/fetcher"), 404, "not_found")
    assert_error(api.get(f"{API}/workflows/fetcher/versions/0"), 404, "not_found")
    assert_error(api.delete(f"{API}/workflows/fetcher"), 404, "not_found")
    assert not WorkflowVersion.objects.exists()


def test_a_deleted_tag_made_again_numbers_its_versions_after_the_ones_it_had(api, make_user):
    """Each version number of a tag names one definition, ever: the old tag's are not the new one's
    (tests/api/test_lost_updates.py has the editor this protects)."""
    post_workflow(api, "fetcher", with_url("https://example.com/a"))
    post_workflow(api, "fetcher", with_url("https://example.com/b"))
    api.delete(f"{API}/workflows/fetcher")

    response = post_workflow(api, "fetcher", with_url("https://example.com/b"))

    assert (response.status_code, response.json()["version"]) == (201, 2)
    assert [v["seq"] for v in api.get(f"{API}/workflows/fetcher/versions").json()] == [2]
    api.delete(f"{API}/workflows/fetcher")
    assert post_workflow(api, "fetcher", with_url("https://example.com/c")).json()["version"] == 3
    bobs = post_workflow(client_for(make_user("bob")), "fetcher", with_url("https://example.com/d"))
    assert bobs.json()["version"] == 0  # another owner's tag of that name is another tag


def test_an_artifact_is_readable_by_its_owner(api):
    definition = fetch_then_store()
    artifact_id = post_workflow(api, "fetcher", definition).json()["artifact_id"]

    response = api.get(f"{API}/artifacts/{artifact_id}")

    assert response.status_code == 200
    body = response.json()
    assert (body["id"], body["kind"], body["content"]) == (artifact_id, "dag_version", definition)
    assert body["size_bytes"] == len(json.dumps(definition, sort_keys=True, separators=(",", ":")).encode())


@pytest.mark.parametrize("tag", ["-leading-dash", "has space", "a" * 201, "slash/inside", ""])
def test_a_bad_tag_name_is_a_400(api, tag):
    body = assert_error(post_workflow(api, tag, fetch_then_store()), 400, "validation_error")

    assert body["details"]["field"] == "tag_name"
    assert not Workflow.objects.exists()


@pytest.mark.parametrize("tag", ["has space", "-leading-dash", "slash/inside"])
def test_a_bad_tag_is_refused_with_the_tags_rule_in_words_by_the_api_and_the_service_alike(api, user, tag):
    """A new user's ``my greet`` got DRF's "This value does not match the required pattern", which
    says no rule; the service's own check named the regular expression. Both now say it in words."""
    from aob_project.exceptions import ValidationFailed

    body = assert_error(post_workflow(api, tag, fetch_then_store()), 400, "validation_error")
    assert body["message"] == f"tag_name: {TAG_RULE}", body
    assert api.post(f"{API}/hooks", {"tag": tag}, format="json").json()["message"] == f"tag: {TAG_RULE}"
    with pytest.raises(ValidationFailed) as refused:
        workflow_save(owner=user, tag=tag, definition=fetch_then_store())
    assert refused.value.message == TAG_RULE


def test_unknown_request_fields_are_refused(api):
    body = assert_error(post_workflow(api, "fetcher", fetch_then_store(), tagname="typo"), 400, "validation_error")

    assert body["details"]["field"] == "tagname"
    assert not Workflow.objects.exists()


def test_versions_come_a_page_at_a_time_and_read_the_tag_once(api, user):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    definition = {"nodes": [{"id": "a", "type": "transform", "config": {"expression": "1"}}], "edges": []}
    for i in range(5):
        workflow_save(owner=user, tag="often", definition={**definition, "metadata": {"name": f"v{i}"}})

    first = api.get(f"{API}/workflows/often/versions", {"limit": 2})
    with CaptureQueriesContext(connection) as reads:
        rest = api.get(f"{API}/workflows/often/versions", {"after": first.json()[-1]["seq"]})

    assert [v["seq"] for v in first.json()] == [0, 1]
    assert [v["seq"] for v in rest.json()] == [2, 3, 4] and {v["tag"] for v in rest.json()} == {"often"}
    assert len(reads.captured_queries) == 3, [q["sql"][:160] for q in reads.captured_queries]  # token, tag, versions
    assert [v["seq"] for v in api.get(f"{API}/workflows/often/versions").json()] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(("tag", "description", "field", "rule"), [
    ("validate", "", "tag_name", "reserved"),  # POST /workflows/validate is an operation
    ("-starts-with-a-dash", "", "tag_name", "invalid"),
    ("a" * 201, "", "tag_name", "invalid"),
    ("abc\n", "", "tag_name", "invalid"),  # a tag no URL can name
    ("fine", "x" * 10_001, "description", "max_length"),
])
@pytest.mark.django_db
def test_the_tag_and_description_rules_are_the_services_whoever_saves(user, tag, description, field, rule):
    """They were the API's fields' alone: a save by any other way (``manage.py aob_demo``, the
    bench, an app of yours) took a reserved tag, or one the API could never name."""
    from aob_project.exceptions import ValidationFailed

    with pytest.raises(ValidationFailed) as refused:
        workflow_save(owner=user, tag=tag, definition=fetch_then_store(), description=description)

    assert (refused.value.extra["field"], refused.value.extra["rule"]) == (field, rule)
    assert not Workflow.objects.filter(owner=user).exists()
    workflow_save(owner=user, tag="fine", definition=fetch_then_store(), description="x" * 10_000)  # control


@pytest.mark.django_db
@pytest.mark.parametrize("tag", ["wf1 ", " wf1", "wf1\t"])
def test_a_tag_with_spaces_around_it_is_refused_as_sent_not_trimmed_into_another(api, tag):
    """It was trimmed at save (``wf1``), while reading ``wf1%20`` found nothing: the name a person
    typed is judged by the tag's pattern as they typed it, wherever a request names a tag."""
    response = api.post(f"{API}/workflows", {"tag_name": tag, "workflow": fetch_then_store()}, format="json")

    assert response.status_code == 400 and response.json()["details"]["field"] == "tag_name", response.json()
    assert not Workflow.objects.exists()
    assert api.post(f"{API}/hooks", {"tag": tag}, format="json").json()["details"]["field"] == "tag"


@pytest.mark.django_db
def test_a_workflow_patch_s_operations_are_bounded_by_the_service_whoever_patches(user):
    """The bound was the API field's alone (a run patch's is its policy's)."""
    from aob_project.exceptions import ValidationFailed
    from workflows.services.definitions import WORKFLOW_PATCH_MAX_OPERATIONS, workflow_patch

    saved = workflow_save(owner=user, tag="many", definition=fetch_then_store())
    ops = [{"op": "test", "path": "/nodes", "value": fetch_then_store()["nodes"]}] * (WORKFLOW_PATCH_MAX_OPERATIONS + 1)
    with pytest.raises(ValidationFailed) as refused:
        workflow_patch(workflow=saved.workflow, operations=ops)
    assert (refused.value.extra["field"], refused.value.extra["rule"]) == ("operations", "max_length")
