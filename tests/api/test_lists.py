"""The runs and workflows lists: filters (django-filter) by workflow, status, date range, owner
(staff) and text in inputs or errors; keyset pages; workflows with their description, last run and
a search. A value a filter cannot take is a 400 naming the parameter (and the allowed values)."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from tests.conftest import client_for, set_inputs, stored_run, with_permissions
from workflows.models import Run
from workflows.services.definitions import workflow_save

API = "/api/v1"


def a_run(owner: Any, *, tag: str = "", status: str = "completed", days_ago: float = 0, inputs: dict | None = None,
          error: dict | None = None) -> Run:
    run = stored_run(owner)
    set_inputs(run, inputs or {}, tag=tag, status=status, error=error,
               created_at=timezone.now() - timedelta(days=days_ago))
    return Run.objects.get(pk=run.pk)


def ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.content[:300]
    return [r["run_id"] for r in response.json()["results"]]


@pytest.fixture
def runs(make_user: Any) -> dict[str, Any]:
    alice, bob = make_user("alice"), make_user("bob")
    return {"alice": alice, "bob": bob,
            "old": a_run(alice, tag="billing", days_ago=10, inputs={"customer": "Ada Lovelace"}),
            "mid": a_run(alice, tag="billing", status="failed", days_ago=5,
                         error={"message": "card declined by issuer", "node_id": "pay"}),
            "new": a_run(alice, tag="reports", days_ago=1),
            "bobs": a_run(bob, tag="billing", days_ago=2)}


def test_runs_filter_by_workflow_status_dates_and_text(runs):
    api = client_for(runs["alice"])
    old, mid, new = (str(runs[k].pk) for k in ("old", "mid", "new"))
    since = (timezone.now() - timedelta(days=7)).isoformat()
    until = (timezone.now() - timedelta(days=3)).isoformat()

    assert ids(api.get(f"{API}/runs")) == [new, mid, old]
    assert ids(api.get(f"{API}/runs", {"workflow": "billing"})) == [mid, old]
    assert ids(api.get(f"{API}/runs", {"workflow": "billing", "status": "failed"})) == [mid]
    assert ids(api.get(f"{API}/runs", {"created_after": since})) == [new, mid]
    assert ids(api.get(f"{API}/runs", {"created_after": since, "created_before": until})) == [mid]
    assert ids(api.get(f"{API}/runs", {"q": "lovelace"})) == [old]  # in the inputs, any case
    assert ids(api.get(f"{API}/runs", {"q": "declined"})) == [mid]  # in the error
    listed = api.get(f"{API}/runs").json()["results"]
    assert {r["run_id"]: r["error"] for r in listed}[mid]["message"] == "card declined by issuer"
    assert all("duration_ms" in r for r in listed)


def test_only_staff_see_another_owners_runs(runs, make_user):
    bobs = str(runs["bobs"].pk)
    assert ids(client_for(runs["alice"]).get(f"{API}/runs", {"owner": "bob"})) == []
    staff = client_for(with_permissions(make_user("root", is_staff=True), "workflows.view_run"))
    assert ids(staff.get(f"{API}/runs", {"owner": "bob"})) == [bobs]
    assert ids(staff.get(f"{API}/runs")) == []  # without owner: their own


def test_keyset_pages_do_not_shift_when_a_run_starts_meanwhile(runs):
    api = client_for(runs["alice"])
    first = api.get(f"{API}/runs", {"limit": 2}).json()
    a_run(runs["alice"], tag="late")  # newer than every row: must not push a row onto page two
    second = api.get(first["next"]).json()

    assert [r["run_id"] for r in first["results"]] == [str(runs["new"].pk), str(runs["mid"].pk)]
    assert [r["run_id"] for r in second["results"]] == [str(runs["old"].pk)] and second["next"] is None


@pytest.mark.parametrize(("query", "field", "status"), [
    ({"status": "done"}, "status", 400),
    ({"created_after": "yesterday"}, "created_after", 400),
    ({"q": "a\x00b"}, "q", 400),
    ({"q": "x" * 201}, "q", 400),
    ({"limit": "ten"}, "limit", 400),
    ({"limit": "0"}, "limit", 400),
    ({"cursor": "not-a-cursor"}, "cursor", 404),
])
def test_a_value_a_run_filter_cannot_take_is_refused_by_name(runs, query, field, status):
    response = client_for(runs["alice"]).get(f"{API}/runs", query)

    assert response.status_code == status, response.content[:300]
    body = response.json()
    assert body["details"]["field"] == field and body["message"].startswith(f"{field}:")
    if field == "status":
        assert body["details"]["allowed"] == Run.Status.values
    if field == "created_after":  # the example an empty value gets, not Django's "Enter a valid date/time."
        assert body["details"]["rule"] == "date_time" and "e.g. 2026-12-01T00:00:00Z" in body["message"]


@pytest.mark.parametrize("url", [f"{API}/runs?stauts=failed", f"{API}/health?x=1"])
def test_a_head_with_a_parameter_the_endpoint_does_not_take_is_refused_as_its_get_is(api, url):
    """The endpoint's parameters were looked up by method, and the document has no HEAD: a HEAD with a
    misspelt filter was a 200 where its GET is a 400 (HEAD is GET without the body)."""
    assert api.get(url).status_code == 400
    assert api.head(url).status_code == 400


def cursor_of(querystring: str) -> str:
    """A cursor made by hand: DRF's base64 of ``o`` (offset), ``r`` (reverse) and ``p`` (position)."""
    return base64.b64encode(querystring.encode()).decode()


