"""Authorization across owners, surface by surface, as an authenticated user of another tenant.

One table of every object-bearing route (the REST API's, the pages', the approval page's) and one of
who asks: alice owns the module's world (``tests/security/conftest.py``); bob is asked to decide
her waiting run; carol owns nothing; staff who are not superusers are asked twice, without and
with the admin's permission to read runs and workflows. Each row says what each reader gets: the
answer, or the 404 of what does not exist, with nothing written. ``test_permissions`` pins the
first routes each user met; these rows add the rest (timeline, iterations, refusals, family,
budget, the pages) and the readers it had not met.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from rest_framework.test import APIClient

from approvals.models import Approval
from approvals.notifications import approval_notify
from tests.api.factories import assert_error
from tests.conftest import client_for, stored_run, with_permissions
from tests.security.conftest import World, state
from workflows import visibility

API = "/api/v1"
OK, GONE = 200, 404


def run_routes(world: World) -> list[tuple[str, str, Any, str]]:
    """(method, path, body, what it reaches) of alice's runs: reads, then writes."""
    waiting, finished = world.waiting.pk, world.finished.pk
    return [
        ("GET", f"{API}/runs/{finished}/timeline", None, "read"),
        ("GET", f"{API}/runs/{finished}/nodes/done/iterations", None, "read"),
        ("GET", f"{API}/runs/{finished}/nodes/done/iterations/0/attempt_log", None, "read"),
        ("GET", f"{API}/runs/{finished}/family", None, "read"),
        ("GET", f"{API}/runs/{finished}", None, "read"),
        ("GET", f"{API}/runs/{finished}/details", None, "read"),
        ("GET", f"{API}/runs/{finished}/output", None, "read"),
        ("GET", f"{API}/runs/{waiting}/refusals/{world.refusal.pk}", None, "read waiting"),
        ("GET", f"{API}/runs/{waiting}/events", None, "read waiting"),
        ("GET", f"{API}/runs/{waiting}/inputs", None, "read waiting"),
        ("GET", f"/runs/{finished}/", None, "page"),
        ("POST", f"{API}/runs/{waiting}/budget", {"max_tokens": 1}, "write"),
        ("POST", f"{API}/runs/{finished}/nodes/done/replay", None, "write"),
        ("POST", f"{API}/runs/{waiting}/cancel", None, "write"),
    ]


def workflow_routes(world: World) -> list[tuple[str, str, Any, str]]:
    version = world.workflow.current_version.artifact_id
    return [
        ("GET", f"{API}/artifacts/{version}", None, "workflow read"),
        ("GET", "/workflows/hello/", None, "workflow page"),
        ("GET", "/workflows/hello/triggers/", None, "workflow page"),
    ]


# What each reader gets, by what the route reaches. A run's reads are its owner's, staff's whom the
# admin lets read runs, and (for the run waiting at bob's gate) bob's; its writes only its owner's.
EXPECTED = {
    "alice": {"read": OK, "read waiting": OK, "page": OK, "write": OK,
              "workflow read": OK, "workflow page": OK},
    "bob": {"read": GONE, "read waiting": OK, "page": GONE, "write": GONE,
            "workflow read": GONE, "workflow page": GONE},
    "carol": {"read": GONE, "read waiting": GONE, "page": GONE, "write": GONE,
              "workflow read": GONE, "workflow page": GONE},
    "staff": {"read": GONE, "read waiting": GONE, "page": GONE, "write": GONE,
              "workflow read": GONE, "workflow page": GONE},
    "staff_who_reads": {"read": OK, "read waiting": OK, "page": OK, "write": GONE,
                        "workflow read": OK, "workflow page": GONE},
}


def reader(world: World, who: str, make_user: Any) -> User:
    if who in ("alice", "bob"):
        return getattr(world, who)
    if who == "carol":
        return make_user("carol")
    user = make_user(who, is_staff=True)
    if who == "staff_who_reads":  # what the admin's own pages of runs and workflows ask
        return with_permissions(user, "workflows.view_run", "workflows.view_workflow")
    return user


def as_(user: User) -> APIClient:
    client = client_for(user)
    client.force_login(user)  # the pages' session; the API takes the token first
    return client


def call(client: APIClient, method: str, path: str, body: Any) -> Any:
    return client.generic(method, path, json.dumps(body) if body is not None else "",
                          content_type="application/json")


