"""Flower as `make up` and docker-compose start it: never without a login, never with one that lets
anyone in.

    FLOWER_BASIC_AUTH=user:password python -m aob.flower --port=5555 --address=127.0.0.1

Flower can revoke tasks, send any task and shut workers down. It reads its logins from
``FLOWER_BASIC_AUTH``, splits them at commas and compares each with what a request's header decodes
to, so an empty entry (a trailing comma) let in the header ``Basic !``; unset, it asks no login at
all. The logins are judged here (``aob.launcher.flower_logins``, the one rule) before Flower
starts; the option that would give others cannot be given, in any spelling Flower reads. (A
``flowerconfig.py`` or ``--conf`` file may still set ``basic_auth``: a file the operator writes.)
"""

from __future__ import annotations

import os
import sys

from aob.launcher import LaunchError, flower_logins
from aob_project.dotenv import load_dotenv

PROG = "python -m aob.flower"


def _option(arg: str) -> str:
    """An option's name as Flower's parser reads it (tornado's: any number of leading dashes, ``_``
    and ``-`` alike)."""
    return arg.split("=", 1)[0].lstrip("-").replace("_", "-").lower()


def argv_for(args: list[str], environ: dict[str, str] | os._Environ[str]) -> list[str]:
    """Celery's command line for Flower with the operator's options, once the logins are judged."""
    if any(arg.startswith("-") and _option(arg) == "basic-auth" for arg in args):
        raise SystemExit(f"{PROG}: the logins come from FLOWER_BASIC_AUTH only (a command line is every "
                         "local account's to read)")
    try:
        logins = flower_logins(environ)
    except LaunchError as exc:
        raise SystemExit(f"{PROG}: {exc}") from None
    if logins is None:
        raise SystemExit(f"{PROG}: FLOWER_BASIC_AUTH is empty: set it to user:password (Flower would ask no login)")
    return [sys.executable, "-m", "celery", "-A", "aob_project", "flower", *args]


def main(args: list[str] | None = None) -> None:
    load_dotenv()  # a login kept in .env counts, as every setting there does (the environment wins)
    argv = argv_for(sys.argv[1:] if args is None else args, os.environ)
    os.execv(argv[0], argv)  # noqa: S606 - our own python, Celery's Flower in this process, no shell


if __name__ == "__main__":
    main()
