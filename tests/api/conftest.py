"""API tests create a user or two per test; Django's default PBKDF2 (over a million rounds) would
be most of their run time, and password hashing is not what they test."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(autouse=True)
def fast_password_hasher(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
