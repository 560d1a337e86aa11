"""People for the approval tests: alice owns the runs; bob, carol and dave are approvers;
erin is in the ``finance`` group; boss is the escalation target and a staff user."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group, User

from tests.support.remote import RemoteServer


@pytest.fixture(autouse=True)
def web_allowlist(settings: Any, remote: RemoteServer) -> None:
    """As in a deployment, the web process judges patched URLs with the workers' allowlist."""
    settings.AOB_HTTP_ALLOWLIST = [f"127.0.0.1:{remote.port}"]


@pytest.fixture
def bob(make_user: Any) -> User:
    return make_user("bob")


@pytest.fixture
def carol(make_user: Any) -> User:
    return make_user("carol")


@pytest.fixture
def dave(make_user: Any) -> User:
    return make_user("dave")


@pytest.fixture
def erin(make_user: Any) -> User:
    erin = make_user("erin")
    erin.groups.add(Group.objects.create(name="finance"))
    return erin


@pytest.fixture
def boss(make_user: Any) -> User:
    return make_user("boss", is_staff=True, is_superuser=True)
