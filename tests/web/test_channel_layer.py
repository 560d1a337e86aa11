"""The channel layer's group_send (aob_project/channel_layer.py) on the test stack's Redis: a
group with members still gets every message; a group nobody is in is answered by the one
pipelined check and leaves nothing behind."""

from __future__ import annotations

import asyncio
import uuid

import redis
from channels.layers import get_channel_layer
from django.conf import settings

from aob_project.channel_layer import RedisChannelLayer


def test_members_of_a_group_receive_what_is_sent_to_it():
    async def main() -> list[dict]:
        layer = get_channel_layer()
        assert isinstance(layer, RedisChannelLayer)
        group = f"test.{uuid.uuid4().hex}"
        first, second = await layer.new_channel(), await layer.new_channel()
        await layer.group_add(group, first)
        await layer.group_add(group, second)
        await layer.group_send(group, {"type": "run.event", "n": 1})
        got = [await asyncio.wait_for(layer.receive(first), 5), await asyncio.wait_for(layer.receive(second), 5)]
        await layer.group_discard(group, first)
        await layer.group_discard(group, second)
        return got

    assert [m["n"] for m in asyncio.run(main())] == [1, 1]


def zrange_calls(client: redis.Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_zrange", {}).get("calls", 0))


def test_a_send_to_a_group_nobody_is_in_skips_the_delivery_path_and_writes_nothing():
    client = redis.Redis.from_url(settings.REDIS_URL)
    group = f"test.{uuid.uuid4().hex}"

    async def main() -> None:
        layer = RedisChannelLayer(hosts=[settings.REDIS_URL])
        for _ in range(5):
            await layer.group_send(group, {"type": "run.event", "n": 1})
        await layer.close_pools()

    before = zrange_calls(client)
    asyncio.run(main())
    assert zrange_calls(client) == before  # channels_redis reads the members with ZRANGE
    assert not any(group.encode() in key for key in client.scan_iter("asgi*"))


def test_a_batch_reaches_the_groups_with_members_in_order_and_skips_the_rest():
    client = redis.Redis.from_url(settings.REDIS_URL)
    watched, empty = f"test.{uuid.uuid4().hex}", f"test.{uuid.uuid4().hex}"

    async def main() -> list[int]:
        layer = RedisChannelLayer(hosts=[settings.REDIS_URL])
        channel = await layer.new_channel()
        await layer.group_add(watched, channel)
        sends = [(group, {"type": "run.event", "n": n}) for n in range(4) for group in (watched, empty)]
        before = zrange_calls(client)
        await layer.group_send_many(sends)
        assert zrange_calls(client) - before == 4  # channels_redis's delivery path: the watched group's 4 only
        got = [(await asyncio.wait_for(layer.receive(channel), 5))["n"] for _ in range(4)]
        await layer.group_discard(watched, channel)
        await layer.close_pools()
        return got

    assert asyncio.run(main()) == [0, 1, 2, 3]


def test_anyone_in_says_whether_a_group_has_members():
    watched, empty = f"test.{uuid.uuid4().hex}", f"test.{uuid.uuid4().hex}"

    async def main() -> tuple[bool, bool, bool]:
        layer = RedisChannelLayer(hosts=[settings.REDIS_URL])
        channel = await layer.new_channel()
        await layer.group_add(watched, channel)
        while_in = layer.anyone_in([empty, watched]), layer.anyone_in([empty])  # blocking, as a worker calls it
        await layer.group_discard(watched, channel)
        after = layer.anyone_in([empty, watched])
        await layer.close_pools()
        return (*while_in, after)

    assert asyncio.run(main()) == (True, False, False)
