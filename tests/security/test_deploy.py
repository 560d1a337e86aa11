"""Production settings pass Django's deployment checklist; development settings do not pretend to."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def check_deploy(**env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "AOB_PRODUCTION": "true", "DEBUG": "false", "ALLOWED_HOSTS": "aob.example.com",
            "AOB_PUBLIC_URL": "https://aob.example.com",
            "AOB_SECRETS_KEYS": "kNXy1Jw4uGaO0sKhBQq3Vfr7o5Kx3nJ2s8h8m2Jc8Ao=", **env}
    return subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                          cwd=ROOT, env=full, capture_output=True, text=True, timeout=120)


def test_check_deploy_is_clean_with_production_settings():
    result = check_deploy(SECRET_KEY=secrets.token_urlsafe(64))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_catches_a_weak_secret():
    result = check_deploy(SECRET_KEY="short")
    assert result.returncode != 0
    assert "security.W009" in result.stdout + result.stderr


def test_production_refuses_to_start_without_a_secret():
    env = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, capture_output=True, text=True,
                            env={**env, "AOB_PRODUCTION": "true", "DEBUG": "false"}, timeout=120)
    assert result.returncode != 0
    assert "SECRET_KEY is required" in result.stderr


def test_production_refuses_to_start_without_a_key_for_the_secrets():
    env = {k: v for k, v in os.environ.items() if k != "AOB_SECRETS_KEYS"}
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, capture_output=True, text=True,
                            env={**env, "AOB_PRODUCTION": "true", "DEBUG": "false",
                                 "SECRET_KEY": secrets.token_urlsafe(64)}, timeout=120)
    assert result.returncode != 0
    assert "AOB_SECRETS_KEYS is required" in result.stderr


def test_production_refuses_any_host():
    """ALLOWED_HOSTS is also what the run streams' origin check reads: "*" would let any site's page
    open a signed-in person's stream."""
    result = check_deploy(SECRET_KEY=secrets.token_urlsafe(64), ALLOWED_HOSTS="aob.example.com,*")
    assert result.returncode != 0
    assert "ALLOWED_HOSTS must name this server's hosts" in result.stderr


def test_a_key_that_is_not_a_fernet_key_is_refused_at_start():
    result = check_deploy(SECRET_KEY=secrets.token_urlsafe(64), AOB_SECRETS_KEYS="not-a-key")
    assert result.returncode != 0
    assert "vault.E001" in result.stdout + result.stderr


def test_every_way_to_start_the_web_process_caps_the_frames_clients_send() -> None:
    """docs/SECURITY.md: frames a client sends on a stream are "at most 4 KiB (uvicorn
    ``--ws-max-size``)"; `make up` (aob/launcher.py) and docker-compose.yml pass it, the image's
    own command (``docker run`` of the Dockerfile, without compose) did not, so its uvicorn took
    frames up to its default 16 MiB, buffered whole before the consumer drops them unread."""
    import json

    cmd = next(line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD "))
    argv = json.loads(cmd[len("CMD "):])
    assert "uvicorn" in argv[0] and "--ws-max-size" in argv, argv
    assert argv[argv.index("--ws-max-size") + 1] == "4096", argv
