"""Who may call what: no credentials is a 401; another user's workflow or artifact is a 404,
exactly like one that does not exist, so its existence does not leak."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from tests.api.factories import API, assert_error, fetch_then_store, post_workflow, with_url
from tests.conftest import client_for
from workflows.models import Artifact, Run, Workflow, WorkflowVersion

PASSWORD = "s3cret-pass!"


@pytest.fixture
def bob(make_user: Any) -> APIClient:
    return client_for(make_user("bob"))


@pytest.fixture
def alices(api) -> dict[str, Any]:
    """Alice's workflow ``fetcher`` with two versions."""
    post_workflow(api, "fetcher", with_url("https://example.com/a"))
    return post_workflow(api, "fetcher", with_url("https://example.com/b")).json()


OTHER_USERS_WORKFLOW = [
    ("GET", "/workflows/fetcher", None),
    ("GET", "/workflows/fetcher?materialize=true", None),
    ("DELETE", "/workflows/fetcher", None),
    ("PATCH", "/workflows/fetcher/patch", {"operations": [{"op": "replace", "path": "/nodes/0/config/url",
                                                           "value": "https://evil.example/"}]}),
    ("POST", "/workflows/fetcher/execute", {"inputs": {}}),
    ("GET", "/workflows/fetcher/versions", None),
    ("GET", "/workflows/fetcher/versions/0?materialize=true", None),
    ("GET", "/workflows/fetcher/versions/1", None),
    ("GET", "/workflows/fetcher/runs", None),
    ("POST", "/runs", {"tag": "fetcher"}),
]


@pytest.mark.parametrize(("method", "path", "data"), OTHER_USERS_WORKFLOW,
                         ids=[f"{m} {p}" for m, p, _ in OTHER_USERS_WORKFLOW])
def test_another_users_workflow_is_a_404(api, bob, alices, method, path, data):
    response = bob.generic(method, f"{API}{path}", *([] if data is None else [json.dumps(data)]),
                           content_type="application/json")

    body = assert_error(response, 404, "not_found")
    assert "fetcher" not in str(body["details"])
    assert not Run.objects.exists()
    mine = api.get(f"{API}/workflows/fetcher", {"materialize": "true"}).json()
    assert (mine["version"], mine["artifact_id"]) == (1, alices["artifact_id"])
    assert mine["definition"] == with_url("https://example.com/b")


def test_another_users_workflow_answers_like_one_that_does_not_exist(bob, alices):
    theirs = bob.get(f"{API}/workflows/fetcher")
    missing = bob.get(f"{API}/workflows/no-such-tag")

    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["error"] == missing.json()["error"]


@pytest.mark.parametrize("scope", ["user", "global", "all"])
def test_another_users_workflows_are_not_listed(bob, alices, scope):
    response = bob.get(f"{API}/workflows", {"scope": scope})

    assert response.status_code == 200
    assert response.json()["results"] == []


def test_two_users_may_use_the_same_tag_independently(api, bob, alices):
    response = post_workflow(bob, "fetcher", with_url("https://example.com/bobs"))

    assert response.status_code == 201
    assert response.json()["version"] == 0
    assert response.json()["owner"] == "bob"
    assert Workflow.objects.filter(tag="fetcher").count() == 2
    assert api.get(f"{API}/workflows/fetcher").json()["version"] == 1


def test_another_users_artifact_is_a_404(api, bob, alices):
    artifact = f"{API}/artifacts/{alices['artifact_id']}"

    assert api.get(artifact).status_code == 200
    assert_error(bob.get(artifact), 404, "not_found")


@pytest.mark.parametrize("artifact_id", ["sha256:" + "0" * 64, "nope", "sha256:"])
def test_an_unknown_artifact_is_a_404(api, alices, artifact_id):
    assert_error(api.get(f"{API}/artifacts/{artifact_id}"), 404, "not_found")


def test_a_shared_artifact_is_readable_by_each_user_who_saved_it(api, bob):
    mine = post_workflow(api, "one", fetch_then_store()).json()["artifact_id"]
    theirs = post_workflow(bob, "two", fetch_then_store()).json()["artifact_id"]

    assert mine == theirs
    assert bob.get(f"{API}/artifacts/{mine}").status_code == 200


