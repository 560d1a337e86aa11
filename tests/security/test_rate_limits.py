"""Rate limits: sliding windows per user and per workflow tier, a global write limit, 429 bodies
with Retry-After, rejected calls create nothing, and Redis down fails run creation closed."""

from __future__ import annotations

import time
import uuid
from types import SimpleNamespace

import pytest

from tests.conftest import client_for
from workflows import ratelimit
from workflows.models import Run

pytestmark = [pytest.mark.ratelimit, pytest.mark.django_db]


def workflow(agents: int) -> dict:
    nodes = [{"id": "t", "type": "transform", "config": {"expression": "1"}}]
    nodes += [{"id": f"a{i}", "type": "agent", "config": {"task": "think"}} for i in range(agents)]
    return {"nodes": nodes, "edges": []}


def start(api, agents: int, **extra):
    return api.post("/api/v1/runs", {"workflow": workflow(agents)}, format="json", **extra)


def test_standard_tier_allows_20_then_429_with_retry_after(api, user):
    for _ in range(20):
        assert start(api, 1).status_code == 201
    response = start(api, 2)
    assert response.status_code == 429
    body = response.json()
    assert body["error"] == "rate_limit_exceeded"
    assert body["details"]["tier"] == "standard"
    assert body["details"]["limit"] == 20
    assert body["details"]["window"] == "60 seconds"
    assert body["details"]["current_count"] == 20
    assert 1 <= body["details"]["retry_after_seconds"] <= 60
    assert response["Retry-After"] == str(body["details"]["retry_after_seconds"])
    assert Run.objects.filter(owner=user).count() == 20  # the rejected call created nothing


def test_heavy_after_5_and_simple_not_blocked_by_heavy(api):
    for _ in range(5):
        assert start(api, 3).status_code == 201
    heavy = start(api, 4)
    assert heavy.status_code == 429 and heavy.json()["details"]["tier"] == "heavy"
    assert start(api, 0).status_code == 201
    assert start(api, 1).status_code == 201


def test_per_user_limit_at_51_and_other_users_unaffected(api, make_user):
    for _ in range(50):
        assert start(api, 0).status_code == 201
    response = start(api, 0)
    assert response.status_code == 429
    assert response.json()["error"] == "user_rate_limit_exceeded"
    assert response.json()["details"]["limit"] == 50
    assert "tier" not in response.json()["details"]
    assert start(client_for(make_user("bob")), 0).status_code == 201


def test_reads_never_limited(api):
    assert start(api, 0).status_code == 201
    for _ in range(200):
        assert api.get("/api/v1/runs").status_code == 200
    assert api.get("/api/v1/health").status_code in (200, 503)


def test_global_limit_on_writes_only(api, settings):
    settings.AOB_RATE_GLOBAL_PER_MIN = 5
    for i in range(5):
        saved = api.post("/api/v1/workflows", {"tag_name": f"w{i}", "workflow": workflow(0)}, format="json")
        assert saved.status_code == 201
    blocked = api.post("/api/v1/workflows", {"tag_name": "w5", "workflow": workflow(0)}, format="json")
    assert blocked.status_code == 429
    assert blocked.json()["error"] == "global_rate_limit_exceeded"
    assert blocked["Retry-After"]
    assert api.get("/api/v1/workflows").status_code == 200
    # validating changes nothing, so the editor's validate-as-you-type does not eat the write limit
    assert api.post("/api/v1/workflows/validate", {"workflow": workflow(0)}, format="json").status_code == 200


def test_redis_unreachable_fails_run_creation_closed_with_503(api, user, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = start(api, 0)
    assert response.status_code == 503
    assert response.json()["error"] == "rate_limiter_unavailable"
    assert not Run.objects.filter(owner=user).exists()


def execute(api, tag: str = "one", **extra):
    return api.post(f"/api/v1/workflows/{tag}/execute", {"inputs": {}}, format="json", **extra)


def test_run_starts_spend_the_global_write_limit_in_the_run_limits_call(api, user, settings):
    """execute and POST /runs check the global write limit in run_start's one Redis call; it is the
    same budget the other writes spend, and a start over it is refused naming it, creating nothing."""
    settings.AOB_RATE_GLOBAL_PER_MIN = 4
    assert api.post("/api/v1/workflows", {"tag_name": "one", "workflow": workflow(0)},
                    format="json").status_code == 201
    assert execute(api).status_code == 201
    assert start(api, 0).status_code == 201
    assert execute(api).status_code == 201
    for refused in (execute(api), start(api, 0),
                    api.post("/api/v1/workflows", {"tag_name": "two", "workflow": workflow(0)}, format="json")):
        assert refused.status_code == 429
        body = refused.json()
        assert body["error"] == "global_rate_limit_exceeded"
        assert body["details"]["limit"] == 4 and body["details"]["current_count"] == 4
        assert refused["Retry-After"] == str(body["details"]["retry_after_seconds"])
    assert Run.objects.filter(owner=user).count() == 3


def test_the_global_write_limit_is_named_first_when_a_run_limit_is_also_full(api, settings):
    settings.AOB_RATE_GLOBAL_PER_MIN = 2
    settings.AOB_RATE_USER_RUNS_PER_MIN = 2
    assert start(api, 0).status_code == 201 and start(api, 0).status_code == 201
    assert start(api, 0).json()["error"] == "global_rate_limit_exceeded"


def test_a_start_refused_by_a_run_limit_or_answered_from_its_key_spends_no_global_write(api, settings):
    """A rejected call is never counted (one script checks every layer before recording any), and
    a start that changes nothing (bad input, an idempotent repeat) does not spend the write budget."""
    settings.AOB_RATE_GLOBAL_PER_MIN = 3
    settings.AOB_RATE_USER_RUNS_PER_MIN = 1
    assert start(api, 0).status_code == 201
    assert start(api, 0).json()["error"] == "user_rate_limit_exceeded"
    assert api.post("/api/v1/runs", {"workflow": {"nodes": []}}, format="json").status_code == 400
    settings.AOB_RATE_USER_RUNS_PER_MIN = 50
    first = start(api, 0, HTTP_IDEMPOTENCY_KEY="k1")
    assert first.status_code == 201
    repeat = start(api, 0, HTTP_IDEMPOTENCY_KEY="k1")
    assert repeat.status_code == 200 and repeat.json() == first.json()
    # two writes spent (the two runs started): one more fits, the next does not
    assert api.post("/api/v1/workflows", {"tag_name": "w", "workflow": workflow(0)}, format="json").status_code == 201
    assert start(api, 0).json()["error"] == "global_rate_limit_exceeded"


@pytest.mark.parametrize("skew_s", [-120, 120])
def test_one_window_whatever_the_clocks_of_the_hosts_that_count_in_it(monkeypatch, skew_s):
    """Web processes (and the workers that start scheduled runs) count in one window. Calls counted
    on a host whose clock is two minutes behind were, before, out of the window at once for a host
    on time (twice the limit passed); calls counted on one ahead held the window two minutes past
    its length (``retry in 180 s`` for a one-minute window)."""
    layers = [ratelimit.Layer(f"aob:rl:test:skew:{uuid.uuid4().hex}", 2, "user_rate_limit_exceeded", "calls")]
    real = time.time
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(time=lambda: real() + skew_s))  # the skewed host
    ratelimit.check(layers)
    ratelimit.check(layers)
    monkeypatch.setattr(ratelimit, "time", time)  # a host on time
    with pytest.raises(ratelimit.RateLimited) as refused:
        ratelimit.check(layers)
    assert refused.value.extra["retry_after_seconds"] <= 60
