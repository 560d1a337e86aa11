"""A misconfigured variable stops start-up with one line naming it and what it wants: never a
library's traceback, and never a process that starts half-working on a value it misread."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# valid, unreachable servers: ``manage.py check`` connects to neither, and no runtime.env is read
SERVERS = {"DATABASE_URL": "postgresql://aob:pw@127.0.0.1:1/aob", "REDIS_URL": "redis://:pw@127.0.0.1:1/0"}


def start(**env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AOB_", "DATABASE_URL", "REDIS_URL"))
            and k not in ("SECRET_KEY", "DEBUG")}
    return subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, capture_output=True, text=True,
                          env={**base, **SERVERS, "AOB_ENV_FILE": os.devnull, **env}, timeout=120)


def refused(result: subprocess.CompletedProcess, name: str) -> str:
    """The line start-up ended with, checked to name ``name``."""
    assert result.returncode != 0, f"started with {name} misread:\n{result.stdout}{result.stderr}"
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("RuntimeError: ") and name in last, result.stderr[-3000:]
    return last


def test_the_servers_above_start():
    result = start()
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("name", "value"), [("AOB_PRODUCTION", "ture"), ("AOB_PRODUCTION", "production"),
                                             ("AOB_SWEEPER_ENABLED", "enabled"),
                                             ("AOB_RATE_LIMITS_ENABLED", "ja")])
def test_a_switch_that_is_neither_true_nor_false_is_refused(name: str, value: str):
    """Anything but the four words for true was read as false: ``AOB_PRODUCTION=ture`` started a
    production server in development mode (the public development SECRET_KEY and the secrets' key
    derived from it, cookies without Secure, emails to the console), ``AOB_SWEEPER_ENABLED=enabled``
    turned off the recovery of every lost message and lapsed lease, with nothing said."""
    last = refused(start(**{name: value}), name)
    assert repr(value) in last and "true or false" in last
