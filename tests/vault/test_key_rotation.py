"""`make up` keeps a data directory's own secret key and vault key, never the public development
ones, and re-encrypts what the vault held under the earlier one; a rotation names what no key
decrypts instead of stopping at it."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command

from aob.launcher import development_keys, vault_key_rotated
from aob_project.development import DEV_SECRET_KEY, derived_vault_key
from vault import crypto
from vault.models import Secret


@pytest.fixture
def keys_as(settings):
    """Run with ``AOB_SECRETS_KEYS`` as given (the vault's Fernet is built once a process)."""

    def use(keys: str) -> None:
        settings.AOB_SECRETS_KEYS = keys.split(",")
        crypto.fernet.cache_clear()

    yield use
    crypto.fernet.cache_clear()


def test_make_up_keeps_its_own_keys_where_the_environment_sets_none(tmp_path: Path):
    """The settings' fallbacks are in the source: a ``make up`` on them had sessions and signed links
    anyone could forge and a vault anyone who saw its database could read."""
    made = development_keys(tmp_path, {})

    assert made["SECRET_KEY"] != DEV_SECRET_KEY and len(made["SECRET_KEY"]) >= 40
    own, earlier = made["AOB_SECRETS_KEYS"].split(",")
    assert Fernet(own.encode()) and earlier == derived_vault_key(DEV_SECRET_KEY).decode()
    for kept in (tmp_path / "django" / "secret_key", tmp_path / "vault" / "key"):
        assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert development_keys(tmp_path, {}) == made  # made once, kept
    # the environment's own are left as they are; nothing of ours to rotate then
    assert development_keys(tmp_path / "other", {"SECRET_KEY": "s" * 50, "AOB_SECRETS_KEYS": own}) == {}
    assert vault_key_rotated(tmp_path / "other") is None


@pytest.mark.django_db
def test_a_data_directory_s_secrets_move_from_the_public_key_to_its_own(tmp_path: Path, user, keys_as):
    earlier = Fernet(derived_vault_key(DEV_SECRET_KEY))
    Secret.objects.create(owner=user, name="API_TOKEN", ciphertext=earlier.encrypt(b"s3cret").decode())

    made = development_keys(tmp_path, {})
    keys_as(made["AOB_SECRETS_KEYS"])
    assert vault_key_rotated(tmp_path) is False
    call_command("aob_rotate_secrets")
    vault_key_rotated(tmp_path, now=True)

    own_only = development_keys(tmp_path, {})["AOB_SECRETS_KEYS"]
    assert "," not in own_only  # the earlier key is no longer given once rotated
    keys_as(own_only)
    assert crypto.decrypt(Secret.objects.get(name="API_TOKEN").ciphertext) == "s3cret"


@pytest.mark.django_db
def test_a_rotation_re_encrypts_the_rest_and_names_what_no_key_decrypts(user, keys_as):
    """One row under a key nobody configured stopped the whole rotation with a traceback, leaving
    the rows after it under the old key, which could then not be dropped."""
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    stray = Secret.objects.create(owner=user, name="STRAY", ciphertext=Fernet(Fernet.generate_key()).encrypt(b"x").decode())
    keys_as(old)
    Secret.objects.create(owner=user, name="KEPT", ciphertext=crypto.encrypt("kept"))
    keys_as(f"{new},{old}")

    with pytest.raises(CommandError, match=rf"no key in AOB_SECRETS_KEYS decrypts vault.Secret {stray.pk}\b"):
        call_command("aob_rotate_secrets")

    keys_as(new)
    assert crypto.decrypt(Secret.objects.get(name="KEPT").ciphertext) == "kept"
