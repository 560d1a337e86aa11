"""The web UI: server-rendered pages whose live parts are vanilla ES modules over the REST API
and the WebSocket event streams (``workflows/static/aob/``); no build step."""
