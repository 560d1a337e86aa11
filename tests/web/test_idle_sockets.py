"""Idle event streams and the channel layer's blocking wait (``aob_project.channel_layer``).

A web process's sockets receive through one ``BZPOPMIN`` at a time, which waits
``brpop_timeout`` (channels_redis: 5 s) and answers nil when nothing came. redis-py 8 reads with a
5 s socket timeout by default: the read gave up just as the nil was due, the ``TimeoutError``
ended whichever idle socket held the receive, and pages reconnected, one socket every 5 s (7 of 10
idle sockets closed in 40 s). A longer read timeout alone made a cancelled receive wait again for
ever: redis-py sends through ``asyncio.wait_for``, which on Python 3.11 drops a cancel that lands
as a send completes, and channels_redis waits again after an empty answer; the read timeout had
been what ended such a receive (with an error, after 5 s)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import redis
from channels.layers import channel_layers, get_channel_layer
from django.conf import settings

from tests.support.stack import start_web

SOCKETS = 5
WAITS = 3  # idle blocking waits the sockets must outlive


def _blocked_since(client: redis.Redis, seconds: float) -> bool:
    """Whether a connection of Redis has been open ``seconds`` and is in a BZPOPMIN: the web's
    receive, through that many waits on one connection (the read timeout drops its connection)."""
    return any(entry.get("cmd") == "bzpopmin" and int(entry.get("age", 0)) >= seconds
               for entry in client.client_list())


@pytest.mark.system  # a web process of its own, from outside
def test_idle_sockets_stay_open_through_the_layers_blocking_waits(transactional_db: Any, make_user: Any,
                                                                   stack_env: dict[str, str]) -> None:
    from websockets.asyncio.client import connect

    from tests.conftest import stored_run

    user = make_user("idle")
    run = stored_run(user)
    wait_s = get_channel_layer().brpop_timeout
    proc = start_web(dict(stack_env), "uvicorn")
    client = redis.Redis.from_url(settings.REDIS_URL)

    async def main() -> tuple[list[Any], list[dict[str, Any]]]:
        sockets = [await connect(proc.url.replace("http://", "ws://") + "/ws/events/", origin=proc.url,
                                 additional_headers={"Authorization": f"Token {user.auth_token.key}"})
                   for _ in range(SOCKETS)]
        closed = [asyncio.create_task(ws.wait_closed()) for ws in sockets]
        deadline = time.monotonic() + WAITS * wait_s + 30
        # until the web's receive has been through WAITS idle waits on one connection, or a socket closed
        while not any(task.done() for task in closed) and time.monotonic() < deadline:
            if await asyncio.to_thread(_blocked_since, client, WAITS * wait_s + 1):
                break
            await asyncio.sleep(0.2)  # polls the condition
        gone = [ws.close_code for ws, task in zip(sockets, closed, strict=True) if task.done()]
        frames: list[dict[str, Any]] = []
        if not gone:  # and each one still streams: a live event reaches them all
            event = {"run_id": str(run.pk), "seq": 1, "type": "workflow_started", "node_id": None, "data": {}}
            await get_channel_layer().group_send(f"user.{user.pk}", {"type": "run.event", "event": event})
            frames = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for ws in sockets]
        for ws in sockets:
            await ws.close()
        return gone, frames

    try:
        gone, frames = asyncio.run(main())
    finally:
        channel_layers.backends.clear()
        proc.stop()
    assert not gone, f"{len(gone)} of {SOCKETS} idle sockets were closed by the server (codes {gone})"
    assert [frame["seq"] for frame in frames] == [1] * SOCKETS, frames


def test_a_cancelled_receive_ends_cancelled(transactional_db: Any) -> None:
    """A receive cancelled at each point of its first commands (connecting, the cleanup script, the
    wait) ends cancelled, within one blocking wait, never reading on nor ending in a Redis error.
    The layer's wait is shortened to 1 s here only to keep the cancels that lose the race cheap."""
    offsets = range(40)  # event-loop turns before the cancel: sweeps the sends of a receive's start

    async def trial(offset: int) -> tuple[str, float]:
        layer = get_channel_layer()
        layer.brpop_timeout = 1
        channel = await layer.new_channel()
        task = asyncio.create_task(layer.receive(channel))
        for _ in range(offset):
            await asyncio.sleep(0)
        task.cancel()
        started = time.monotonic()
        done, _ = await asyncio.wait({task}, timeout=layer.brpop_timeout + 12)  # past any read timeout
        took = time.monotonic() - started
        outcome = ("still receiving" if not done else "cancelled" if task.cancelled()
                   else repr(task.exception()))
        for _ in range(10):  # a receive reading on: cancel it again (that may be dropped too) before the next
            if task.done():
                break
            task.cancel()
            await asyncio.wait({task}, timeout=2)
        return outcome, took

    async def main() -> list[tuple[int, str, float]]:
        outcomes = []
        for offset in offsets:
            outcome, took = await trial(offset)
            outcomes.append((offset, outcome, round(took, 2)))
            if outcome != "cancelled":
                break
        return outcomes

    try:
        outcomes = asyncio.run(main())
    finally:
        channel_layers.backends.clear()
    wrong = [entry for entry in outcomes if entry[1] != "cancelled"]
    assert not wrong, f"cancelled receives that did not end cancelled (offset, outcome, seconds): {wrong}"