def test_a_shared_artifact_tells_nobody_when_or_as_what_another_user_stored_it(api, bob):
    """Same content, same id: anyone can compute the id of small, guessable content and store it
    themselves. The row's own kind and time are those of whoever stored it first, maybe another
    user: bob's answer says when and as what bob's reference holds it, never alice's."""
    definition = fetch_then_store()
    mine = post_workflow(api, "one", definition).json()["artifact_id"]
    # as if alice had stored the same content long ago, as a node's output
    Artifact.objects.filter(pk=mine).update(created_at=timezone.now() - timedelta(days=300), kind="node_io")
    saved = post_workflow(bob, "two", definition).json()
    assert saved["artifact_id"] == mine

    body = bob.get(f"{API}/artifacts/{mine}").json()

    assert body["content"] == definition
    assert (body["kind"], body["created_at"]) == ("dag_version", saved["created_at"])


def test_a_deleted_workflows_artifact_is_no_longer_readable(api, alices):
    api.delete(f"{API}/workflows/fetcher")

    assert_error(api.get(f"{API}/artifacts/{alices['artifact_id']}"), 404, "not_found")
    assert not WorkflowVersion.objects.exists()


PROTECTED = [
    ("GET", "/workflows"),
    ("POST", "/workflows"),
    ("GET", "/workflows/fetcher"),
    ("DELETE", "/workflows/fetcher"),
    ("PATCH", "/workflows/fetcher/patch"),
    ("POST", "/workflows/fetcher/execute"),
    ("GET", "/workflows/fetcher/versions/0"),
    ("POST", "/workflows/validate"),
    ("GET", "/artifacts/sha256:abc"),
    ("GET", "/runs"),
    ("POST", "/runs"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED, ids=[f"{m} {p}" for m, p in PROTECTED])
def test_no_credentials_is_a_401_in_the_error_format(alices, method, path):
    response = APIClient().generic(method, f"{API}{path}", '{"workflow": {}}', content_type="application/json")

    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"].startswith("Token")
    assert WorkflowVersion.objects.count() == 2


@pytest.mark.parametrize("header", ["Token not-a-real-token", "Token ", "Bearer abc", "Token a b",
                                    # no key holds a NUL (PostgreSQL refused it in the lookup: a 500) or
                                    # more characters than the column: neither is asked of the database
                                    "Token a\x00b", "Bearer a\x00b", "Token \x00", "Bearer \x00",
                                    "Token " + "k" * 5000])
def test_a_bad_token_is_a_401(alices, header):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)

    assert_error(client.get(f"{API}/workflows/fetcher"), 401, "not_authenticated")


def test_a_token_from_auth_token_works(user, alices):
    response = APIClient().post(f"{API}/auth/token", {"username": "alice", "password": PASSWORD}, format="json")

    assert response.status_code == 200
    assert response.json() == {"token": user.auth_token.key, "username": "alice"}
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {response.json()['token']}")
    assert client.get(f"{API}/workflows/fetcher").json()["version"] == 1


def test_a_user_without_a_token_gets_one(make_user):
    from rest_framework.authtoken.models import Token

    carol = make_user("carol")
    Token.objects.filter(user=carol).delete()

    response = APIClient().post(f"{API}/auth/token", {"username": "carol", "password": PASSWORD}, format="json")

    assert response.status_code == 200
    assert response.json()["token"] == Token.objects.get(user=carol).key


@pytest.mark.parametrize(("username", "password"), [("alice", "wrong"), ("nobody", PASSWORD), ("ALICE", PASSWORD),
                                                    ("alice", PASSWORD + " "), ("alice", PASSWORD.upper())])
def test_wrong_credentials_are_a_401(user, username, password):
    response = APIClient().post(f"{API}/auth/token", {"username": username, "password": password}, format="json")

    body = assert_error(response, 401, "invalid_credentials")
    assert user.auth_token.key not in json.dumps(body)


def test_an_inactive_user_gets_no_token(make_user):
    make_user("dave", is_active=False)

    response = APIClient().post(f"{API}/auth/token", {"username": "dave", "password": PASSWORD}, format="json")

    assert_error(response, 401, "invalid_credentials")


def test_a_deactivated_users_token_does_not_come_back_when_they_are_reactivated(user, api):
    """A person leaves (or is suspended while a leak is looked into): deactivating them ends their
    API token (the CLI's, a CI job's) for good, as an offboarding expects, not for as long as the
    account is off. Before, the token was only refused while inactive, and re-activating the account
    (a rehire, a suspension lifted after a password reset) made the old key, wherever it was left,
    work again as them (a red-team helper's finding)."""
    old = user.auth_token.key
    assert api.get(f"{API}/auth/me").status_code == 200
    user.is_active = False
    user.save()
    assert_error(api.get(f"{API}/auth/me"), 401)

    user.is_active = True
    user.save()

    assert_error(api.get(f"{API}/auth/me"), 401)
    fresh = APIClient().post(f"{API}/auth/token", {"username": "alice", "password": PASSWORD}, format="json")
    assert fresh.status_code == 200 and fresh.json()["token"] != old, fresh.json()
    again = APIClient()
    again.credentials(HTTP_AUTHORIZATION=f"Token {fresh.json()['token']}")
    assert again.get(f"{API}/auth/me").json()["username"] == "alice"


