"""The engine's own Redis client for its keys (the sweeper's mark, the coordinator's shares): one per
process and address, since a forked pool process must never share its parent's socket."""

from __future__ import annotations

import os

import redis
from django.conf import settings

_clients: dict[tuple[int, str], redis.Redis] = {}


def shared() -> redis.Redis:
    key = (os.getpid(), settings.REDIS_URL)
    if key not in _clients:
        _clients[key] = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    return _clients[key]
