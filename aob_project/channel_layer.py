"""The channel layer: channels_redis's core layer, with sends to groups nobody is in costing one
pipelined Redis round trip for a whole batch.

The engine pushes every event to its run's group and its owner's group, four sends per node
hop, and most runs have nobody watching. channels_redis first trims a group's expired members
and then reads them, one command each per send; here the trims and counts of every group in a
batch go out in one pipeline, and only a group with members takes channels_redis's own path
(which trims and reads again, then delivers). ``anyone_in`` asks synchronously whether a group
exists at all, so a worker that finds nobody watching never wakes its push thread.

A process's sockets receive through one ``BZPOPMIN`` at a time that waits ``brpop_timeout`` (5 s)
and answers nil when nothing came. The layer's connections read with a timeout past that wait
(``READ_MARGIN_S``): at redis-py's default (5 s, the same) the read gave up as the nil was due, the
error ended whichever idle socket held the receive, and pages reconnected one after another.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable
from typing import Any

import redis
from channels_redis.core import RedisChannelLayer as CoreLayer
from channels_redis.utils import create_pool

# How much longer than the blocking wait a read of the layer's connections may take: Redis answers
# an idle BZPOPMIN within milliseconds of its timeout, a hung Redis is still given up on.
READ_MARGIN_S = 5


class RedisChannelLayer(CoreLayer):
    def create_pool(self, index: int) -> Any:
        return create_pool({"socket_timeout": self.brpop_timeout + READ_MARGIN_S, **self.hosts[index]})

    async def _brpop_with_clean(self, index: int, channel: str, timeout: int) -> Any:
        """One blocking wait; a receive cancelled meanwhile ends here rather than waits again.
        redis-py sends each command through ``asyncio.wait_for``, which on Python 3.11 returns the
        send's result and drops a cancel that lands as the send completes; channels_redis waits
        again after an empty answer, so such a receive read on for ever, and the consumer that
        awaits it (a socket closed, a test's event loop ending) never ended. Until now the read
        timeout racing the wait ended it, with an error, within 5 s."""
        member = await super()._brpop_with_clean(index, channel, timeout)
        task = asyncio.current_task()
        if member is None and task is not None and task.cancelling():
            raise asyncio.CancelledError
        return member

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        await self.group_send_many([(group, message)])

    async def group_send_many(self, sends: list[tuple[str, dict[str, Any]]]) -> None:
        """``group_send`` for each ``(group, message)``, in order, skipping groups nobody is in."""
        occupied: set[str] = set()
        for index, groups in self._by_connection(group for group, _ in sends).items():
            async with self.connection(index).pipeline(transaction=False) as pipe:
                replies = await self._count_members(pipe, groups).execute()
            occupied.update(group for group, count in zip(groups, replies[1::2], strict=True) if count)
        for group, message in sends:
            if group in occupied:
                await super().group_send(group, message)

    async def group_add_many(self, groups: list[str], channel: str) -> None:
        """``group_add`` of ``channel`` to each of ``groups``, one pipelined round trip per Redis host:
        a socket joins its groups again every ``AOB_WS_RECHECK_S`` (``consumers._Consumer.rejoin``), so
        its membership's age, which ``group_expiry`` trims at the next send, never passes a day."""
        now = time.time()
        for index, names in self._by_connection(groups).items():
            async with self.connection(index).pipeline(transaction=False) as pipe:
                for group in names:
                    pipe.zadd(self._group_key(group), {channel: now})
                    pipe.expire(self._group_key(group), self.group_expiry)
                await pipe.execute()

    def anyone_in(self, groups: list[str]) -> bool:
        """Whether any of ``groups`` may have members, asked synchronously with one ``EXISTS`` per
        Redis host and no event loop, for a caller that usually finds nobody (a worker after a
        task). Redis drops a group's key with its last member; a member that expired but was not
        trimmed yet answers yes, and ``group_send_many`` then finds out exactly."""
        for index, names in self._by_connection(groups).items():
            if self._sync_client(index).exists(*(self._group_key(group) for group in names)):
                return True
        return False

    def _by_connection(self, groups: Iterable[str]) -> dict[int, list[str]]:
        """Distinct group names by the Redis host that holds them."""
        by_connection: dict[int, list[str]] = {}
        for group in dict.fromkeys(groups):
            self.require_valid_group_name(group)  # raises TypeError for an invalid one
            by_connection.setdefault(self.consistent_hash(group), []).append(group)
        return by_connection

    def _count_members(self, pipe: Any, groups: list[str]) -> Any:
        expired = int(time.time()) - self.group_expiry
        for group in groups:
            pipe.zremrangebyscore(self._group_key(group), min=0, max=expired)
            pipe.zcard(self._group_key(group))
        return pipe

    def _sync_client(self, index: int) -> redis.Redis:
        clients = self.__dict__.setdefault("_sync_clients", {})
        key = (os.getpid(), index)
        if key not in clients:
            host = {k: v for k, v in self.hosts[index].items() if k not in ("master_name", "sentinels")}
            address = host.pop("address", None)
            # a hung Redis must not stall a worker after its task: the push is best effort
            host = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5, **host}
            clients[key] = redis.Redis.from_url(address, **host) if address else redis.Redis(**host)
        return clients[key]