def test_a_deactivated_users_sessions_do_not_come_back_when_they_are_reactivated(user):
    """Their sessions end with the account as their token does: a cookie left on a shared machine
    (or stolen) was refused only while the account was off, and signed in again once it was
    re-activated. The password the person knows still signs them in afresh."""
    browser, elsewhere = Client(), Client()
    for client in (browser, elsewhere):
        assert client.post("/login/", {"username": "alice", "password": PASSWORD}).status_code == 302
        assert client.get(f"{API}/auth/me").status_code == 200

    user.is_active = False
    user.save()
    assert_error(browser.get(f"{API}/auth/me"), 401)
    user.is_active = True
    user.save()

    assert_error(elsewhere.get(f"{API}/auth/me"), 401)
    assert elsewhere.get("/runs/").status_code == 302  # the pages send it to the login, as anyone signed out
    assert browser.post("/login/", {"username": "alice", "password": PASSWORD}).status_code == 302
    assert browser.get(f"{API}/auth/me").json()["username"] == "alice"
    assert not elsewhere.login(username="alice", password="not-" + PASSWORD)
    assert type(user).objects.get(pk=user.pk).password.startswith("md5$")  # rehashed at the sign-in


def test_a_hash_too_long_to_wrap_is_kept_and_its_sessions_are_deleted(user, settings):
    """scrypt's hash fills the password column (128 characters): the wrapper cannot take it, and the
    deactivation made it unusable, so the person's password was lost (a review's find). The hash is
    kept, and the sessions are ended in the database's store instead."""
    from django.contrib.auth.hashers import make_password

    settings.PASSWORD_HASHERS = [*settings.PASSWORD_HASHERS, "django.contrib.auth.hashers.ScryptPasswordHasher"]
    user.password = make_password(PASSWORD, hasher="scrypt")
    user.save()
    assert len(user.password) == 128
    browser, other = Client(), Client()
    assert browser.post("/login/", {"username": "alice", "password": PASSWORD}).status_code == 302
    bob = type(user).objects.create_user("bob-other", password=PASSWORD)
    assert other.post("/login/", {"username": "bob-other", "password": PASSWORD}).status_code == 302

    user.is_active = False
    user.save()
    user.is_active = True
    user.save()

    assert_error(browser.get(f"{API}/auth/me"), 401)
    assert other.get(f"{API}/auth/me").json()["username"] == bob.username  # another user's session stays
    assert type(user).objects.get(pk=user.pk).password.startswith("scrypt$")
    assert Client().login(username="alice", password=PASSWORD)


NEW_PASSWORD = "brand-new-pass-9"


