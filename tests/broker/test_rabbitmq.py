"""A lean subset of the engine on RabbitMQ (AOB_BROKER_URL=amqp://…): the web app and a worker as
`make up` runs them, both on a private virtual host, with quorum queues and publisher confirms. A
chain with a branch and an HTTP call, a retry after a backoff (RabbitMQ's delayed delivery), an
approval that waits and resumes, and a cancel. Skipped, saying so, where RabbitMQ is not installed."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis
from django.conf import settings

from tests.conftest import wait_for_run
from tests.engine.flow import wait_until
from tests.support import rabbitmq, stack
from workflows.models import NodeRun

# a stack of its own on another broker: the whole system from outside (make test-system)
pytestmark = [pytest.mark.system,
              pytest.mark.skipif(not rabbitmq.installed(),
                                 reason="RabbitMQ is not installed (no rabbitmq-server / rabbitmqctl): "
                                        "the AMQP broker tests need it (apt-get install rabbitmq-server)")]


@dataclass
class AmqpStack:
    url: str
    vhost: str
    worker: stack.Proc
    web: stack.Proc


@pytest.fixture(scope="module")
def amqp(stack_env: dict[str, str]) -> Iterator[AmqpStack]:
    rabbitmq.ensure_running()
    vhost = rabbitmq.private_vhost()
    env = {**stack_env, "AOB_BROKER_URL": f"amqp://guest:guest@{rabbitmq.HOST}:{rabbitmq.PORT}/{vhost}"}
    worker = stack.start_worker(env, "amqp", concurrency=2)
    web = stack.start_web(env, "amqp-web")
    yield AmqpStack(f"{web.url}/api/v1", vhost, worker, web)
    web.stop()
    worker.stop()
    rabbitmq.drop_vhost(vhost)


@pytest.fixture
def client(amqp: AmqpStack, transactional_db: Any, make_user: Any) -> Iterator[httpx.Client]:
    user = make_user("rabbit")
    with httpx.Client(base_url=amqp.url, headers={"Authorization": f"Token {user.auth_token.key}"},
                      timeout=30) as http:
        yield http


def run(client: httpx.Client, definition: dict[str, Any], inputs: dict[str, Any] | None = None) -> str:
    response = client.post("/runs", json={"workflow": definition, "inputs": inputs or {}})
    assert response.status_code == 201, response.text
    return response.json()["run_id"]


def test_the_queues_are_quorum_queues_and_publishes_are_confirmed(amqp: AmqpStack, stack_env: dict[str, str]) -> None:
    types = rabbitmq.queue_types(amqp.vhost)
    ours = {name: kind for name, kind in types.items() if name.startswith("wf.")}
    assert set(ours) >= {"wf.coordinator", "wf.tasks.http", "wf.tasks.hitl", "wf.maintenance", "wf.notify"}
    assert set(ours.values()) == {"quorum"}
    code = ("from aob_project.celery import app; c = app.connection_for_write(); c.connect(); "
            "print(c.transport_options.get('confirm_publish'), c.connection.confirm_publish)")
    env = {**stack_env, "AOB_BROKER_URL": f"amqp://guest:guest@{rabbitmq.HOST}:{rabbitmq.PORT}/{amqp.vhost}"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,
                          cwd=stack.ROOT)
    assert done.stdout.split() == ["True", "True"], done.stderr[-2000:]


def test_a_worker_of_several_quorum_queues_says_its_prefetch_is_per_queue(amqp: AmqpStack) -> None:
    """No global QoS on quorum queues: a worker of several queues holds messages of the others while
    its processes are busy (docs/OPERATIONS.md, RabbitMQ). It says so when it starts."""
    log = amqp.worker.log.read_text(errors="replace")
    assert "worker.prefetch_per_queue" in log and "wf.coordinator" in log.split("worker.prefetch_per_queue", 1)[1]


def test_a_branching_chain_with_an_http_call_runs_on_rabbitmq(amqp: AmqpStack, client: httpx.Client,
                                                               remote: Any) -> None:
    definition = {"nodes": [
        {"id": "start", "type": "transform", "config": {"expression": "{'n': inputs.n}"}},
        {"id": "call", "type": "http", "config": {"url": f"{remote.base}/echo/amqp", "method": "POST",
                                                   "payload": {"n": "$nodes.start.n"}}},
        {"id": "big", "type": "transform", "config": {"expression": "'big'"}},
        {"id": "small", "type": "transform", "config": {"expression": "'small'"}},
        {"id": "end", "type": "transform", "config": {"expression": "'done'"}}],
        "edges": [{"from": "start", "to": "call"}, {"from": "call", "to": "big", "condition": "$.body.json.n > 5"},
                  {"from": "call", "to": "small"}, {"from": "big", "to": "end"}, {"from": "small", "to": "end"}]}

    run_id = run(client, definition, {"n": 9})

    result = wait_for_run(run_id)
    assert result.status == "completed", result.error
    states = {nr.node_id: nr.status for nr in NodeRun.objects.filter(run_id=run_id)}
    assert states == {"start": "completed", "call": "completed", "big": "completed", "small": "skipped",
                      "end": "completed"}
    assert json.loads(remote.hits("/echo/amqp")[0]["body"]) == {"n": 9}
    assert run_id in amqp.worker.log.read_text(errors="replace")  # the RabbitMQ worker did the work


@pytest.mark.parametrize("backoff_ms", [500, 1500])
def test_a_retry_waits_its_backoff_in_rabbitmq(amqp: AmqpStack, client: httpx.Client, remote: Any,
                                               backoff_ms: int) -> None:
    """RabbitMQ's delayed delivery counts whole seconds and refuses a wait under one: a backoff of
    500 ms waits a second (``dispatch.broker_countdown``), where it was not published at all."""
    key = f"amqp-{backoff_ms}-{time.monotonic_ns()}"
    definition = {"nodes": [{"id": "call", "type": "http", "config": {"url": f"{remote.base}/flaky/{key}/1"},
                             "retry": {"max_attempts": 3, "backoff_ms": backoff_ms}}], "edges": []}

    run_id = run(client, definition)

    assert wait_for_run(run_id).status == "completed"
    node = NodeRun.objects.get(run_id=run_id, node_id="call")
    assert node.attempts == 2
    first, second = (h["at"] for h in remote.hits(f"/flaky/{key}"))
    assert second - first >= backoff_ms / 1000 - 0.1


def test_a_failed_decision_is_asked_again_after_its_backoff_in_rabbitmq(amqp: AmqpStack, client: httpx.Client
                                                                        ) -> None:
    """A failed decision is asked again 0.5 s after the first failure (``poison.record_failure``):
    a second on RabbitMQ, until the run fails DecisionFailed."""
    node = f"poisoned{time.monotonic_ns()}"
    hooks = redis.Redis.from_url(settings.REDIS_URL)
    hooks.set(f"aob:test:poison_decision:{node}", 1, ex=120)
    try:
        run_id = run(client, {"nodes": [{"id": node, "type": "transform", "config": {"expression": "1"}}],
                              "edges": []})

        result = wait_for_run(run_id)
        assert result.status == "failed" and (result.error or {}).get("error_type") == "DecisionFailed", result.error
    finally:
        hooks.delete(f"aob:test:poison_decision:{node}")


def test_an_approval_waits_and_resumes_and_a_cancel_stops_a_run_on_rabbitmq(amqp: AmqpStack, client: httpx.Client
                                                                            ) -> None:
    gated = {"nodes": [{"id": "gate", "type": "hitl", "config": {"message": "ok?"}},
                       {"id": "after", "type": "transform", "config": {"expression": "'approved'"}}],
             "edges": [{"from": "gate", "to": "after", "condition": "$.approved == true"}]}
    approved, cancelled = run(client, gated), run(client, gated)
    for run_id in (approved, cancelled):
        wait_until(lambda r=run_id: NodeRun.objects.filter(run_id=r, node_id="gate", status="waiting").exists(),
                   what="the gate waiting")

    pending = client.get("/approvals", params={"run": approved, "status": "pending"}).json()["results"][0]
    assert client.post(f"/approvals/{pending['id']}/decide", json={"approve": True}).status_code == 200
    assert client.post(f"/runs/{cancelled}/cancel").status_code == 200

    assert wait_for_run(approved).status == "completed"
    assert NodeRun.objects.get(run_id=approved, node_id="after").output == "approved"
    assert wait_for_run(cancelled).status == "cancelled"
