"""The channel layer: channels_redis's core layer, with sends to groups nobody is in costing one
pipelined Redis round trip for a whole batch.

The engine pushes every event to its run's group and its owner's group, four sends per node
hop, and most runs have nobody watching. channels_redis first trims a group's expired members
and then reads them, one command each per send; here the trims and counts of every group in a
batch go out in one pipeline, and only a group with members takes channels_redis's own path
(which trims and reads again, then delivers).
"""

from __future__ import annotations

import time
from typing import Any

from channels_redis.core import RedisChannelLayer as CoreLayer


class RedisChannelLayer(CoreLayer):
    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        await self.group_send_many([(group, message)])

    async def group_send_many(self, sends: list[tuple[str, dict[str, Any]]]) -> None:
        """``group_send`` for each ``(group, message)``, in order, skipping groups nobody is in."""
        groups = list(dict.fromkeys(group for group, _ in sends))
        for group in groups:
            assert self.require_valid_group_name(group), "Group name not valid"
        by_connection: dict[int, list[str]] = {}
        for group in groups:
            by_connection.setdefault(self.consistent_hash(group), []).append(group)
        occupied: set[str] = set()
        expired = int(time.time()) - self.group_expiry
        for index, members_of in by_connection.items():
            async with self.connection(index).pipeline(transaction=False) as pipe:
                for group in members_of:
                    pipe.zremrangebyscore(self._group_key(group), min=0, max=expired)
                    pipe.zcard(self._group_key(group))
                replies = await pipe.execute()
            occupied.update(group for group, count in zip(members_of, replies[1::2], strict=True) if count)
        for group, message in sends:
            if group in occupied:
                await super().group_send(group, message)
