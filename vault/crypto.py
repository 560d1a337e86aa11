"""Encryption at rest: Fernet (AES-128-CBC with HMAC-SHA256) from ``cryptography``, as a MultiFernet
over ``AOB_SECRETS_KEYS``: the first key encrypts, every key decrypts, so keys rotate by putting a
new one first and re-encrypting (``manage.py aob_rotate_secrets``) before the old one is dropped.

Outside production a development key is derived from ``SECRET_KEY``; production refuses to start
without ``AOB_SECRETS_KEYS`` (settings)."""

from __future__ import annotations

import base64
import hashlib
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

__all__ = ["ENCRYPTED_FIELDS", "InvalidToken", "decrypt", "encrypt", "fernet", "rotate"]

# (app_label.Model, field) of every column holding a Fernet token, for re-encryption after a key rotation.
ENCRYPTED_FIELDS: list[tuple[str, str]] = [("vault.Secret", "ciphertext")]


def _development_key() -> bytes:
    return base64.urlsafe_b64encode(hashlib.sha256(b"aob-secrets:" + settings.SECRET_KEY.encode()).digest())


@cache
def fernet() -> MultiFernet:
    keys = [k.encode() for k in settings.AOB_SECRETS_KEYS] or [_development_key()]
    return MultiFernet([Fernet(k) for k in keys])


def encrypt(value: str) -> str:
    return fernet().encrypt(value.encode()).decode()


def decrypt(token: str) -> str:
    return fernet().decrypt(token.encode()).decode()


def rotate(token: str) -> str:
    """The same value encrypted with the first (current) key."""
    return fernet().rotate(token.encode()).decode()


def rotate_all() -> dict[str, int]:
    """Re-encrypt every registered column with the current key, one row per transaction."""
    from django.apps import apps
    from django.db import transaction

    counts: dict[str, int] = {}
    for label, field in ENCRYPTED_FIELDS:
        model = apps.get_model(label)
        counts[label] = 0
        for pk in model.objects.values_list("pk", flat=True):
            with transaction.atomic():
                token = model.objects.select_for_update().values_list(field, flat=True).get(pk=pk)
                if token:
                    model.objects.filter(pk=pk).update(**{field: rotate(token)})
                    counts[label] += 1
    return counts
