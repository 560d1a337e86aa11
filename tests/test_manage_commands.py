"""An operator's management commands refuse what the admin's forms refuse, with one clear line,
and make nothing meanwhile."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from rest_framework.authtoken.models import Token


@pytest.mark.django_db
@pytest.mark.parametrize(("username", "says"), [
    ("", "username"),  # `aob_create_user "$NEW_USER"` with the variable unset
    ("ann smith", "username"),
    ("x" * 151, "150"),  # a DataError traceback from PostgreSQL
    ("bob/../admin", "username"),
])
def test_aob_create_user_refuses_a_username_the_admin_refuses(username: str, says: str) -> None:
    """The command judged a new name only against groups' and left names: it made a user named ""
    (or with spaces, or a slash), printing a working API token for an account nobody meant and the
    admin's form would not have made, and one past 150 characters ended in psycopg's DataError."""
    with pytest.raises(CommandError, match=says):
        call_command("aob_create_user", username, stdout=io.StringIO())
    assert not User.objects.filter(username=username[:150]).exists()
    assert not Token.objects.exists()


@pytest.mark.django_db
def test_aob_create_user_refuses_a_password_the_admin_refuses() -> None:
    """``--password x`` made a superuser whose password is one letter (the admin's forms hold
    passwords to AUTH_PASSWORD_VALIDATORS: at least 8 characters)."""
    with pytest.raises(CommandError, match="at least 8 characters"):
        call_command("aob_create_user", "root", "--superuser", "--password", "x", stdout=io.StringIO())
    assert not User.objects.filter(username="root").exists()

    out = io.StringIO()
    call_command("aob_create_user", "root", "--superuser", "--password", "long-enough-9", stdout=out)
    root = User.objects.get(username="root")
    assert root.is_superuser and root.check_password("long-enough-9")
    assert out.getvalue().strip() == Token.objects.get(user=root).key


@pytest.mark.django_db
def test_aob_demo_with_an_empty_demo_user_makes_the_default_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """.env.example: "An empty value means the default", and `make up`'s banner reads an empty
    AOB_DEMO_USER as ``demo``; ``aob_demo`` made a superuser named "" instead."""
    monkeypatch.setenv("AOB_DEMO_USER", "")
    monkeypatch.setenv("AOB_DEMO_PASSWORD", "chosen-by-its-owner-42")
    call_command("aob_demo", stdout=io.StringIO(), stderr=io.StringIO())
    assert list(User.objects.values_list("username", flat=True)) == ["demo"]


@pytest.mark.django_db
def test_aob_demo_keeps_the_demo_token_while_its_password_stays(monkeypatch: pytest.MonkeyPatch) -> None:
    """A password set ends the user's API token (``authentication.token_ends_with_account``), and
    every ``make up`` runs ``aob_demo`` with the kept password: setting it again would end the demo
    token a CLI was given at each start. A different password is a reset, and a new token."""
    def token_shown() -> str:
        out = io.StringIO()
        call_command("aob_demo", stdout=out, stderr=io.StringIO())
        return out.getvalue().split("API token:", 1)[1].split()[0]

    monkeypatch.setenv("AOB_DEMO_PASSWORD", "chosen-by-its-owner-42")
    first = token_shown()
    assert token_shown() == first
    monkeypatch.setenv("AOB_DEMO_PASSWORD", "chosen-again-by-its-owner-43")
    assert token_shown() != first
    assert User.objects.get(username="demo").check_password("chosen-again-by-its-owner-43")
