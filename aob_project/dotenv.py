"""A ``.env`` file, read when present: the settings and the launcher both start here, so a value
there is seen by `make up` (which decides whether to start embedded servers) and by every process.

Variables already in the environment win over the file. ``AOB_ENV_FILE`` names another file.
"""

from __future__ import annotations

import os
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent


def env_file() -> Path:
    return Path(os.environ.get("AOB_ENV_FILE") or BASE_DIR / ".env")


def load_dotenv() -> Path | None:
    """Read the file into ``os.environ`` without overriding what is set; the path read, or None."""
    path = env_file()
    if not path.is_file():
        return None
    environ.Env.read_env(str(path), overwrite=False)
    return path
