"""People patch live runs through the API: the patch takes effect at the coordinator's next decision,
concurrent patches serialize, and every refusal is a 4xx naming the rule, with nothing stored."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from django.db import connection

from tests.agents.flows import WAITING, add_after, agent, edge, finish, http, node, start
from tests.api.factories import assert_error
from tests.conftest import client_for, stored_run, wait_for_run
from tests.support.races import together
from workflows.definition.gates import nodes_by_id
from workflows.models import Artifact, Event, NodeRun, PatchRefusal, Run, RunPatch
from workflows.services.patches import run_patch_propose


def running(run_id: str, node_id: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not NodeRun.objects.filter(run_id=run_id, node_id=node_id, status="running").exists():
        assert time.monotonic() < deadline, f"{node_id} never started"
        time.sleep(0.02)


def test_a_persons_patch_to_a_running_run_takes_effect_at_the_next_completion(engine, api, remote):
    run_id = start(api, [http("slow", f"{remote.base}/sleep/1.5")])
    running(run_id, "slow")

    response = api.post(f"/api/v1/runs/{run_id}/patches", {
        "operations": add_after("slow", http("after", f"{remote.base}/echo")), "description": "then echo"},
        format="json")

    assert response.status_code == 201, response.json()
    body = response.json()
    current = Run.objects.get(pk=run_id).current_artifact_id
    assert {k: body[k] for k in ("run_id", "seq", "op_count", "status", "artifact_id")} == {
        "run_id": run_id, "seq": 1, "op_count": 2, "status": "applied", "artifact_id": current}
    assert node(run_id, "slow").status == "running" and not NodeRun.objects.filter(run_id=run_id,
                                                                                   node_id="after").exists()
    run = finish(run_id)
    assert run.status == "completed", run.error
    slow, after = node(run, "slow"), node(run, "after")
    assert after.status == "completed" and after.started_at >= slow.finished_at
    assert len(remote.hits("/echo")) == 1
    kinds = list(Event.objects.filter(run=run, type__in=["patch_applied", "node_completed"])
                 .order_by("seq").values_list("type", "node_id"))
    assert kinds == [("patch_applied", ""), ("node_completed", "slow"), ("node_completed", "after")]
    listed = api.get(f"/api/v1/runs/{run_id}/patches").json()["results"]
    assert [(p["seq"], p["description"]) for p in listed] == [(1, "then echo")]
    one = api.get(f"/api/v1/runs/{run_id}/patches/1").json()
    assert one["operations"] == add_after("slow", http("after", f"{remote.base}/echo"))
    assert api.get(f"/api/v1/runs/{run_id}/patches/2").status_code == 404


def test_two_concurrent_patches_both_apply_with_distinct_seqs(engine, api, user, remote):
    run_id = start(api, [http("slow", f"{remote.base}/sleep/1.5")])
    running(run_id, "slow")
    barrier = threading.Barrier(2)
    answers: dict[str, Any] = {}

    def propose(node_id: str) -> None:
        try:
            ops = add_after("slow", http(node_id, f"{remote.base}/echo?from={node_id}"))
            barrier.wait()
            answers[node_id] = client_for(user).post(f"/api/v1/runs/{run_id}/patches", {"operations": ops},
                                                     format="json")
        finally:
            connection.close()

    threads = [threading.Thread(target=propose, args=(n,)) for n in ("left", "right")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)

    assert sorted(r.status_code for r in answers.values()) == [201, 201], {k: r.content for k, r in answers.items()}
    assert sorted(r.json()["seq"] for r in answers.values()) == [1, 2]
    run = finish(run_id)
    assert run.status == "completed", run.error
    assert node(run, "left").status == node(run, "right").status == "completed"
    assert RunPatch.objects.get(run=run, seq=2).after_artifact_id == run.current_artifact_id


def test_patch_refusals_are_4xx_naming_the_rule_and_store_nothing(engine, api, make_user, remote):
    review = {"id": "review", "type": "hitl", "config": {"message": "go on?"}}
    run_id = start(api, [http("a", f"{remote.base}/echo"), review, http("c", f"{remote.base}/echo")],
                   [edge("a", "review"), edge("review", "c")], metadata={"patch_policy": "deny"})
    run = wait_for_run(run_id, statuses=WAITING)
    assert run.status == "waiting_for_approval", (run.status, run.error)
    url = f"/api/v1/runs/{run_id}/patches"

    def refused(operations: list[dict[str, Any]], rule: str, error: str = "patch_rejected") -> dict[str, Any]:
        response = api.post(url, {"operations": operations}, format="json")
        assert response.status_code == 400, (rule, response.json())
        body = response.json()
        assert (body["error"], body["details"]["rule"]) == (error, rule), body
        return body

    dangling = refused([{"op": "add", "path": "/edges/-", "value": edge("c", "ghost")}], "edge_node_exists")
    assert "ghost" in dangling["message"]
    refused([{"op": "frobnicate", "path": "/nodes"}], "rfc6902", error="invalid_patch")
    refused([{"op": "remove", "path": "/nodes/0"}], "history_immutable")  # a completed
    refused([{"op": "replace", "path": "/nodes/0/config/url", "value": f"{remote.base}/echo?x=1"}],
            "history_immutable")
    refused([{"op": "replace", "path": "/nodes/1/config/message", "value": "changed"}], "history_immutable")
    refused([{"op": "remove", "path": "/edges/0"}], "history_immutable")  # review's incoming edge
    refused([{"op": "add", "path": "/edges/-", "value": edge("c", "a")}], "history_immutable")
    refused([{"op": "replace", "path": "/nodes/2/type", "value": "transform"}], "type_immutable")
    for blocked, reason in (("http://169.254.169.254/latest/meta-data", "cloud-metadata"),
                            ("http://10.0.0.7/", "private"), ("http://localhost/", "blocked-name")):
        body = refused(add_after("c", http("leak", blocked)), "ssrf")
        assert "leak" in body["message"] and (body["details"]["reason"], body["details"]["url"]) == (reason, blocked)
    assert not RunPatch.objects.filter(run_id=run_id).exists()
    assert Run.objects.get(pk=run_id).current_artifact_id == run.base_artifact_id

    assert api.post(f"/api/v1/runs/{uuid.uuid4()}/patches", {"operations": []}, format="json").status_code == 404
    intruder = client_for(make_user("mallory"))
    ok = add_after("c", http("d", f"{remote.base}/echo"))
    assert intruder.post(url, {"operations": ok}, format="json").status_code == 404
    assert intruder.get(url).status_code == 404

    applied = api.post(url, {"operations": ok}, format="json")  # deny binds agents, not the run's owner
    assert applied.status_code == 201 and applied.json()["status"] == "applied", applied.json()

    assert api.post(f"/api/v1/runs/{run_id}/cancel").status_code == 200
    finished = api.post(url, {"operations": add_after("d", http("e", f"{remote.base}/echo"))}, format="json")
    assert finished.status_code == 409 and finished.json()["error"] == "run_finished", finished.json()
    assert RunPatch.objects.filter(run_id=run_id).count() == 1


def test_a_retried_patch_with_its_key_is_applied_once(engine, api, remote):
    """A client that lost the answer sends the patch again: indexes name other members the second
    time (``remove /nodes/1`` after the first removed it). With the same ``Idempotency-Key`` the
    retry answers the first patch (200); the key on another body is refused naming it."""
    run_id = start(api, [http("slow", f"{remote.base}/sleep/1.5"), http("b", f"{remote.base}/echo"),
                         http("c", f"{remote.base}/echo")], [edge("slow", "b"), edge("slow", "c")])
    running(run_id, "slow")
    key = str(uuid.uuid4())
    body = {"operations": [{"op": "remove", "path": "/edges/0"}, {"op": "remove", "path": "/nodes/1"}],
            "description": "drop b"}

    def post(payload: dict[str, Any], **headers: str) -> Any:
        return api.post(f"/api/v1/runs/{run_id}/patches", payload, format="json", **headers)

    def nodes_now() -> list[str]:
        run = Run.objects.select_related("current_artifact").get(pk=run_id)
        return [n["id"] for n in run.current_artifact.content["nodes"]]

    first = post(body, HTTP_IDEMPOTENCY_KEY=key)
    again = post(body, HTTP_IDEMPOTENCY_KEY=key)
    other = post({**body, "description": "drop c"}, HTTP_IDEMPOTENCY_KEY=key)

    assert first.status_code == 201, first.json()
    assert (again.status_code, again.json()) == (200, first.json())
    assert other.status_code == 422 and other.json()["error"] == "idempotency_key_reused", other.json()
    assert other.json()["details"]["field"] == "Idempotency-Key"
    assert RunPatch.objects.filter(run_id=run_id).count() == 1 and nodes_now() == ["slow", "c"]
    # without a key the same body is a second patch, and takes c: what the key protects against
    assert post(body).status_code == 201 and nodes_now() == ["slow"]
    assert finish(run_id).status == "completed"


def test_a_retry_that_waited_for_its_first_gets_it_not_a_refusal(engine, api, user, remote):
    """Two sends of one keyed patch at once: the second waits on the run's lock, and was judged
    against the definition the first had patched (``remove /nodes/1`` again: another node, or
    out of range), answering a refusal, where it is the same request."""
    run_id = start(api, [http("slow", f"{remote.base}/sleep/1.5"), http("b", f"{remote.base}/echo")],
                     [edge("slow", "b")])
    running(run_id, "slow")
    key = str(uuid.uuid4())
    body = {"operations": [{"op": "remove", "path": "/edges/0"}, {"op": "remove", "path": "/nodes/1"}]}
    answers = together(2, lambda _: client_for(user).post(f"/api/v1/runs/{run_id}/patches", body, format="json",
                                                          HTTP_IDEMPOTENCY_KEY=key))

    assert sorted(a.status_code for a in answers) == [200, 201], [a.json() for a in answers]
    assert answers[0].json() == answers[1].json()
    assert RunPatch.objects.filter(run_id=run_id).count() == 1
    assert not PatchRefusal.objects.filter(run_id=run_id).exists()


@pytest.mark.django_db
def test_a_persons_patch_written_against_a_definition_an_agent_reordered_since_is_a_409(api, user):
    """JSON Pointers name array positions, and an agent may reorder ``/nodes`` at will (the order
    carries no meaning). The owner bounds ``pay`` (``/nodes/2`` as they read it) while an agent's
    move commits first: the owner's patch landed on ``audit`` and answered 201, ``pay`` keeping
    its five attempts. Sent with what it was written against (``base_artifact_id``, the run's
    ``current_artifact_id`` as read), it is refused naming the current definition, and stores
    nothing; written again against that one, it applies where it meant to. Without a base the
    operations apply to whatever is current, as they always did (old clients): /nodes/2 is then
    ``audit``."""
    run = stored_run(user, {
        "nodes": [agent("plan"), {"id": "audit", "type": "transform", "config": {"expression": "'logged'"}},
                  {"id": "pay", "type": "http", "retry": {"max_attempts": 5},
                   "config": {"url": "https://api.example.com/pay", "method": "POST"}}],
        "edges": [edge("plan", "audit"), edge("audit", "pay")]})
    NodeRun.objects.create(run=run, node_id="plan", node_type="agent", status="running", iteration=0, attempts=1)
    Run.objects.filter(pk=run.pk).update(status="running")
    url = f"/api/v1/runs/{run.pk}/patches"
    read = api.get(f"/api/v1/runs/{run.pk}").json()["current_artifact_id"]  # pay is /nodes/2 in it
    bound = {"op": "add", "path": "/nodes/2/retry", "value": {"max_attempts": 1}}

    moved = run_patch_propose(run=Run.objects.get(pk=run.pk), from_agent=True, node_id="plan",
                              operations=[{"op": "move", "from": "/nodes/2", "path": "/nodes/1"}])
    stale = api.post(url, {"operations": [bound], "description": "pay: one attempt only", "base_artifact_id": read},
                     format="json")

    def retries() -> dict[str, Any]:
        nodes = nodes_by_id(Artifact.objects.get(pk=Run.objects.get(pk=run.pk).current_artifact_id).content)
        return {node_id: nodes[node_id].get("retry") for node_id in ("audit", "pay")}

    body = assert_error(stale, 409, "stale_base")
    assert body["details"] == {"field": "base_artifact_id", "rule": "stale_base", "base_artifact_id": read,
                               "current_artifact_id": moved.after_artifact_id}
    assert RunPatch.objects.filter(run=run).count() == 1 and retries() == {"audit": None, "pay": {"max_attempts": 5}}

    again = api.post(url, {"operations": [{**bound, "path": "/nodes/1/retry"}],
                           "base_artifact_id": api.get(f"/api/v1/runs/{run.pk}").json()["current_artifact_id"]},
                     format="json")
    assert again.status_code == 201 and again.json()["before_artifact_id"] == moved.after_artifact_id, again.json()
    assert retries() == {"audit": None, "pay": {"max_attempts": 1}}

    unbound = api.post(url, {"operations": [{**bound, "value": {"max_attempts": 2}}]}, format="json")
    assert unbound.status_code == 201, unbound.json()
    assert retries() == {"audit": {"max_attempts": 2}, "pay": {"max_attempts": 1}}

    for wrong in (read.upper(), read + "\n", "sha256:", 7):
        refused = assert_error(api.post(url, {"operations": [], "base_artifact_id": wrong}, format="json"), 400)
        assert refused["details"]["field"] == "base_artifact_id", refused
