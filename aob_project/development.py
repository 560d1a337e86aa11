"""What a development set-up falls back to that is public (it is in this source), and what derives
from it: outside production the settings take ``DEV_SECRET_KEY`` when ``SECRET_KEY`` is unset, and
the vault a key derived from the secret key when ``AOB_SECRETS_KEYS`` is unset. ``make up`` makes a
data directory its own of both (``aob.launcher.development_keys``), and reads here the vault key
a data directory it started before used, to re-encrypt what that key encrypted."""

from __future__ import annotations

import base64
import hashlib

DEV_SECRET_KEY = "dev-insecure-aob-secret-key-change-me"  # noqa: S105 - the public development key, refused in production


def derived_vault_key(secret_key: str) -> bytes:
    """The vault's key when ``AOB_SECRETS_KEYS`` is unset: derived from ``secret_key``."""
    return base64.urlsafe_b64encode(hashlib.sha256(b"aob-secrets:" + secret_key.encode()).digest())
