"""What one owner keeps for ever is bounded: a workflow version keeps its definition (up to
AOB_MAX_DEFINITION_BYTES, 1 MiB) as long as its tag lives, and retention removes an artifact only
once nothing refers to it. Within the write limit (25 a minute) one user stored 36 GB of
definitions a day, until the disk every tenant's database lives on was full."""

from __future__ import annotations

import pytest

from tests.api.factories import API, fetch_then_store, post_workflow
from tests.conftest import client_for
from workflows.models import Artifact, WorkflowVersion


def _padded(mark: str) -> dict:
    definition = fetch_then_store()
    definition["nodes"][0]["config"]["headers"] = {"X-Pad": mark * 2000}
    return definition


@pytest.mark.django_db
def test_an_owners_workflow_versions_are_capped_in_their_definitions_total_size(api, make_user, settings):
    first = post_workflow(api, "a", _padded("1"))
    assert first.status_code == 201
    size = Artifact.objects.get(pk=first.json()["artifact_id"]).size_bytes
    settings.AOB_MAX_DEFINITIONS_BYTES_PER_OWNER = 3 * size + 10
    assert post_workflow(api, "a", _padded("2")).status_code == 201
    assert post_workflow(api, "b", _padded("3")).status_code == 201  # every tag of the owner counts

    refused = post_workflow(api, "a", _padded("4"))

    assert refused.status_code == 400
    body = refused.json()
    assert "AOB_MAX_DEFINITIONS_BYTES_PER_OWNER" in body["message"]
    assert body["details"] == {"field": "workflow", "rule": "max_definitions_bytes",
                               "limit": 3 * size + 10, "size": 4 * size}
    patched = api.patch(f"{API}/workflows/a/patch", {"operations": [
        {"op": "replace", "path": "/nodes/0/config/headers/X-Pad", "value": "5" * 2000}]}, format="json")
    assert patched.status_code == 400 and patched.json()["details"]["rule"] == "max_definitions_bytes"
    assert post_workflow(api, "a", _padded("2")).json()["created"] is False  # the current one again: nothing kept
    assert WorkflowVersion.objects.filter(workflow__owner__username="alice").count() == 3
    assert post_workflow(client_for(make_user("bob")), "a", _padded("4")).status_code == 201  # each owner's own
    assert api.delete(f"{API}/workflows/b").status_code == 204  # its versions go with it
    assert post_workflow(api, "a", _padded("4")).status_code == 201
