"""ASGI entry: Django for HTTP (each request in one thread of a pool: aob_project/http_handler.py),
Channels for WebSocket."""

import os

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

application = ProtocolTypeRouter(
    {
        "http": BodySizeLimit(django_http_app),
        "websocket": SameOriginValidator(AnonymousLimit(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))),
    }
)
