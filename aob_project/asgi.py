"""ASGI entry: Django for HTTP (each request in one thread of a pool: aob_project/http_handler.py),
Channels for WebSocket, and the server's start and stop (``lifespan``)."""

import os
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aob_project.settings")

from aob_project.http_handler import get_thread_pool_application

django_http_app = get_thread_pool_application()

from django.conf import settings  # noqa: E402

from aob_project.logs import adopt_access_log  # noqa: E402

adopt_access_log(json_output=settings.AOB_LOG_JSON)

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from aob_project.body_limit import BodySizeLimit  # noqa: E402
from aob_project.same_origin import SameOriginValidator  # noqa: E402
from workflows.consumers import AnonymousLimit  # noqa: E402
from workflows.routing import websocket_urlpatterns  # noqa: E402


async def lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The web process's start and stop (uvicorn's lifespan): while it serves, it records its vault
    keys for ``aob_rotate_secrets`` (``vault.processes``); it has no periodic work to do it from.
    An exception here stops the server (aob/web.py runs it ``--lifespan on``): a web that cannot
    keep its record does not serve unseen. A Redis away at the start is not one: the record is
    written from the renewal's thread, tried again every ``REFRESH_S``."""
    from vault import processes

    stop = None
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            stop = processes.announce_every("web")
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if stop is not None:
                stop()
            await send({"type": "lifespan.shutdown.complete"})
            return


application = ProtocolTypeRouter(
    {
        "lifespan": lifespan,
        "http": BodySizeLimit(django_http_app),
        "websocket": SameOriginValidator(AnonymousLimit(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))),
    }
)
