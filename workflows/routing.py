"""WebSocket routes."""

from django.urls import path

from workflows.consumers import RunEventsConsumer, UserEventsConsumer

websocket_urlpatterns = [
    path("ws/runs/<uuid:run_id>/", RunEventsConsumer.as_asgi()),
    path("ws/events/", UserEventsConsumer.as_asgi()),
]
