"""The CLI against a live server: uvicorn on a loopback port over the test database, the session's
real Celery workers behind it, and ``aob`` run as a subprocess with a private config dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User

from tests.support import stack


@dataclass
class LiveApi:
    url: str
    proc: stack.Proc

    def log(self) -> str:
        return self.proc.log.read_text(errors="replace")


@pytest.fixture(scope="session")
def live_api(stack_env: dict[str, str]) -> Iterator[LiveApi]:
    """The ASGI app as `make up` runs it (HTTP and WebSocket), on the test database."""
    proc = stack.start_web(stack_env, "cli-uvicorn")
    yield LiveApi(proc.url, proc)
    proc.stop()


@pytest.fixture(autouse=True)
def fast_password_hasher(settings: Any) -> None:
    """Users here log in with tokens; the one login test puts PBKDF2 back for its user."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def lines(self) -> list[str]:
        return self.out.splitlines()


Aob = Callable[..., Result]


@pytest.fixture
def aob(live_api: LiveApi, tmp_path: Path) -> Aob:
    """``aob(*args, token=..., input=..., api_url=...)``: one CLI process (against ``live_api`` unless
    ``api_url`` names another server); HOME and XDG_CONFIG_HOME in a temp dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AOB_")}
    env.update({"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config"), "PYTHONUNBUFFERED": "1"})

    def run(*args: str, token: str | None = None, input: str | None = None, timeout: float = 60,
            api_url: str | None = None) -> Result:
        call_env = dict(env, AOB_TOKEN=token) if token else env
        done = subprocess.run([sys.executable, "-m", "aob.cli.main", "--api-url", api_url or live_api.url, *args],
                              cwd=stack.ROOT, env=call_env, input=input, capture_output=True, text=True,
                              timeout=timeout)
        return Result(done.returncode, done.stdout, done.stderr)

    return run


@pytest.fixture
def alice(transactional_db: Any, make_user: Any) -> User:
    return make_user("alice")


@pytest.fixture
def as_alice(aob: Aob, alice: User) -> Aob:
    def run(*args: str, **kwargs: Any) -> Result:
        return aob(*args, token=alice.auth_token.key, **kwargs)

    return run


@pytest.fixture
def write_json(tmp_path: Path) -> Callable[[str, Any], str]:
    def write(name: str, value: Any) -> str:
        path = tmp_path / name
        path.write_text(json.dumps(value))
        return str(path)

    return write
