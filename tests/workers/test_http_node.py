"""The ``http`` node on real workers against the loopback remote (allowlisted as 127.0.0.1:<port> only).

What a workflow author sees: what arrives at the remote, the node's output, which statuses and
transport errors fail the node (and whether they are retried), and SSRF refusals at node level.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import wait_for_run
from tests.support.remote import RemoteServer
from workflows.models import Event, NodeRun, Run

OUTPUT_KEYS = {"status", "status_code", "headers", "body", "duration_ms", "url", "method"}


def http(node_id: str, url: str, **config: Any) -> dict[str, Any]:
    node: dict[str, Any] = {"id": node_id, "type": "http", "config": {"url": url}}
    if "retry" in config:
        node["retry"] = config.pop("retry")
    node["config"].update(config)
    return node


def submit(api: Any, nodes: list[dict[str, Any]], edges: list[dict[str, str]] | None = None,
           inputs: dict[str, Any] | None = None) -> str:
    response = api.post("/api/v1/runs", {"workflow": {"nodes": nodes, "edges": edges or []},
                                         "inputs": inputs or {}}, format="json")
    assert response.status_code == 201, response.json()
    return str(response.json()["run_id"])


def run_to_end(api: Any, nodes: list[dict[str, Any]], **kwargs: Any) -> tuple[Run, dict[str, NodeRun]]:
    run = wait_for_run(submit(api, nodes, **kwargs))
    return run, {nr.node_id: nr for nr in NodeRun.objects.filter(run=run)}


def event_types(run: Run) -> list[str]:
    return list(Event.objects.filter(run=run).order_by("seq").values_list("type", flat=True))


def header(record: dict[str, Any], name: str) -> str | None:
    return next((v for k, v in record["headers"].items() if k.lower() == name.lower()), None)


@pytest.fixture(scope="module")
def bystander() -> Iterator[RemoteServer]:
    """A second loopback server on a port the workers' allowlist does not open."""
    server = RemoteServer()
    yield server
    server.close()


# --- what arrives, what comes out ---------------------------------------------------------------


def test_headers_query_and_json_payload_arrive_as_sent_with_references_resolved(engine, api, remote):
    source = {"id": "a", "type": "transform", "config": {"expression": "{'id': 7, 'token': 't-1', 'tags': ['x', 'y']}"}}
    call = http("b", "${$inputs.base}/echo/${$nodes.a.id}", method="POST",
                headers={"X-Token": "$nodes.a.token", "X-Trace": "run-${$inputs.n}", "X-Num": 5},
                query={"id": "$nodes.a.id", "who": "$inputs.who", "q": "a b&c"},
                payload={"id": "$nodes.a.id", "tags": "$nodes.a.tags", "text": "id=${$nodes.a.id}",
                         "nested": {"n": "$inputs.n", "none": None, "flag": True}})
    run, nodes = run_to_end(api, [source, call], edges=[{"from": "a", "to": "b"}],
                            inputs={"base": remote.base, "n": 41, "who": "alice"})
    assert run.status == "completed", nodes["b"].error
    [got] = remote.hits("/echo")
    assert got["method"] == "POST" and got["path"] == "/echo/7"
    assert header(got, "X-Token") == "t-1" and header(got, "X-Trace") == "run-41" and header(got, "X-Num") == "5"
    assert header(got, "Content-Type") == "application/json"
    assert got["query"] == {"id": ["7"], "who": ["alice"], "q": ["a b&c"]}
    assert nodes["b"].output["body"]["json"] == {"id": 7, "tags": ["x", "y"], "text": "id=7",
                                                 "nested": {"n": 41, "none": None, "flag": True}}
    assert nodes["b"].input["payload"]["id"] == 7  # the resolved config is what the node run records


