"""AOB's own Redis clients for its keys (the rate limits' logs, the sweeper's mark, the
coordinator's shares) and their Lua scripts: one client per process, address and timeout, since a
forked pool process must never share its parent's socket. The web's rate limits wait at most a
second on Redis; the engine's keys two."""

from __future__ import annotations

import os
import threading
from typing import Any

import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.retry import Retry

_clients: dict[tuple[int, str, float, bool], redis.Redis] = {}
_scripts: dict[tuple[int, str], Any] = {}
_lock = threading.Lock()  # the web's threads share a process's clients


def shared(timeout_s: float = 2, *, once: bool = False) -> redis.Redis:
    """``once``: a command is tried once, never again after a backoff (redis-py's default is ten
    tries): for a caller that must not wait on a Redis that is away (beat's one thread)."""
    key = (os.getpid(), settings.REDIS_URL, timeout_s, once)
    with _lock:
        if key not in _clients:
            _clients[key] = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=timeout_s,
                                                 socket_connect_timeout=timeout_s,
                                                 **({"retry": Retry(NoBackoff(), 0)} if once else {}))
        return _clients[key]


def script(source: str, timeout_s: float = 2) -> Any:
    """``source`` registered on ``shared(timeout_s)``: called, it runs by its digest (EVALSHA),
    loaded again by redis-py should the server have lost it."""
    client = shared(timeout_s)
    key = (id(client), source)
    with _lock:
        if key not in _scripts:
            _scripts[key] = client.register_script(source)
        return _scripts[key]
