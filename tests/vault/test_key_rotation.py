"""`make up` keeps a data directory's own secret key and vault key, never the public development
ones, and re-encrypts what the vault held under the earlier one; a rotation names what no key
decrypts instead of stopping at it, and waits for every running process to hold its key first."""

from __future__ import annotations

import io
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command

from aob.launcher import development_keys, vault_key_rotated
from aob_project.development import DEV_SECRET_KEY, derived_vault_key
from tests.agents.flows import finish, http, start
from tests.support.stack import start_web
from vault import crypto, processes
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
    call_command("aob_rotate_secrets", force=True)  # the session's workers, if running, hold the suite's keys
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
        call_command("aob_rotate_secrets", force=True)

    keys_as(new)
    assert crypto.decrypt(Secret.objects.get(name="KEPT").ciphertext) == "kept"


def test_a_rotation_waits_for_every_running_process_to_hold_its_key_first(engine: Any, api: Any, remote: Any,
                                                                          keys_as: Any, settings: Any) -> None:
    """Each process reads its keys once, from its environment. The documented rotation (a new key
    first, ``aob_rotate_secrets``, the old key dropped), run from a one-off container beside the
    running web and workers, re-encrypted every secret under a key none of them held: each node
    sending a secret failed ``SecretUnreadable`` and each hook answered 401 until every process was
    restarted. The command now refuses, naming the processes, while one does not hold its key first."""
    assert api.put("/api/v1/secrets/TOKEN", {"value": "rotated-but-still-mine-42"}, format="json").status_code == 201
    suite = ",".join(settings.AOB_SECRETS_KEYS) or derived_vault_key(settings.SECRET_KEY).decode()
    keys_as(f"{Fernet.generate_key().decode()},{suite}")  # the one-off container, the workers as they started

    with pytest.raises(CommandError, match=r"do not hold \w+ first: .*w1@.*Nothing was re-encrypted"):
        call_command("aob_rotate_secrets", stdout=io.StringIO())

    keys_as(suite)
    run = finish(start(api, [http("send", f"{remote.base}/echo/rotated", headers={"X-Api-Key": "$secrets.TOKEN"})]))
    assert run.status == "completed", run.error
    assert remote.hits("/echo/rotated")[0]["headers"]["X-Api-Key"] == "rotated-but-still-mine-42"
    # every running process holding the command's key first: it re-encrypts, saying what it saw
    said = io.StringIO()
    call_command("aob_rotate_secrets", stdout=said)
    assert "w1@" in said.getvalue() and "vault.Secret: 1 re-encrypted" in said.getvalue(), said.getvalue()


def test_a_web_process_records_its_keys_while_it_serves(stack_env: dict[str, str], settings: Any) -> None:
    """The web has no periodic work of its own: its server's start starts the record's renewal and
    its stop withdraws it (``aob_project.asgi.lifespan``), as a worker's main process does on its
    timer."""
    proc = start_web(dict(stack_env), "uvicorn-vault-keys")
    mine = f"pid {proc.popen.pid})"
    try:
        recorded = _until(lambda: [h for h in processes.holders() if h.process.startswith("web ") and mine in h.process])
        assert recorded[0].keys == processes.held(), recorded
    finally:
        proc.stop()
    _until(lambda: not [h for h in processes.holders() if mine in h.process])


def _until(check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, processes.holders()
        time.sleep(0.1)
    return found