def test_a_reference_naming_nothing_fails_the_node_before_it_sends(engine, api, remote):
    """``$nodes.prepare.amout`` (meant ``amount``) sent ``{"amount": null}`` to the payee and the run
    completed; ``${inputs.url}`` not given failed only as "scheme '' is not allowed". A reference
    naming what a node that ran did not give, or an input not given, fails the node unsent, naming
    the reference and where it is in the config (``references.ReferenceMissing``)."""
    prepare = {"id": "prepare", "type": "transform", "config": {"expression": "{'amount': 5}"}}
    pay = http("pay", "${$inputs.base}/pay", method="POST", payload={"amount": "$nodes.prepare.amout"})
    run, nodes = run_to_end(api, [prepare, pay], edges=[{"from": "prepare", "to": "pay"}],
                            inputs={"base": remote.base})
    assert run.status == "failed" and nodes["pay"].status == NodeRun.Status.FAILED
    error = nodes["pay"].error
    assert {k: error[k] for k in ("error_type", "path", "reference", "rule", "sent")} == {
        "error_type": "ReferenceMissing", "path": "/payload/amount", "reference": "$nodes.prepare.amout",
        "rule": "reference_missing", "sent": False}
    assert "nodes.prepare has no key 'amout' (did you mean 'amount'?)" in error["message"]
    assert nodes["pay"].attempts == 1 and remote.hits("/pay") == []

    run, nodes = run_to_end(api, [http("fetch", "${$inputs.url}")], inputs={})
    assert nodes["fetch"].error["error_type"] == "ReferenceMissing" and nodes["fetch"].error["path"] == "/url"
    assert "inputs has no key 'url'" in nodes["fetch"].error["message"]


def test_a_reference_to_a_node_that_did_not_run_is_still_null(engine, api, remote):
    """A node skipped on a dead path gave nothing: a reference to it is null, as before."""
    start = {"id": "start", "type": "transform", "config": {"expression": "{'go': false}"}}
    maybe = {"id": "maybe", "type": "transform", "config": {"expression": "{'x': 1}"}}
    after = http("after", "${$inputs.base}/after", method="POST", payload={"x": "$nodes.maybe.x"})
    run, nodes = run_to_end(api, [start, maybe, after], inputs={"base": remote.base},
                            edges=[{"from": "start", "to": "maybe", "condition": "$.go"},
                                   {"from": "start", "to": "after"}])
    assert run.status == "completed", nodes["after"].error
    assert nodes["maybe"].status == NodeRun.Status.SKIPPED
    [got] = remote.hits("/after")
    assert json.loads(got["body"]) == {"x": None}


def test_string_payload_is_sent_as_is_and_query_merges_with_the_urls_own(engine, api, remote):
    text = "a=1&b=${$inputs.b} {not json"
    run, nodes = run_to_end(api, [http("s", f"{remote.base}/echo?fixed=1", method="PUT", payload=text,
                                       headers={"Content-Type": "text/plain"}, query={"extra": "2"})],
                            inputs={"b": "two"})
    assert run.status == "completed", nodes["s"].error
    [got] = remote.hits("/echo")
    assert got["body"] == "a=1&b=two {not json"
    assert header(got, "Content-Type") == "text/plain"
    assert got["query"] == {"fixed": ["1"], "extra": ["2"]}


def test_referenced_scalar_payload_is_sent_as_json(engine, api, remote):
    run, nodes = run_to_end(api, [http("p", f"{remote.base}/echo", method="POST", payload="$inputs.n")],
                            inputs={"n": 42})
    assert run.status == "completed", nodes["p"].error
    [got] = remote.hits("/echo")
    assert got["body"] == "42" and header(got, "Content-Type") == "application/json"


def test_output_shape_json_and_text_bodies(engine, api, remote):
    run, nodes = run_to_end(api, [http("j", f"{remote.base}/echo", query={"k": "v"}),
                                  http("t", f"{remote.base}/big/12", method="get")])
    assert run.status == "completed"
    j, t = nodes["j"].output, nodes["t"].output
    assert set(j) == OUTPUT_KEYS and set(t) == OUTPUT_KEYS
    assert j["status"] == "success" and j["status_code"] == 200 and j["method"] == "GET"
    assert j["url"] == f"{remote.base}/echo?k=v"
    assert j["body"]["method"] == "GET" and j["body"]["query"] == {"k": ["v"]}  # parsed JSON
    assert j["headers"]["content-type"] == "application/json"
    assert isinstance(j["duration_ms"], int) and j["duration_ms"] >= 0
    assert t["body"] == "x" * 12 and t["method"] == "GET"  # not JSON: text


def test_head_put_patch_delete(engine, api, remote):
    methods = ["HEAD", "PUT", "PATCH", "DELETE"]
    run, nodes = run_to_end(api, [http(m.lower(), f"{remote.base}/echo/{m}", method=m,
                                       **({} if m == "HEAD" else {"payload": {"m": m}})) for m in methods])
    assert run.status == "completed"
    assert sorted(r["method"] for r in remote.hits("/echo")) == sorted(methods)
    for m in methods:
        out = nodes[m.lower()].output
        assert out["status_code"] == 200 and out["method"] == m
        if m == "HEAD":
            assert out["body"] == "" and int(out["headers"]["content-length"]) > 0
        else:
            assert out["body"]["method"] == m and out["body"]["json"] == {"m": m}


