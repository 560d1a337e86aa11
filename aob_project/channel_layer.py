"""The channel layer: channels_redis's core layer, with sends to groups nobody is in costing one
pipelined Redis round trip for a whole batch.

The engine pushes every event to its run's group and its owner's group, four sends per node
hop, and most runs have nobody watching. channels_redis first trims a group's expired members
and then reads them, one command each per send; here the trims and counts of every group in a
batch go out in one pipeline, and only a group with members takes channels_redis's own path
(which trims and reads again, then delivers). ``occupied_now`` asks the same synchronously, so a
worker that finds nobody watching never wakes its push thread.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from channels_redis.core import RedisChannelLayer as CoreLayer


class RedisChannelLayer(CoreLayer):
    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        await self.group_send_many([(group, message)])

    async def group_send_many(self, sends: list[tuple[str, dict[str, Any]]], *, checked: bool = False) -> None:
        """``group_send`` for each ``(group, message)``, in order, skipping groups nobody is in
        (``checked``: the caller has just asked ``occupied_now``)."""
        occupied = {group for group, _ in sends}
        if not checked:
            occupied = set()
            for index, groups in self._by_connection(sends).items():
                async with self.connection(index).pipeline(transaction=False) as pipe:
                    replies = await self._count_members(pipe, groups).execute()
                occupied.update(group for group, count in zip(groups, replies[1::2], strict=True) if count)
        for group, message in sends:
            if group in occupied:
                await super().group_send(group, message)

    def occupied_now(self, groups: list[str]) -> set[str]:
        """The groups that anyone is in, asked synchronously: one pipelined round trip per Redis
        host, and no event loop, for a caller that usually finds nobody (a worker after a task)."""
        occupied: set[str] = set()
        for index, names in self._by_connection([(group, {}) for group in groups]).items():
            replies = self._count_members(self._sync_client(index).pipeline(transaction=False), names).execute()
            occupied.update(group for group, count in zip(names, replies[1::2], strict=True) if count)
        return occupied

    def _by_connection(self, sends: list[tuple[str, dict[str, Any]]]) -> dict[int, list[str]]:
        by_connection: dict[int, list[str]] = {}
        for group in dict.fromkeys(group for group, _ in sends):
            assert self.require_valid_group_name(group), "Group name not valid"
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
