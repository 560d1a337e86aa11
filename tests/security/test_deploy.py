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


def test_every_way_to_start_the_web_process_runs_it_with_its_bounds() -> None:
    """docs/SECURITY.md: frames a client sends on a stream are at most 4 KiB and a request's head is
    bounded in bytes, headers and time (``aob_project/http_head.py``). Each command line once said
    its own options: the image's own (``docker run`` of the Dockerfile, without compose) left out
    ``--ws-max-size``, and none bounded the heads. Every one now runs ``python -m aob.web``, which
    sets them, and refuses an option that would take them away."""
    import json

    import pytest
    import yaml

    from aob.launcher import web_command
    from aob.web import argv_for

    cmd = next(line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD "))
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for argv in (json.loads(cmd[len("CMD "):]), compose["services"]["web"]["command"],
                 web_command("python", port=8000, workers="2")):
        assert argv[1:3] == ["-m", "aob.web"] and "uvicorn" not in " ".join(argv), argv
    uvicorn = argv_for(["--host", "0.0.0.0"])
    assert uvicorn[uvicorn.index("--ws-max-size") + 1] == "4096", uvicorn
    assert uvicorn[uvicorn.index("--http") + 1] == "aob_project.http_head:HeadBoundedProtocol", uvicorn
    for loosening in (["--http", "h11"], ["--http=httptools"], ["--ws-max-size", "16777216"]):
        with pytest.raises(SystemExit):
            argv_for(loosening)