# --- statuses and sizes -------------------------------------------------------------------------


def test_error_statuses_complete_by_default(engine, api, remote):
    run, nodes = run_to_end(api, [http("e500", f"{remote.base}/status/500"),
                                  http("e404", f"{remote.base}/status/404", fail_on_status=False)])
    assert run.status == "completed"
    for name, code in (("e500", 500), ("e404", 404)):
        out = nodes[name].output
        assert (out["status"], out["status_code"], out["body"]) == ("error", code, {"status": code})


def test_fail_on_status_fails_the_node_and_the_run(engine, api, remote):
    run, nodes = run_to_end(api, [http("f", f"{remote.base}/status/404", fail_on_status=True,
                                       retry={"max_attempts": 3, "backoff_ms": 0})])
    assert run.status == "failed"
    f = nodes["f"]
    assert f.status == "failed" and f.attempts == 1  # a 404 is an answer: the same request gets it again
    assert f.error["error_type"] == "HTTPStatusError" and f.error["status_code"] == 404
    assert f.error["transient"] is False and "404" in f.error["message"]
    assert run.error["node_id"] == "f" and run.error["error_type"] == "HTTPStatusError"
    assert event_types(run)[-2:] == ["node_failed", "workflow_failed"]


def test_a_not_now_answer_is_retried_no_sooner_than_its_retry_after(engine, api, remote):
    """A 429 or 503 with ``fail_on_status`` is worth the node's retry (before, it failed the node at
    the first answer, whatever ``retry`` said), and its ``Retry-After`` is waited out even where the
    node's own backoff is shorter."""
    from tests.support.remote import Reply

    remote.script("busy", [Reply(429, {"error": "slow down"}, (("Retry-After", "2"),)),
                           Reply(503, {"error": "down"}), {"ok": True}])
    run, nodes = run_to_end(api, [http("call", f"{remote.base}/seq/busy", method="POST", fail_on_status=True,
                                       retry={"max_attempts": 3, "backoff_ms": 10})])
    assert run.status == "completed", run.error
    assert (nodes["call"].attempts, nodes["call"].output["body"]) == (3, {"ok": True})
    retries = [e.data for e in run.events.filter(type="node_retrying").order_by("seq")]
    assert [r["error"]["status_code"] for r in retries] == [429, 503]
    assert [r["backoff_ms"] for r in retries] == [2000, 20]  # the Retry-After, then the node's own
    assert retries[0]["error"]["retry_after_seconds"] == 2
    sent = [h["at"] for h in remote.hits("/seq/busy")]
    assert sent[1] - sent[0] >= 1.9, sent  # the remote's clock and the workers': this machine's


@pytest.mark.parametrize("status", [500, 503])
@pytest.mark.parametrize(("key_header", "attempts"), [(None, 1), ("Idempotency-Key", 2)])
def test_a_500_to_a_post_is_retried_only_where_a_repeat_is_recognisable(engine, api, remote, key_header, attempts,
                                                                       status):
    """Whether a POST answered 500 (or a bare 503: a proxy's answer when its upstream failed
    mid-request) took effect is unknown: it is sent again only when it carries an idempotency key
    (as after a lost attempt, ``repeats_when_lost``)."""
    from tests.support.remote import Reply

    key = f"flaky-{status}-{attempts}"
    remote.script(key, [Reply(status, {"error": "oops"}), {"ok": True}])
    run, nodes = run_to_end(api, [http("pay", f"{remote.base}/seq/{key}", method="POST",
                                       fail_on_status=True, idempotency_header=key_header,
                                       retry={"max_attempts": 3, "backoff_ms": 0})])
    assert nodes["pay"].attempts == attempts
    assert run.status == ("failed" if attempts == 1 else "completed"), run.error


def test_body_over_max_response_bytes_fails_the_node(engine, api, remote):
    run, nodes = run_to_end(api, [http("big", f"{remote.base}/big/5000", max_response_bytes=1000)])
    assert run.status == "failed"
    big = nodes["big"]
    assert big.status == "failed" and big.error["error_type"] == "ResponseTooLarge"
    assert big.error["limit"] == 1000 and "1000" in big.error["message"]


# --- transport errors and retries ---------------------------------------------------------------


