"""Flower as `make up` and docker-compose start it: never without a login, never with one that lets
anyone in.

    FLOWER_BASIC_AUTH=user:password python -m aob.flower --port=5555 --address=127.0.0.1

Flower can revoke tasks, send any task and shut workers down. It reads its logins from
``FLOWER_BASIC_AUTH``, splits them at commas and compares each with what a request's header decodes
to, so an empty entry (a trailing comma) let in the header ``Basic !``; unset, it asks no login at
all. The logins are judged (``aob.launcher.judged_flower_logins``, the one rule) in what Flower
itself read (the variable, its other ``FLOWER_*`` variables in any case, a config file, the command
line), in this process, before it serves: Flower does not start on logins that fail.
``--basic-auth`` cannot be given in any spelling Flower reads (``ps`` shows a command line).
Every page asks the login, ``/metrics`` too (Flower serves it to anyone: the task names, the workers'
host names and their load); only ``/healthcheck`` answers without one.
"""

from __future__ import annotations

import sys

from aob.launcher import LaunchError, judged_flower_logins
from aob_project.dotenv import load_dotenv

PROG = "python -m aob.flower"


def _option(arg: str) -> str:
    """An option's name as Flower's parser reads it (tornado's: any number of leading dashes, ``_``
    and ``-`` alike)."""
    return arg.split("=", 1)[0].lstrip("-").replace("_", "-").lower()


def argv_for(args: list[str]) -> list[str]:
    """Celery's command line for Flower with the operator's options; never its logins."""
    if any(arg.startswith("-") and _option(arg) == "basic-auth" for arg in args):
        raise SystemExit(f"{PROG}: the logins come from FLOWER_BASIC_AUTH only (a command line is every "
                         "local account's to read)")
    return ["celery", "-A", "aob_project", "flower", *args]


def _judge_what_flower_read() -> None:
    """After Flower has read its options (``FLOWER_BASIC_AUTH``, its other ``FLOWER_*`` variables in
    any case, a config file, the command line), the logins it will use, by `make up`'s rule."""
    from tornado.options import options

    try:
        logins = judged_flower_logins(",".join(options.basic_auth or []))
    except LaunchError as exc:
        raise SystemExit(f"{PROG}: {exc}") from None
    if logins is None:
        raise SystemExit(f"{PROG}: FLOWER_BASIC_AUTH is empty: set it to user:password (Flower would ask no login)")


def _metrics_behind_the_login() -> None:
    """Flower's ``/metrics`` handler is the one page (besides ``/healthcheck``) it leaves without
    ``tornado.web.authenticated``; it gets the check every other page has."""
    from flower.views.monitor import Metrics
    from tornado.web import authenticated

    if not getattr(Metrics.get, "_aob_login", False):
        Metrics.get = authenticated(Metrics.get)
        Metrics.get._aob_login = True  # type: ignore[attr-defined]


def main(args: list[str] | None = None) -> None:
    from celery.__main__ import main as celery
    from tornado.options import options

    load_dotenv()  # a login kept in .env counts, as every setting there does (the environment wins)
    sys.argv = argv_for(sys.argv[1:] if args is None else args)
    options.add_parse_callback(_judge_what_flower_read)  # run by tornado after each whole parse
    _metrics_behind_the_login()
    celery()


if __name__ == "__main__":
    main()
