"""Fair limits: anonymous traffic is counted per client address and never spends the global write
limit, so an anonymous flood cannot lock known users out; login attempts are limited per address
and per username on every login surface (API token, /login/, /admin/login/). Real Redis counters
at the default limits (the ``ratelimit`` marker)."""

from __future__ import annotations

import time

import pytest
import redis
from django.conf import settings as django_settings
from django.test import Client
from rest_framework.test import APIClient

from tests.conftest import client_for, set_inputs, stored_run, wait_for_run
from workflows.models import NodeRun, Run, Workflow

pytestmark = [pytest.mark.ratelimit]

FLOODER = "203.0.113.9"
HELLO = {"nodes": [{"id": "a", "type": "transform", "config": {"expression": "{'ok': true}"}}], "edges": []}


def refused_for_rate(response, error: str) -> dict:
    assert response.status_code == 429, response.content
    body = response.json()
    assert body["error"] == error, body
    assert response["Retry-After"] == str(body["details"]["retry_after_seconds"])
    assert 1 <= body["details"]["retry_after_seconds"] <= 60
    return body


def test_an_anonymous_write_flood_is_limited_per_address_and_never_locks_out_a_known_user(engine, make_user):
    canary_owner = make_user("canary")
    anonymous = APIClient()
    started = time.monotonic()
    answers = [anonymous.post("/api/v1/runs", {"workflow": HELLO}, format="json", REMOTE_ADDR=FLOODER).status_code
               for _ in range(django_settings.AOB_RATE_ANON_PER_MIN + 40)]
    assert answers[:django_settings.AOB_RATE_ANON_PER_MIN] == [401] * django_settings.AOB_RATE_ANON_PER_MIN
    assert set(answers[django_settings.AOB_RATE_ANON_PER_MIN:]) == {429}
    refused_for_rate(anonymous.post("/api/v1/runs", {"workflow": HELLO}, format="json", REMOTE_ADDR=FLOODER),
                     "anonymous_rate_limit_exceeded")
    # a bogus token is no identity either, and counts for its address the same way
    anonymous.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    refused_for_rate(anonymous.post("/api/v1/workflows", {}, format="json", REMOTE_ADDR=FLOODER),
                     "anonymous_rate_limit_exceeded")
    assert time.monotonic() - started < 30

    # none of it was counted as a write: the global window is empty, and other addresses are unaffected
    assert redis.Redis.from_url(django_settings.REDIS_URL).zcard("aob:rl:global") == 0
    assert APIClient().post("/api/v1/runs", {}, format="json", REMOTE_ADDR="198.51.100.20").status_code == 401
    assert not Run.objects.exists()

    canary = client_for(canary_owner)
    saved = canary.post("/api/v1/workflows", {"tag_name": "hello", "workflow": HELLO}, format="json",
                        REMOTE_ADDR=FLOODER)
    assert saved.status_code == 201, saved.json()
    run = canary.post("/api/v1/workflows/hello/execute", {"inputs": {}}, format="json", REMOTE_ADDR=FLOODER)
    assert run.status_code == 201, run.json()
    assert wait_for_run(run.json()["run_id"], timeout=20).status == "completed"


@pytest.mark.django_db
def test_the_global_write_limit_counts_authenticated_writes_only(api, settings):
    settings.AOB_RATE_GLOBAL_PER_MIN = 5
    for _ in range(30):
        assert APIClient().post("/api/v1/workflows", {"tag_name": "x", "workflow": HELLO},
                                format="json").status_code == 401
    for i in range(5):
        assert api.post("/api/v1/workflows", {"tag_name": f"w{i}", "workflow": HELLO},
                        format="json").status_code == 201
    refused_for_rate(api.post("/api/v1/workflows", {"tag_name": "w5", "workflow": HELLO}, format="json"),
                     "global_rate_limit_exceeded")
    assert Workflow.objects.count() == 5


@pytest.mark.django_db
def test_one_user_s_writes_cannot_spend_the_global_limit_and_lock_every_other_user_out(api, make_user, settings):
    """Every known user's writes share the global limit; each user's own share of it
    (AOB_RATE_USER_WRITES_PER_MIN) is smaller, and a write past it is refused unrecorded. A flood of
    cheap writes (deleting a secret that does not exist) by one user leaves the others their
    approvals, cancels and saves."""
    settings.AOB_RATE_GLOBAL_PER_MIN = 6
    settings.AOB_RATE_USER_WRITES_PER_MIN = 3
    mallory = client_for(make_user("mallory"))

    answers = [mallory.delete("/api/v1/secrets/nope").status_code for _ in range(10)]

    assert answers[:3] == [404] * 3 and set(answers[3:]) == {429}
    body = refused_for_rate(mallory.delete("/api/v1/secrets/nope"), "user_rate_limit_exceeded")
    assert body["details"]["limit"] == 3
    for i in range(3):
        assert api.post("/api/v1/workflows", {"tag_name": f"w{i}", "workflow": HELLO},
                        format="json").status_code == 201
    assert Workflow.objects.count() == 3