@pytest.mark.parametrize("querystring", ["o=0&p=garbage", "p=2024-13-45T00:00:00Z", "p=99999-01-01", "r=1&p=%00",
                                         "p=2024-01-01T00:00:00"])
def test_a_cursor_whose_position_is_no_time_is_no_page(runs, querystring):
    response = client_for(runs["alice"]).get(f"{API}/runs", {"cursor": cursor_of(querystring)})

    assert response.status_code == 404, response.content[:300]
    body = response.json()
    assert body["details"] == {"field": "cursor", "rule": "invalid_cursor"} and body["message"].startswith("cursor:")


def test_workflows_list_description_last_run_and_search(runs):
    alice = runs["alice"]
    definition = {"nodes": [{"id": "a", "type": "transform", "config": {"expression": "1"}}], "edges": []}
    workflow_save(owner=alice, tag="billing", definition={**definition, "metadata": {
        "name": "Billing", "description": "Charge the customer's card"}})
    workflow_save(owner=alice, tag="reports", definition=definition)
    Run.objects.filter(tag="billing", owner=alice).update(workflow=alice.workflows.get(tag="billing"))
    api = client_for(alice)

    listed = {w["tag"]: w for w in api.get(f"{API}/workflows").json()["results"]}

    assert listed["billing"]["description"] == "Charge the customer's card" and listed["billing"]["name"] == "Billing"
    assert listed["billing"]["last_run"]["run_id"] == str(runs["mid"].pk)
    assert listed["billing"]["last_run"]["status"] == "failed"
    assert listed["reports"]["last_run"] is None and listed["reports"]["description"] == ""
    assert [w["tag"] for w in api.get(f"{API}/workflows", {"q": "card"}).json()["results"]] == ["billing"]
    assert [w["tag"] for w in api.get(f"{API}/workflows", {"q": "REPO"}).json()["results"]] == ["reports"]
    one = api.get(f"{API}/workflows/billing", {"materialize": "true"}).json()
    assert one["definition"]["metadata"]["name"] == "Billing" and one["last_run"]["status"] == "failed"
    assert "definition" not in api.get(f"{API}/workflows/billing").json()


def test_staff_listing_every_owner_s_workflows_see_only_the_last_runs_they_may_read(runs, make_user):
    """``scope=global`` (``workflows.view_workflow``) lists every owner's workflows; each one's newest
    run is a run read, shown only to those who may read it (``workflows.view_run``): it was shown to
    every staff member who could list the workflows."""
    alice = runs["alice"]
    workflow_save(owner=alice, tag="billing", definition={"nodes": [{"id": "a", "type": "transform",
                                                                     "config": {"expression": "1"}}], "edges": []})
    Run.objects.filter(tag="billing", owner=alice).update(workflow=alice.workflows.get(tag="billing"))
    lister = client_for(with_permissions(make_user("ops", is_staff=True), "workflows.view_workflow"))
    reader = client_for(with_permissions(make_user("root", is_staff=True), "workflows.view_workflow",
                                         "workflows.view_run"))

    [listed] = lister.get(f"{API}/workflows", {"scope": "global"}).json()["results"]
    assert (listed["owner"], listed["last_run"]) == ("alice", None)
    assert lister.get(f"{API}/runs/{runs['mid'].pk}").status_code == 404  # as the run itself answers them
    [read] = reader.get(f"{API}/workflows", {"scope": "global"}).json()["results"]
    assert read["last_run"]["run_id"] == str(runs["mid"].pk)


@pytest.mark.parametrize("query", [{"scope": "mine"}, {"materialize": "yes"}, {"offset": "two"}, {"offset": "-1"},
                                   {"limit": "0"}, {"q": "\x00"}])
def test_a_value_the_workflows_list_cannot_take_is_a_400(runs, query):
    response = client_for(runs["alice"]).get(f"{API}/workflows", query)

    assert response.status_code == 400, response.content[:300]
    assert response.json()["details"]["field"] == next(iter(query))
