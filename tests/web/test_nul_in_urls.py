"""A NUL character in a page's or the admin's URL is refused before it reaches PostgreSQL (which
refuses NUL in text: a 500), as the API refuses it: in the path it names nothing (404), in a query
parameter it is a 400 naming the parameter. The API's own answers are pinned in
``tests/security/test_inputs.py`` and ``tests/api/test_limits.py``."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from tests.conftest import stored_run
from workflows.services.definitions import workflow_save

ONE = {"nodes": [{"id": "a", "type": "transform", "config": {"expression": "1"}}], "edges": []}

# the pages any signed-in user opens, with a tag from the path
PAGES = ["/workflows/a%00b/", "/workflows/%00/triggers/", "/workflows/refunds%00/"]
# the admin's changelists, filtered by a column as a link or a hand-edited address would, and a
# change page of a row whose key is text (artifacts, hooks)
ADMIN_QUERIES = [
    ("/admin/workflows/run/?tag=%00", "tag"), ("/admin/workflows/run/?status=%00", "status"),
    ("/admin/workflows/noderun/?node_type=%00", "node_type"), ("/admin/workflows/event/?type=%00", "type"),
    ("/admin/workflows/workflow/?tag=a%00", "tag"), ("/admin/workflows/patchrefusal/?rule=%00", "rule"),
    ("/admin/approvals/approval/?status=%00", "status"), ("/admin/approvals/delivery/?recipient=%00", "recipient"),
    ("/admin/triggers/hookdelivery/?hook=%00", "hook"), ("/admin/vault/secret/?name=%00", "name"),
    ("/admin/auth/user/?username=%00", "username"), ("/admin/auth/group/?name=%00", "name"),
]
ADMIN_PATHS = ["/admin/workflows/artifact/%00/change/", "/admin/triggers/hook/%00/change/",
               "/admin/workflows/artifact/sha256:%00/history/"]


def signed_in(user: Any) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client


@pytest.mark.parametrize("path", PAGES)
def test_nul_in_a_page_path_is_a_404_not_a_500(user: Any, path: str) -> None:
    workflow_save(owner=user, tag="refunds", definition=ONE)

    response = signed_in(user).get(path)

    assert response.status_code == 404, response.content[:300]
    assert response.json()["error"] == "not_found"


@pytest.mark.parametrize(("url", "field"), ADMIN_QUERIES)
def test_nul_in_an_admin_filter_is_a_400_naming_the_parameter(root: Any, user: Any, url: str, field: str) -> None:
    stored_run(user)

    response = signed_in(root).get(url)

    assert response.status_code == 400, response.content[:300]
    assert response.json()["error"] == "validation_error"
    assert response.json()["details"] == {"field": field, "rule": "nul"}


@pytest.mark.parametrize("path", ADMIN_PATHS)
def test_nul_in_an_admin_path_is_a_404_not_a_500(root: Any, path: str) -> None:
    response = signed_in(root).get(path)

    assert response.status_code == 404, response.content[:300]
