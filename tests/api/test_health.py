"""``GET /api/v1/health``: the database, Redis and the Celery broker, each checked for real."""

from __future__ import annotations

from rest_framework.test import APIClient

from tests.api.factories import API


def test_health_reports_every_part_ok_without_credentials(db, settings):
    settings.AOB_SWEEPER_ENABLED = False  # no workers here: tests/engine/test_unserved.py judges the sweeper with them
    response = APIClient().get(f"{API}/health")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    # the service queues: as the last checks found them (a session's beat may check meanwhile)
    queues = body["checks"].pop("queues")
    assert queues == "ok" or queues.startswith("unknown: not checked lately"), queues
    assert body == {"status": "ok", "checks": {"db": "ok", "redis": "ok", "broker": "ok", "sweeper": "disabled"}}


def test_health_ignores_a_bad_token(db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")

    assert client.get(f"{API}/health").status_code == 200


def test_health_reports_a_redis_that_is_down_as_503(db, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"

    response = APIClient().get(f"{API}/health")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["db"] == "ok"
    assert body["checks"]["redis"].startswith("error: ")
    assert body["checks"]["sweeper"].startswith("unknown: ")
