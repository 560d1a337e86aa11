"""WebSocket routes (the consumers arrive with the live UI)."""

websocket_urlpatterns: list = []