@pytest.mark.parametrize("who", ["carol", "bob", "staff", "staff_who_reads", "alice"])
def test_every_route_answers_each_reader_by_the_one_rule(world: World, who: str, make_user: Any) -> None:
    client = as_(reader(world, who, make_user))
    routes = [*run_routes(world), *workflow_routes(world)]
    before = state()

    got = {}
    for method, path, body, reach in routes:
        if reach == "write" and who == "alice":
            continue  # the owner's writes are answered elsewhere; here they would change the world
        got[(method, path)] = call(client, method, path, body).status_code
    wanted = {(method, path): EXPECTED[who][reach] for method, path, _, reach in routes
              if not (reach == "write" and who == "alice")}

    assert got == wanted
    assert state() == before


@pytest.mark.parametrize("who", ["carol", "staff"])
def test_a_reader_the_rule_refuses_is_told_what_a_run_that_does_not_exist_tells(world: World, who: str,
                                                                               make_user: Any) -> None:
    """Same status, same body: nothing says the run exists."""
    client = as_(reader(world, who, make_user))
    missing = "00000000-0000-4000-8000-000000000000"

    for suffix in ("", "/timeline", "/family", "/events", "/nodes/done/iterations"):
        refused = client.get(f"{API}/runs/{world.finished.pk}{suffix}")
        assert_error(refused, 404, "not_found")
        assert refused.json() == client.get(f"{API}/runs/{missing}{suffix}").json(), suffix


@pytest.mark.parametrize(("who", "listed"), [("staff", False), ("staff_who_reads", True), ("carol", False)])
def test_lists_that_reach_across_owners_follow_the_same_rule(world: World, who: str, listed: bool,
                                                            make_user: Any) -> None:
    client = as_(reader(world, who, make_user))
    runs = {r["run_id"] for r in client.get(f"{API}/runs", {"owner": "alice"}).json()["results"]}
    workflows = {w["tag"] for w in client.get(f"{API}/workflows", {"scope": "all"}).json()["results"]}
    page = client.get("/runs/", {"owner": "alice"}).content.decode()

    assert (str(world.finished.pk) in runs) is listed
    assert ("hello" in workflows) is listed
    assert (str(world.finished.pk) in page) is listed


def test_the_rule_is_one_for_every_surface(world: World, make_user: Any) -> None:
    """The WebSocket, the run page and the API ask visibility; staff without the permission are
    anyone else."""
    plain, reads = reader(world, "staff", make_user), reader(world, "staff_who_reads", make_user)

    assert not visibility.run_visible(world.finished, user=plain)
    assert not visibility.runs_visible(user=plain).filter(pk=world.finished.pk).exists()
    assert visibility.run_visible(world.finished, user=reads)
    assert visibility.runs_visible(user=reads).filter(pk=world.finished.pk).exists()


def test_a_deactivated_owner_s_token_and_session_reach_nothing(world: World) -> None:
    """Deactivated with a token and a signed-in page already in hand: the API is a 401, a page the
    login (the WebSocket's own check is tests/web/test_consumers.py)."""
    token, session = client_for(world.alice), APIClient()
    session.force_login(world.alice)
    world.alice.is_active = False
    world.alice.save()

    for method, path, body, _ in run_routes(world):
        if path.startswith(API):
            assert call(token, method, path, body).status_code == 401, path
            assert call(session, method, path, body).status_code == 401, path
        else:
            assert session.get(path)["Location"].startswith("/login/"), path


@pytest.mark.django_db
def test_ones_own_gate_does_not_list_who_is_in_a_group_it_names(make_user: Any) -> None:
    """carol names the group ``finance``, which she is not in, on a gate of her own run: her
    approval's deliveries say the group was told, not which of its members were."""
    finance = Group.objects.create(name="finance")
    for name in ("erin", "frank"):
        member = make_user(name, email=f"{name}@example.com")
        member.groups.add(finance)
    carol = make_user("carol")
    approval = Approval.objects.create(run=stored_run(carol), approvers=["finance"])
    approval_notify(approval=approval)

    answer = client_for(carol).get(f"{API}/approvals/{approval.pk}").json()

    assert answer["deliveries"], "the members were told"
    assert {d["recipient"] for d in answer["deliveries"]} == {"finance"}
    assert "erin" not in json.dumps(answer) and "frank" not in json.dumps(answer)
