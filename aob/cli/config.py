"""Where ``aob login`` keeps its token: one JSON file in the user's config dir, readable by them only.

Tokens are kept per API URL, so a token issued by one server is never sent to another.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from .output import Failure

FILE_MODE = 0o600


def config_path() -> Path:
    return Path(click.get_app_dir("aob")) / "config.json"


def normalize_url(api_url: str) -> str:
    return api_url.rstrip("/")


def _load() -> dict[str, Any]:
    path = config_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise Failure(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        return {}
    servers = data.get("servers", {})
    # a token read as a number or a list (a hand edit) was sent on as one: ``.strip()`` raised a traceback
    if not isinstance(servers, dict) or not all(
            isinstance(entry, dict) and all(isinstance(entry.get(key, ""), str) for key in ("token", "username"))
            for entry in servers.values()):
        raise Failure(f"{path}: \"servers\" must be an object of {{api url: {{token, username}}}}, each text; "
                      "fix it, or delete the file and log in again (aob login)")
    return data


def _store(data: dict[str, Any]) -> None:
    """Write to a sibling created 0600, then rename: the token is never readable by others, even briefly."""
    path = config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def credentials_get(*, api_url: str) -> dict[str, str] | None:
    entry = _load().get("servers", {}).get(normalize_url(api_url))
    return entry if isinstance(entry, dict) and entry.get("token") else None


def credentials_save(*, api_url: str, token: str, username: str) -> Path:
    data = _load()
    data.setdefault("servers", {})[normalize_url(api_url)] = {"token": token, "username": username}
    _store(data)
    return config_path()


def credentials_forget(*, api_url: str) -> bool:
    data = _load()
    servers = data.get("servers", {})
    if normalize_url(api_url) not in servers:
        return False
    del servers[normalize_url(api_url)]
    _store(data)
    return True