@pytest.mark.django_db
def test_token_login_is_limited_per_address(make_user):
    make_user("alice", password="right-password-1")
    limit = django_settings.AOB_RATE_LOGIN_PER_ADDRESS_PER_MIN
    guesser = APIClient()
    for i in range(limit):  # a different name each time: only the address limit can stop this
        wrong = guesser.post("/api/v1/auth/token", {"username": f"user{i}", "password": "guess"}, format="json",
                             REMOTE_ADDR=FLOODER)
        assert wrong.status_code == 401, wrong.json()
    body = refused_for_rate(guesser.post("/api/v1/auth/token", {"username": "alice", "password": "right-password-1"},
                                         format="json", REMOTE_ADDR=FLOODER), "login_rate_limit_exceeded")
    assert body["details"]["limit"] == limit
    # another address logs in
    other = APIClient().post("/api/v1/auth/token", {"username": "alice", "password": "right-password-1"},
                             format="json", REMOTE_ADDR="198.51.100.21")
    assert other.status_code == 200 and other.json()["token"]


@pytest.mark.django_db
def test_login_is_limited_per_username_across_addresses_and_surfaces(make_user):
    make_user("bob", password="right-password-2")
    make_user("carol", password="right-password-3")
    limit = django_settings.AOB_RATE_LOGIN_PER_USERNAME_PER_MIN
    surfaces = ["/login/", "/admin/login/"]
    for i in range(limit):  # a new address each time: only the username limit can stop this
        response = Client().post(surfaces[i % 2], {"username": "bob", "password": f"guess{i}"},
                                 REMOTE_ADDR=f"198.51.100.{100 + i}")
        assert response.status_code == 200  # the form again, with its error
    for path in surfaces:
        refused_for_rate(Client().post(path, {"username": "bob", "password": "right-password-2"},
                                       REMOTE_ADDR="198.51.100.250"), "login_rate_limit_exceeded")
    refused_for_rate(APIClient().post("/api/v1/auth/token", {"username": "BOB", "password": "x"}, format="json",
                                      REMOTE_ADDR="198.51.100.251"), "login_rate_limit_exceeded")
    # the login form reads a name as NFKC: fullwidth "ｂｏｂ" is bob's account, so it is bob's count
    # (it was a fresh one, and logged in as bob past his spent limit: a red-team helper's finding)
    refused_for_rate(Client().post("/login/", {"username": "\uff42\uff4f\uff42", "password": "right-password-2"},
                                   REMOTE_ADDR="198.51.100.253"), "login_rate_limit_exceeded")
    # another user is not locked out by bob's attacker
    logged_in = Client().post("/login/", {"username": "carol", "password": "right-password-3"},
                              REMOTE_ADDR="198.51.100.252")
    assert logged_in.status_code == 302 and logged_in.url == "/"


@pytest.mark.django_db
def test_a_guesser_cannot_lock_a_user_out_of_the_addresses_they_logged_in_from(make_user):
    """The username's limit does not count attempts from an address the user logged in from (by
    token, or a page's session): a guesser spends it from elsewhere and locks the user out of new
    addresses only. Before, ten guesses a minute kept the user from logging in anywhere."""
    make_user("dave", password="right-password-4")
    home, office = "198.51.100.40", "198.51.100.41"
    right = {"username": "dave", "password": "right-password-4"}
    assert APIClient().post("/api/v1/auth/token", right, format="json", REMOTE_ADDR=home).status_code == 200
    assert Client().post("/login/", right, REMOTE_ADDR=office).status_code == 302

    for i in range(django_settings.AOB_RATE_LOGIN_PER_USERNAME_PER_MIN - 2):  # the two logins counted too
        assert Client().post("/login/", {"username": "dave", "password": f"guess{i}"},
                             REMOTE_ADDR=f"203.0.113.{20 + i}").status_code == 200

    refused_for_rate(APIClient().post("/api/v1/auth/token", right, format="json", REMOTE_ADDR="203.0.113.99"),
                     "login_rate_limit_exceeded")
    assert APIClient().post("/api/v1/auth/token", right, format="json", REMOTE_ADDR=home).status_code == 200
    page = Client().post("/login/", right, REMOTE_ADDR=office)
    assert page.status_code == 302 and page.url == "/"
    # from a known address a guess still counts for that address
    for i in range(django_settings.AOB_RATE_LOGIN_PER_ADDRESS_PER_MIN - 2):  # two logins from home before
        APIClient().post("/api/v1/auth/token", {"username": "dave", "password": f"g{i}"}, format="json",
                         REMOTE_ADDR=home)
    refused_for_rate(APIClient().post("/api/v1/auth/token", right, format="json", REMOTE_ADDR=home),
                     "login_rate_limit_exceeded")


