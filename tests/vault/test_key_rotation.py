"""`make up` keeps a data directory's own secret key and vault key, never the public development
ones, and re-encrypts what the vault held under the earlier one; a rotation names what no key
decrypts instead of stopping at it, and waits for every running process to hold its key first."""

from __future__ import annotations

import io
import json
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command

from aob import web
from aob.embedded import free_port
from aob.launcher import development_keys, vault_key_rotated
from aob_project import redis_client
from aob_project.development import DEV_SECRET_KEY, derived_vault_key
from tests.agents.flows import finish, http, start
from tests.support.stack import ROOT, start_web
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
    mine = f"pid {proc.popen.pid},"
    try:
        recorded = _until(lambda: [h for h in processes.holders() if h.process.startswith("web ") and mine in h.process])
        assert recorded[0].keys == processes.held(), recorded
    finally:
        proc.stop()
    _until(lambda: not [h for h in processes.holders() if mine in h.process])


def test_a_web_cannot_serve_without_running_what_records_its_keys(stack_env: dict[str, str]) -> None:
    """The process table said any other uvicorn option may follow ``python -m aob.web``, and a
    deployment that silenced uvicorn's "lifespan unsupported" line with ``--lifespan off`` served
    with no record: ``aob_rotate_secrets`` re-encrypted beside it while it held the old key (its
    hooks answered 401). aob/web.py runs the lifespan ``on`` and refuses the option, as it refuses
    ``--http``; a Redis away at the start still lets the web serve (the record is tried again)."""
    for given in (["--lifespan", "off"], ["--lifespan=off"], ["--lifespan", "auto"]):
        with pytest.raises(SystemExit, match="--lifespan is set by aob/web.py"):
            web.argv_for(given)
    assert web.argv_for([])[-2:] == ["--lifespan", "on"]

    away = {**stack_env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    proc = start_web(away, "uvicorn-redis-away")  # serving: "Uvicorn running on"
    try:
        proc.wait_for("vault.keys_unrecorded")
        assert proc.popen.poll() is None and "Application startup complete" in proc.log.read_text()
    finally:
        proc.stop()


@pytest.mark.skipif(not shutil.which("unshare"), reason="needs unshare(1) for a process of its own pid namespace")
def test_processes_of_one_host_name_and_pid_keep_records_of_their_own(stack_env: dict[str, str]) -> None:
    """A record was keyed by host name and pid: two containers with the host's network (compose
    ``network_mode: host``, a Kubernetes ``hostNetwork`` pod) each run their command as pid 1 under
    the host's name, so the worker still on the old key list and the one restarted with the new key
    first wrote one record, the last won, and the rotation saw only the new one; and one's stop
    withdrew the other's. Here processes each pid 1 in a pid namespace of their own on this host."""
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    script = ("import sys, django; django.setup(); from vault import processes; "
              "processes.withdraw() if sys.argv[1:] == ['stop'] else processes.announce('worker'); print('done')")
    marks = [processes.fingerprint(old.encode())]
    try:
        # the worker not yet restarted, the one restarted, then a third one stopping
        for keys, *args in ((old,), (f"{new},{old}",), (new, "stop")):
            env = {**stack_env, "AOB_SECRETS_KEYS": keys, "DJANGO_SETTINGS_MODULE": "aob_project.settings"}
            done = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", script, *args],
                                  cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0 and "done" in done.stdout, done.stdout + done.stderr
        seen = [h.keys for h in processes.holders() if "pid 1," in h.process]
        assert marks in seen and [processes.fingerprint(new.encode()), *marks] in seen, processes.holders()
    finally:  # lapsing only after KEPT_S, they would hold back the rotations of the tests after this one
        client = redis_client.shared()
        for key in client.scan_iter(processes.KEY.format("*")):
            if marks[0] in json.loads(client.get(key) or "{}").get("keys", []):
                client.delete(key)


def _until(check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, processes.holders()
        time.sleep(0.1)
    return found