def test_dropped_connection_is_retried_while_retry_allows(engine, api, remote):
    key = uuid.uuid4().hex
    run, nodes = run_to_end(api, [http("fl", f"{remote.base}/flaky/{key}/2",
                                       retry={"max_attempts": 3, "backoff_ms": 0})])
    assert run.status == "completed", nodes["fl"].error
    fl = nodes["fl"]
    assert fl.attempts == 3 and fl.output["body"] == {"attempt": 3}
    assert [e["status"] for e in fl.attempt_log] == ["failed", "failed", "completed"]
    assert fl.attempt_log[0]["error"]["error_type"] == "HTTPRequestError"
    assert event_types(run).count("node_retrying") == 2


def test_transport_error_fails_with_http_request_error_when_retries_run_out(engine, api, remote):
    key = uuid.uuid4().hex
    run, nodes = run_to_end(api, [http("fl", f"{remote.base}/flaky/{key}/9",
                                       retry={"max_attempts": 2, "backoff_ms": 0})])
    assert run.status == "failed"
    fl = nodes["fl"]
    assert fl.attempts == 2 and len(remote.hits(f"/flaky/{key}")) == 2
    assert fl.error["error_type"] == "HTTPRequestError" and fl.error["transient"] is True
    assert run.error["error_type"] == "HTTPRequestError"


def test_a_post_redirected_to_a_name_that_does_not_resolve_is_not_sent_again(engine, api, remote):
    """The remote answered the POST (a 307, having applied it maybe) before its next hop's name failed
    to resolve: transient, so the node's retry sent the POST without a key again."""
    run, nodes = run_to_end(api, [http("pay", f"{remote.base}/redirect?code=307&to=http://aob-nx.invalid/",
                                       method="POST", payload={"amount": 100}, idempotency_header=None,
                                       retry={"max_attempts": 3, "backoff_ms": 0})])
    assert run.status == "failed" and nodes["pay"].attempts == 1, nodes["pay"].error
    assert nodes["pay"].error["error_type"] == "OutcomeUnknown", nodes["pay"].error
    assert len(remote.hits("/redirect")) == 1


def test_config_timeout_ms_fails_with_http_request_error(engine, api, remote):
    run, nodes = run_to_end(api, [http("slow", f"{remote.base}/sleep/1.5", timeout_ms=300)])
    assert run.status == "failed"
    slow = nodes["slow"]
    assert slow.error["error_type"] == "HTTPRequestError" and slow.error["kind"] == "timeout"
    assert slow.attempt_log[0]["duration_ms"] < 1400  # the client gave up, not the remote


# --- SSRF at node level -------------------------------------------------------------------------

BLOCKED = {  # case: (url, rule, what the message says)
    "loopback-other-port": ("http://127.0.0.1:{bystander}/echo", "loopback", "blocked address 127.0.0.1: loopback"),
    "localhost-name": ("http://localhost/", "blocked-name", "blocked name 'localhost'"),
    "localhost-name-allowlisted-port": ("http://localhost:{remote}/echo", "blocked-name", "blocked name 'localhost'"),
    "metadata": ("http://169.254.169.254/latest/meta-data/", "cloud-metadata",
                 "blocked address 169.254.169.254: cloud-metadata"),
    "redirect-to-loopback": ("{base}/redirect?to=http://127.0.0.1:{bystander}/echo", "loopback",
                             "blocked address 127.0.0.1: loopback"),
    "redirect-to-metadata": ("{base}/redirect?to=http://169.254.169.254/latest/meta-data/", "cloud-metadata",
                             "blocked address 169.254.169.254: cloud-metadata"),
}


def test_ssrf_refusals_fail_the_node_name_the_rule_and_are_not_retried(engine, api, remote, bystander):
    bystander.reset()
    fill = {"bystander": bystander.port, "remote": remote.port, "base": remote.base}
    # Given through the inputs: a literal blocked URL is refused at save already, and the check at
    # run time must hold on its own.
    runs = {case: submit(api, [http("call", "$inputs.url", retry={"max_attempts": 3, "backoff_ms": 0})],
                         inputs={"url": url.format(**fill)})
            for case, (url, _, _) in BLOCKED.items()}
    for case, run_id in runs.items():
        run = wait_for_run(run_id)
        call = NodeRun.objects.get(run=run, node_id="call")
        _, rule, message = BLOCKED[case]
        assert (run.status, call.status, call.attempts) == ("failed", "failed", 1), (case, call.error)
        assert call.error["error_type"] == "SSRFBlocked", (case, call.error)
        assert call.error["rule"] == rule and call.error["message"].startswith(message), (case, call.error)
        assert "node_retrying" not in event_types(run), case
    assert bystander.requests == []  # nothing reached the refused target
    assert len(remote.hits("/redirect")) == 2 and remote.hits("/echo") == []  # the first hop only


