"""A ``.env`` file is read when present (the environment wins over it), and ``.env.example`` works
when copied as it is: every value parses, and it leaves DATABASE_URL / REDIS_URL unset, so
`make up` still embeds PostgreSQL and Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from django.conf import settings

ROOT = Path(settings.BASE_DIR)
PROBE = """
import json, os, django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aob_project.settings")
django.setup()
from django.conf import settings as s
print(json.dumps({"file": str(s.ENV_FILE), "agents": s.AOB_MAX_AGENT_NODES, "model": s.AOB_LLM_MODEL,
                  "ports": s.AOB_HTTP_ALLOWED_PORTS, "db_from_file": "DATABASE_URL" in open(str(s.ENV_FILE)).read()
                  .replace("# DATABASE_URL", ""), "debug": s.DEBUG}))
"""


def settings_with(env_file: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AOB_", "OPENAI_")) and k not in {
        "DEBUG", "SECRET_KEY", "ALLOWED_HOSTS"}}
    env.update({"AOB_ENV_FILE": str(env_file), **extra})
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_example_works_when_copied_and_a_value_in_it_takes_effect(tmp_path: Path) -> None:
    copied = tmp_path / ".env"
    copied.write_text((ROOT / ".env.example").read_text())

    as_is = settings_with(copied)
    assert as_is["file"] == str(copied) and as_is["agents"] == 5 and as_is["ports"] == [80, 443]
    assert as_is["db_from_file"] is False  # make up embeds the servers, as without a .env

    copied.write_text(copied.read_text().replace("AOB_MAX_AGENT_NODES=5", "AOB_MAX_AGENT_NODES=3")
                      .replace("AOB_LLM_MODEL=gpt-4o-mini", "AOB_LLM_MODEL=gpt-4.1-mini"))
    changed = settings_with(copied)
    assert (changed["agents"], changed["model"]) == (3, "gpt-4.1-mini")

    assert settings_with(copied, AOB_MAX_AGENT_NODES="2")["agents"] == 2  # the environment wins