@pytest.mark.django_db
def test_an_address_is_known_for_thirty_days_and_no_address_is_never_known(make_user):
    from workflows import ratelimit

    known = "aob:rl:login:known:" + ratelimit._login_name("erin")
    shared = redis.Redis.from_url(django_settings.REDIS_URL)
    ratelimit.login_remembered(address="unknown", username="erin")
    assert shared.zcard(known) == 0
    ratelimit.login_remembered(address="198.51.100.60", username="erin")
    assert ratelimit._known_address(ratelimit._login_name("erin"), "198.51.100.60")
    shared.zadd(known, {"198.51.100.60": time.time() - ratelimit.KNOWN_FOR_S - 5})
    assert not ratelimit._known_address(ratelimit._login_name("erin"), "198.51.100.60")
    ratelimit.login_remembered(address="198.51.100.61", username="erin")
    assert shared.zrange(known, 0, -1) == [b"198.51.100.61"]  # the stale one went with the next login


@pytest.mark.django_db
def test_an_ipv6_client_is_one_address_per_64(make_user, settings):
    settings.AOB_RATE_ANON_PER_MIN = 3
    for host in range(3):
        assert APIClient().get("/api/v1/runs", REMOTE_ADDR=f"2001:db8:1:2::{host + 1}").status_code == 401
    refused_for_rate(APIClient().get("/api/v1/runs", REMOTE_ADDR="2001:db8:1:2:ffff::9"),
                     "anonymous_rate_limit_exceeded")
    assert APIClient().get("/api/v1/runs", REMOTE_ADDR="2001:db8:1:3::1").status_code == 401


@pytest.mark.django_db
def test_one_user_s_reads_of_whole_values_are_limited_and_no_other_read_or_user_is(api, user, make_user, settings):
    """A value past an answer's byte budget read whole (an artifact, a run's inputs or output, a node
    run's field: up to 32 MiB each, built in the web process) counts against each user's
    AOB_RATE_USER_WHOLE_READS_PER_MIN; a value within the budget (the definitions the run page reads
    for each patch) and the bounded reads (a run, its details) do not, nor another user's reads."""
    settings.AOB_RATE_USER_WHOLE_READS_PER_MIN = 4
    settings.AOB_WHOLE_READS_AT_ONCE_PER_USER = 1  # one at a time: each gives its place back once answered
    settings.AOB_DETAILS_MAX_BYTES = 32  # the definition (about 80 bytes), inputs and output are past it
    run = stored_run(user)
    set_inputs(run, {"pad": "x" * 40})
    NodeRun.objects.create(run=run, node_id="a", node_type="transform", status="completed", output="y" * 40)
    whole = [f"/api/v1/runs/{run.pk}/inputs", f"/api/v1/artifacts/{run.base_artifact_id}",
             f"/api/v1/runs/{run.pk}/output", f"/api/v1/runs/{run.pk}/nodes/a/iterations/0/output"]

    assert [api.get(url).status_code for url in whole] == [200] * 4
    assert redis.Redis.from_url(django_settings.REDIS_URL).zcard(f"aob:rl:user:{user.pk}:whole:now") == 0
    body = refused_for_rate(api.get(whole[3]), "read_rate_limit_exceeded")
    assert body["details"]["limit"] == 4 and body["details"]["current_count"] == 4
    assert api.get(f"/api/v1/runs/{run.pk}").status_code == 200
    assert api.get(f"/api/v1/runs/{run.pk}/details").status_code == 200
    settings.AOB_DETAILS_MAX_BYTES = 1024 * 1024
    assert api.get(whole[1]).status_code == 200  # within a budget: a bounded read
    bob = make_user("bob")
    settings.AOB_DETAILS_MAX_BYTES = 32
    assert client_for(bob).get(f"/api/v1/runs/{stored_run(bob).pk}/output").status_code == 200