def test_redirect_within_the_allowlist_is_followed(engine, api, remote):
    run, nodes = run_to_end(api, [http("r", f"{remote.base}/redirect?to=/echo/after")])
    assert run.status == "completed", nodes["r"].error
    assert nodes["r"].output["url"] == f"{remote.base}/echo/after"
    assert nodes["r"].output["body"]["path"] == "/echo/after"



# --- idempotency keys ---------------------------------------------------------------------------


def test_every_attempt_of_a_node_sends_one_idempotency_key(engine, api, remote):
    key = uuid.uuid4().hex
    run, nodes = run_to_end(api, [http("fl", f"{remote.base}/flaky/{key}/2", method="POST", payload={"a": 1},
                                       retry={"max_attempts": 3, "backoff_ms": 0}),
                                  http("other", f"{remote.base}/echo")])
    assert run.status == "completed", nodes["fl"].error
    sent = [header(h, "Idempotency-Key") for h in remote.hits(f"/flaky/{key}")]
    assert len(sent) == 3 and sent[0] and len(set(sent)) == 1  # the same key across retries
    assert str(uuid.UUID(sent[0])) == sent[0]
    other = header(remote.hits("/echo")[0], "Idempotency-Key")
    assert other and other != sent[0]  # another node, another key


def test_loop_iterations_and_replays_send_other_keys(engine, api, remote):
    remote.script("poll", [{"state": "pending"}, {"state": "done"}])
    definition = {"nodes": [
        {"id": "start", "type": "transform", "config": {"expression": "1"}},
        http("body", f"{remote.base}/seq/poll"),
        {"id": "again", "type": "loop", "config": {"max_iterations": 5, "loop_back_to": "body",
                                                   "condition": "$.body.state == 'pending'"}}],
        "edges": [{"from": "start", "to": "body"}, {"from": "body", "to": "again"}, {"from": "again", "to": "body"}]}
    response = api.post("/api/v1/runs", {"workflow": definition, "inputs": {}}, format="json")
    source = wait_for_run(response.json()["run_id"])
    assert source.status == "completed", source.error
    first, second = [header(h, "Idempotency-Key") for h in remote.hits("/seq/poll")]
    assert first and second and first != second  # one per iteration

    replay = wait_for_run(api.post(f"/api/v1/runs/{source.pk}/nodes/body/replay").json()["run_id"])
    assert replay.status == "completed", replay.error
    replayed = [header(h, "Idempotency-Key") for h in remote.hits("/seq/poll")][2:]
    assert replayed and not set(replayed) & {first, second}  # a replay is a new run: new keys


def test_the_key_header_can_be_renamed_turned_off_or_set_by_the_author(engine, api, remote):
    run, _ = run_to_end(api, [http("renamed", f"{remote.base}/echo/renamed", idempotency_header="X-Request-Key"),
                              http("off", f"{remote.base}/echo/off", idempotency_header=False),
                              http("null", f"{remote.base}/echo/null", idempotency_header=None),
                              http("own", f"{remote.base}/echo/own", headers={"idempotency-key": "author's"})])
    assert run.status == "completed", run.error
    hits = {h["path"]: h for h in remote.hits("/echo")}
    assert header(hits["/echo/renamed"], "X-Request-Key") and not header(hits["/echo/renamed"], "Idempotency-Key")
    assert header(hits["/echo/off"], "Idempotency-Key") is None
    assert header(hits["/echo/null"], "Idempotency-Key") is None
    assert header(hits["/echo/own"], "Idempotency-Key") == "author's"


def test_a_key_header_that_is_not_a_token_or_a_bad_on_lost_is_refused_at_save(api):
    for config, pointer in (({"idempotency_header": "bad header"}, "idempotency_header"),
                            ({"idempotency_header": "Host"}, "idempotency_header"),
                            ({"on_lost": "maybe"}, "on_lost")):
        response = api.post("/api/v1/workflows/validate", {"workflow": {
            "nodes": [http("h", "https://example.com/", **config)], "edges": []}}, format="json")
        assert response.status_code == 200, response.json()
        body = response.json()
        assert body["valid"] is False and pointer in json.dumps(body), body
