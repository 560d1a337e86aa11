"""A rate limit's 429 is waited out: the server refuses past a limit before it does anything, so the
CLI sends the request again after the wait it names (``Retry-After``), saying so on stderr. Before,
only ``aob run delete`` waited; a script's loop of ``aob run start`` failed midway at the limit."""

from __future__ import annotations

from typing import Any

import httpx
import redis
from django.conf import settings

from tests.support import stack
from workflows.models import Run

WINDOW_MS = 60_000  # workflows.ratelimit.WINDOW_S
FREES_IN_MS = 4_000  # the window's calls were made this long before it ends: the refusal names about 4 s


def _window_full(user_id: int, limit: int) -> None:
    """``limit`` writes of the user's, made by Redis's clock so long ago that the window frees soon."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    seconds, micros = client.time()
    made = seconds * 1000 + micros // 1000 - (WINDOW_MS - FREES_IN_MS)
    key = f"aob:rl:user:{user_id}:writes"
    client.delete(key)
    client.zadd(key, {f"{made}-earlier-{i}": made for i in range(limit)})
    client.pexpire(key, WINDOW_MS)


def test_a_write_past_the_rate_limit_waits_the_time_the_refusal_names(stack_env: dict[str, str], aob: Any,
                                                                      alice: Any) -> None:
    from tests.api.test_lists import a_run

    proc = stack.start_web({**stack_env, "AOB_RATE_USER_WRITES_PER_MIN": "2"}, "cli-limited")
    try:
        run = a_run(alice, status="failed")
        _window_full(alice.pk, 2)
        refused = httpx.post(f"{proc.url}/api/v1/runs/{run.pk}/delete",
                             headers={"Authorization": f"Token {alice.auth_token.key}"})

        deleted = aob("run", "delete", str(run.pk), "--yes", token=alice.auth_token.key, api_url=proc.url)
    finally:
        proc.stop()

    assert refused.status_code == 429 and refused.json()["error"] == "user_rate_limit_exceeded"  # unrecorded
    assert deleted.code == 0, deleted.err
    assert "state-changing requests per user: at most 2 per 60 seconds" in deleted.err
    assert [line for line in deleted.err.splitlines() if "waiting" in line][0].endswith(" s"), deleted.err
    assert deleted.out.strip() == f"deleted run {run.pk}"
    assert not Run.objects.filter(pk=run.pk).exists()