def _holding(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def test_a_password_reset_in_the_admin_ends_the_old_api_token(user, api):
    """An operator resets a password after a leak: the sessions ended (Django binds them to the
    stored hash) but the API token, the credential a leaked CLI config or CI log holds, went on
    acting as the user (a red-team helper's finding). It ends with the password now."""
    leaked = _holding(user.auth_token.key)
    assert leaked.get(f"{API}/auth/me").status_code == 200
    browser = Client()
    assert browser.post("/login/", {"username": "alice", "password": PASSWORD}).status_code == 302
    admin = Client()
    admin.force_login(type(user).objects.create_superuser("root", password=PASSWORD))

    answer = admin.post(f"/admin/auth/user/{user.pk}/password/",
                        {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "usable_password": "true"})

    assert answer.status_code == 302, answer.content[:2000]
    assert_error(browser.get(f"{API}/auth/me"), 401)
    assert_error(leaked.get(f"{API}/auth/me"), 401)
    fresh = APIClient().post(f"{API}/auth/token", {"username": "alice", "password": NEW_PASSWORD}, format="json")
    assert _holding(fresh.json()["token"]).get(f"{API}/auth/me").json()["username"] == "alice"


def test_disabling_password_sign_in_in_the_admin_ends_the_api_token(user, api):
    """The admin's other reset, "password-based authentication: Disabled", ends the token too."""
    leaked = _holding(user.auth_token.key)
    admin = Client()
    admin.force_login(type(user).objects.create_superuser("root", password=PASSWORD))

    answer = admin.post(f"/admin/auth/user/{user.pk}/password/",
                        {"usable_password": "false", "unset-password": "Disable password-based authentication"})

    assert answer.status_code == 302, answer.content[:2000]
    assert not type(user).objects.get(pk=user.pk).has_usable_password()
    assert_error(leaked.get(f"{API}/auth/me"), 401)


def test_aob_create_user_resetting_a_password_prints_a_new_token(user, api):
    """``aob_create_user NAME --password NEW`` ("reset its password") printed the same old key."""
    from io import StringIO

    from django.core.management import call_command

    old = user.auth_token.key
    out = StringIO()
    call_command("aob_create_user", "alice", "--password", NEW_PASSWORD, stdout=out)

    assert out.getvalue().strip() != old
    assert_error(_holding(old).get(f"{API}/auth/me"), 401)
    assert _holding(out.getvalue().strip()).get(f"{API}/auth/me").json()["username"] == "alice"


def test_a_token_only_users_other_changes_keep_their_token(db):
    """A user made with no password signs in by the token alone: changing anything else of theirs
    (``--staff``, the admin's form), their unusable password kept, is no password change."""
    from io import StringIO

    from django.core.management import call_command

    first, again = StringIO(), StringIO()
    call_command("aob_create_user", "ci-bot", stdout=first)
    call_command("aob_create_user", "ci-bot", "--staff", stdout=again)

    assert again.getvalue() == first.getvalue()
    assert _holding(first.getvalue().strip()).get(f"{API}/auth/me").json()["username"] == "ci-bot"


def test_a_sign_in_that_rehashes_the_password_keeps_the_token(user, api, settings):
    """A sign-in rehashes a password stored with a hasher no longer preferred (``PASSWORD_HASHERS``
    changed, or a deactivation's wrapper): the same password, so no change, and the token stays."""
    from django.contrib.auth.hashers import make_password

    settings.PASSWORD_HASHERS = [*settings.PASSWORD_HASHERS, "django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    user.password = make_password(PASSWORD, hasher="pbkdf2_sha256")
    user.save()
    assert api.get(f"{API}/auth/me").status_code == 200

    assert Client().post("/login/", {"username": "alice", "password": PASSWORD}).status_code == 302
    again = APIClient().post(f"{API}/auth/token", {"username": "alice", "password": PASSWORD}, format="json")

    assert type(user).objects.get(pk=user.pk).password.startswith("md5$")  # rehashed at the sign-in
    assert api.get(f"{API}/auth/me").json()["username"] == "alice"
    assert again.json()["token"] == user.auth_token.key


def test_a_user_revokes_their_token_and_every_holder_of_it_is_refused(user, api):
    """A token left on a shared machine or pasted into a log: its user revokes it (``DELETE
    /auth/token``, ``aob logout --revoke``) without an operator; before, only an administrator (or
    a deactivation) could end one."""
    old = user.auth_token.key
    elsewhere = APIClient()  # another machine holding the same token
    elsewhere.credentials(HTTP_AUTHORIZATION=f"Token {old}")
    assert elsewhere.get(f"{API}/auth/me").status_code == 200

    assert_error(APIClient().delete(f"{API}/auth/token"), 401, "not_authenticated")  # it needs the token (or a session)
    assert api.delete(f"{API}/auth/token").status_code == 204

    assert_error(api.get(f"{API}/auth/me"), 401)
    assert_error(elsewhere.get(f"{API}/auth/me"), 401)
    assert_error(elsewhere.delete(f"{API}/auth/token"), 401)
    fresh = APIClient().post(f"{API}/auth/token", {"username": "alice", "password": PASSWORD}, format="json")
    assert fresh.status_code == 200 and fresh.json()["token"] != old


@pytest.mark.parametrize(("data", "field"), [({}, "username"), ({"username": "alice"}, "password"),
                                            ({"username": "alice", "password": ""}, "password")])
def test_a_token_request_with_a_missing_field_is_a_400(user, data, field):
    body = assert_error(APIClient().post(f"{API}/auth/token", data, format="json"), 400, "validation_error")

    assert body["details"]["field"] == field


def test_a_session_login_works_too(user, alices):
    client = APIClient()
    assert client.login(username="alice", password=PASSWORD)

    assert client.get(f"{API}/workflows/fetcher").json()["version"] == 1


def test_health_and_the_workflow_schema_need_no_credentials(db):
    client = APIClient()

    assert client.get(f"{API}/health").status_code == 200
    assert client.get(f"{API}/schema/workflow").status_code == 200
