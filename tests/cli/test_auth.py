"""login keeps a token readable by the user only; whoami asks the API; without a token, the API's 401."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

from tests.support.stack import ROOT


def test_login_whoami_logout(transactional_db, aob, make_user, settings, tmp_path):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]  # what the server checks
    user = make_user("carol", password="carol-pass-1")

    wrong = aob("login", "--username", "carol", "--password", "nope")
    assert wrong.code == 1 and wrong.err.splitlines() == [
        "warning: --password on the command line is visible to every account on this machine (ps) and kept in "
        "your shell's history; use the prompt (leave --password out)", "error: wrong username or password"]

    login = aob("login", "--username", "carol", input="carol-pass-1\n")  # the password is prompted for
    assert login.code == 0, login.err
    assert "logged in to http://127.0.0.1:" in login.out and login.out.strip().endswith("as carol")
    config = tmp_path / "config" / "aob" / "config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    (entry,) = json.loads(config.read_text())["servers"].values()
    assert entry == {"token": user.auth_token.key, "username": "carol"}

    limit = settings.AOB_OWNER_STORAGE_BYTES
    assert aob("--output", "json", "whoami").json() == {
        "username": "carol", "is_staff": False, "storage": {"stored_bytes": 0, "limit_bytes": limit}}
    assert aob("whoami").out.strip().endswith("; runs keep 0 bytes of 20.0 GiB")  # what her runs keep

    assert aob("logout").out.startswith("logged out of http://127.0.0.1:")
    assert json.loads(config.read_text())["servers"] == {}
    anonymous = aob("whoami")
    assert anonymous.code == 1
    assert anonymous.err.splitlines() == ["error: Authentication credentials were not provided.",
                                          "hint: log in with `aob login`, or set AOB_TOKEN"]


def test_logout_revoke_ends_the_token_everywhere(transactional_db, aob, make_user, settings, tmp_path):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]  # what the server checks
    make_user("erin", password="erin-pass-1")
    assert aob("login", "--username", "erin", input="erin-pass-1\n").code == 0
    old = json.loads((tmp_path / "config" / "aob" / "config.json").read_text())["servers"]
    (token,) = (entry["token"] for entry in old.values())

    done = aob("--output", "json", "logout", "--revoke")
    assert done.code == 0, done.err
    assert done.json()["revoked"] is True and done.json()["logged_out"] is True
    elsewhere = aob("whoami", token=token)  # another machine, a script with the same token
    assert elsewhere.code == 1 and "Invalid token." in elsewhere.err

    nothing = aob("logout", "--revoke")  # nothing stored: an error, not a silent success
    assert nothing.code == 1 and "no token to revoke" in nothing.err
    assert aob("login", "--username", "erin", input="erin-pass-1\n").code == 0
    new = json.loads((tmp_path / "config" / "aob" / "config.json").read_text())["servers"]
    assert next(iter(new.values()))["token"] != token


def test_a_token_in_the_environment_and_a_bad_one(aob, alice):
    assert aob("whoami", token=alice.auth_token.key).out.startswith("alice at http://127.0.0.1:")

    bogus = aob("--token", "not-a-token", "workflow", "list")
    assert bogus.code == 1 and bogus.err.splitlines()[:2] == [
        "warning: --token on the command line is visible to every account on this machine (ps) and kept in your "
        "shell's history; use AOB_TOKEN or `aob login`", "error: Invalid token."]


def test_an_unreachable_server_is_an_error_not_a_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "aob.cli.main", "--api-url", "http://127.0.0.1:9", "whoami"],
                          capture_output=True, text=True, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
                          cwd=ROOT, timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith("error: cannot reach the API at http://127.0.0.1:9")
    assert "Traceback" not in done.stderr


def test_the_console_script_is_installed():
    script = Path(sys.executable).with_name("aob")
    assert script.exists(), "run `make venv`: it installs the project (and its `aob` script) editable"
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "workflow" in done.stdout


def test_a_secret_value_typed_on_the_command_line_is_warned_against_and_a_pipe_or_the_prompt_is_not(as_alice, alice):
    """``--value`` put a secret where ``--token`` and ``--password`` are warned against, silently."""
    from vault.services import secret_values

    typed = as_alice("secret", "set", "API_KEY", "--value", "s3cret-value-42")
    assert typed.code == 0 and typed.err.splitlines() == [
        "warning: --value on the command line is visible to every account on this machine (ps) and kept in your "
        "shell's history; use the prompt (leave --value out) or --value - with a pipe"]
    piped = as_alice("secret", "set", "PIPED_KEY", "--value", "-", input="from-a-pipe 42\n")
    prompted = as_alice("secret", "set", "PROMPTED_KEY", input="from-the-prompt\n")
    assert (piped.code, piped.err, prompted.code) == (0, "", 0), (piped.err, prompted.err)
    assert "warning: --value" not in prompted.err  # (getpass warns that a pipe is not a terminal)
    assert secret_values(owner_id=alice.pk, names={"API_KEY", "PIPED_KEY", "PROMPTED_KEY"}) == {
        "API_KEY": "s3cret-value-42", "PIPED_KEY": "from-a-pipe 42", "PROMPTED_KEY": "from-the-prompt"}


def _aob_at(api_url: str, *args: str, tmp_path: Path, token: str | None = "a-token", input: str | None = None
            ) -> subprocess.CompletedProcess[str]:
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config"), "PATH": "/usr/bin:/bin"}
    if token:
        env["AOB_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "aob.cli.main", "--api-url", api_url, *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=60, input=input)


def test_a_token_or_a_password_is_never_sent_over_plain_http_to_another_machine(tmp_path):
    """A token (or a login's password) over plain http to a host that is not this machine's loopback
    is readable by everyone on the way; the CLI refuses before it connects, unless told the network
    is trusted. (``.invalid`` never resolves: before, the CLI tried, and failed only to reach it.)"""
    refused = _aob_at("http://aob.invalid:8000", "whoami", tmp_path=tmp_path)
    assert refused.returncode == 1 and refused.stderr.startswith(
        "error: refusing to send your token over plain http to aob.invalid"), refused.stderr
    login = _aob_at("http://aob.invalid:8000", "login", "-u", "carol", tmp_path=tmp_path, token=None,
                    input="carol-pass-1\n")
    assert login.returncode == 1 and "error: refusing to send your password over plain http to aob.invalid" in (
        login.stderr), login.stderr
    allowed = _aob_at("http://aob.invalid:8000", "--allow-http", "whoami", tmp_path=tmp_path)
    assert allowed.returncode == 1 and allowed.stderr.startswith("error: cannot reach the API"), allowed.stderr
    for local in ("http://localhost:9", "http://[::1]:9", "https://aob.invalid"):
        assert _aob_at(local, "whoami", tmp_path=tmp_path).stderr.startswith("error: cannot reach the API"), local
