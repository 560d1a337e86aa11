"""``Authorization: Bearer <key>`` is accepted as an alias of ``Token <key>``; a 401 names both schemes."""

from __future__ import annotations

from rest_framework.test import APIClient


def test_bearer_is_an_alias_of_token(user):
    bearer = APIClient()
    bearer.credentials(HTTP_AUTHORIZATION=f"Bearer {user.auth_token.key}")
    assert bearer.get("/api/v1/auth/me").json()["username"] == user.username

    wrong = APIClient()
    wrong.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")
    response = wrong.get("/api/v1/auth/me")
    assert response.status_code == 401 and response.json()["message"] == "Invalid token."
    spaced = APIClient()
    spaced.credentials(HTTP_AUTHORIZATION="Bearer a b")
    assert spaced.get("/api/v1/auth/me").status_code == 401


def test_no_credentials_is_a_401_naming_the_schemes(db):
    response = APIClient().get("/api/v1/workflows")
    assert response.status_code == 401
    assert response.json()["details"]["schemes"] == ["Token", "Bearer"]
    assert "Bearer" in response["WWW-Authenticate"]
