"""kombu's Redis transport with one Redis client per connection pool.

kombu's Redis channel builds a new ``redis.Redis`` for every message it publishes and every worker
event it sends (``Channel.conn_or_acquire``), about 80 µs each on this machine (the client fills
~170 response callbacks in its constructor); a node step publishes two messages and its worker
sends six events. A ``redis.Redis`` is thread-safe and owns nothing but a reference to its pool,
so one per pool serves them all. The asynchronous client the consumer polls with is kombu's own,
unchanged. ``install()`` (called where the Celery app is made, ``aob_project/celery.py``) names it
the transport of ``redis://`` and ``rediss://`` URLs in kombu's transport registry, so broker URLs,
Flower and ``as_uri`` stay as they are.
"""

from __future__ import annotations

from typing import Any

import kombu.transport
from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _shared_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)
        client = self._shared_client
        if client is None or client.connection_pool is not self.pool:  # a new pool after a reconnect
            client = self._shared_client = super()._create_client()
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel


def install() -> None:
    for scheme in ("redis", "rediss"):
        kombu.transport.TRANSPORT_ALIASES[scheme] = f"{__name__}:Transport"
