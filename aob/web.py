"""The web process: uvicorn serving AOB's ASGI app, with the options every way of starting it needs.

    python -m aob.web --host 0.0.0.0 --port 8000 [--workers 2] [any other uvicorn option]

`make up` (aob/launcher.py), docker-compose.yml, the Dockerfile and the bench all start the web
process so; what a client may make it hold is decided here once, not in each command line:
request heads bounded in bytes, headers and time, and connections per client address
(aob_project/http_head.py, from settings), and
WebSocket frames of at most 4 KiB (clients send nothing over the event streams; uvicorn's default
16 MiB frames were buffered whole before the consumer dropped them); and the ASGI lifespan run, with
its failure stopping the server (``--lifespan on``): the lifespan is where the web records its vault
keys for ``aob_rotate_secrets`` (aob_project/asgi.py), and a web with it off (or ``auto`` swallowing
its failure) served unseen while a rotation re-encrypted under a key it did not hold. The options
that set these cannot be given: they would take the bounds away.
"""

from __future__ import annotations

import sys

APP = "aob_project.asgi:application"
FIXED = ["--http", "aob_project.http_head:HeadBoundedProtocol", "--ws", "aob_project.http_head:CountedWebSocket",
         "--ws-max-size", "4096", "--lifespan", "on"]


def argv_for(args: list[str]) -> list[str]:
    """uvicorn's arguments: the operator's, then the app and the fixed options."""
    for arg in args:
        name = arg.split("=", 1)[0]
        if name in FIXED[::2] or name == APP:
            raise SystemExit(f"python -m aob.web: {name} is set by aob/web.py, not on the command line")
    return [*args, APP, *FIXED]


def main(args: list[str] | None = None) -> None:
    from uvicorn.main import main as uvicorn

    uvicorn.main(args=argv_for(sys.argv[1:] if args is None else args), prog_name="python -m aob.web")


if __name__ == "__main__":
    main()
