"""Fault-injection switches for the durability tests, read from Redis so every process of a test
stack sees them. Inert unless ``AOB_TEST_HOOKS`` is set in the environment."""

from __future__ import annotations

import os
from functools import cache

ENABLED = os.environ.get("AOB_TEST_HOOKS") == "1"


@cache
def _redis():  # type: ignore[no-untyped-def]
    import redis
    from django.conf import settings

    return redis.Redis.from_url(settings.REDIS_URL)


def drop_publish(run_id: str, node_id: str) -> bool:
    """Drop the first after-commit publish of a node id the test marked (tests use unique ids)."""
    if not ENABLED:
        return False
    key = f"aob:test:drop_publish:{node_id}"
    return bool(_redis().delete(key))


def sweeper_paused() -> bool:
    return ENABLED and bool(_redis().exists("aob:test:sweeper_paused"))


def poison_decision(node_id: str) -> None:
    """Make every decision about a node id the test marked raise, as a bug in the engine would."""
    if ENABLED and _redis().exists(f"aob:test:poison_decision:{node_id}"):
        raise RuntimeError(f"poisoned decision for {node_id} (test hook)")
