"""Encryption at rest: Fernet (AES-128-CBC with HMAC-SHA256) from ``cryptography``, as a MultiFernet
over ``AOB_SECRETS_KEYS``: the first key encrypts, every key decrypts, so keys rotate by putting a
new one first and re-encrypting (``manage.py aob_rotate_secrets``) before the old one is dropped.

Outside production a development key is derived from ``SECRET_KEY`` (``make up`` sets both its
own); production refuses to start without ``AOB_SECRETS_KEYS`` (settings).

A process reads its keys once, from its environment, and cannot see them change: a new key list
takes a restart of every process, before the re-encryption (``vault.processes`` says which running
processes hold which keys, and ``aob_rotate_secrets`` waits for all of them to hold its first)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

from aob_project.development import derived_vault_key

__all__ = ["ENCRYPTED_FIELDS", "InvalidToken", "decrypt", "encrypt", "fernet", "keys", "rotate"]

# (app_label.Model, field) of every column holding a Fernet token, for re-encryption after a key rotation.
ENCRYPTED_FIELDS: list[tuple[str, str]] = [("vault.Secret", "ciphertext")]


def keys() -> list[bytes]:
    """This process's keys, the one that encrypts first."""
    return [k.encode() for k in settings.AOB_SECRETS_KEYS] or [derived_vault_key(settings.SECRET_KEY)]


@cache  # the settings come from the environment, which a running process never sees change
def fernet() -> MultiFernet:
    return MultiFernet([Fernet(k) for k in keys()])


def encrypt(value: str) -> str:
    return fernet().encrypt(value.encode()).decode()


def decrypt(token: str) -> str:
    return fernet().decrypt(token.encode()).decode()


def rotate(token: str) -> str:
    """The same value encrypted with the first (current) key."""
    return fernet().rotate(token.encode()).decode()


@dataclass
class Rotated:
    """What ``rotate_all`` did to one column: rows re-encrypted, and the keys of those no key given
    decrypts (left as they are, for the key that made them to be put back)."""

    count: int = 0
    unreadable: list[object] = field(default_factory=list)


def rotate_all() -> dict[str, Rotated]:
    """Re-encrypt every registered column with the current key, one row per transaction. A row no
    key decrypts is named and passed over (it stopped the whole pass, the rest left under the old
    key, which could then not be dropped)."""
    from django.apps import apps
    from django.db import transaction

    done: dict[str, Rotated] = {}
    for label, column in ENCRYPTED_FIELDS:
        model = apps.get_model(label)
        done[label] = rotated = Rotated()
        for pk in model.objects.values_list("pk", flat=True):
            with transaction.atomic():
                token = model.objects.select_for_update().values_list(column, flat=True).filter(pk=pk).first()
                if not token:
                    continue
                try:
                    model.objects.filter(pk=pk).update(**{column: rotate(token)})
                except InvalidToken:
                    rotated.unreadable.append(pk)
                else:
                    rotated.count += 1
    return done
