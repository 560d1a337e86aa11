"""The node-type registry: one record per type, refused twice, checked at start-up; a new type is
one module and one registration (tests/support/example_types), and workers serve subsets of types."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from aob_project.celery import app
from tests.conftest import wait_for_run
from tests.engine.flow import edge, submit, transform, unique
from tests.support import stack
from workflows import registry
from workflows.models import NodeRun, Run

ROOT = stack.ROOT


def test_a_type_is_registered_once() -> None:
    before = registry.get("http")
    with pytest.raises(registry.RegistryError, match="'http' is already registered"):
        registry.register(registry.NodeType("http", run=lambda ctx: None))
    assert registry.get("http") is before


def test_each_record_holds_the_facts_the_engine_reads() -> None:
    hitl, agent, http, loop = (registry.get(t) for t in ("hitl", "agent", "http", "loop"))
    assert (hitl.queue, agent.queue, http.queue) == ("wf.tasks.hitl", "wf.tasks.agent", "wf.tasks.http")
    assert hitl.reads_upstream and agent.reads_upstream and not http.reads_upstream
    assert hitl.on_run_ending is not None  # a failed or cancelled run cancels its pending approvals
    assert loop.inline and loop.queue == "" and registry.is_inline("conditional")
    # the executors live in the apps that own them; the engine only sees the records
    assert hitl.run.__module__ == "approvals.nodetypes" and agent.run.__module__ == "agents.nodetypes"
    # every queue of the stack comes from the records
    assert {spec.queue for spec in registry.routed().values()} <= set(registry.all_queues())
    assert registry.queues(["shout", "http"]) == ["wf.tasks.http", "wf.tasks.shout"]


def test_a_transform_expression_is_run_as_written_not_resolved(engine: Any, api: Any) -> None:
    # its ``expression`` is a raw key (``NodeType.raw_keys``): a ${inputs.name} in its CEL string is
    # text; resolved, it named no input and failed the node (reference_missing), on a worker and in
    # the decision alike
    assert registry.get("transform").raw_keys == {"expression"}
    queued, pure = unique("queued"), unique("pure")
    expression = "'Dear ${inputs.name}, ' + inputs.body"
    run = wait_for_run(submit(api, {"nodes": [transform(queued, expression), transform(pure, expression, pure=True)],
                                    "edges": [edge(queued, pure)]}, inputs={"body": "hi"}))

    assert run.status == Run.Status.COMPLETED, run.error
    outputs = dict(NodeRun.objects.filter(run=run).values_list("node_id", "output"))
    assert outputs == {queued: "Dear ${inputs.name}, hi", pure: "Dear ${inputs.name}, hi"}


def test_a_worker_cannot_serve_a_type_nobody_registered() -> None:
    with pytest.raises(registry.RegistryError, match="nosuchtype"):
        registry.queues(["http", "nosuchtype"])
    with pytest.raises(registry.RegistryError, match="loop"):  # inline: evaluated by the coordinator
        registry.queues(["loop"])


def _manage_check(extra_app: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AOB_EXTRA_APPS": f"tests.support.example_types,{extra_app}"}
    return subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_start_up_refuses_a_routed_type_without_an_executor() -> None:
    done = _manage_check("tests.support.broken_types.no_executor")
    assert done.returncode != 0
    assert "workers.E002" in done.stderr and "'unrun'" in done.stderr and "wf.tasks.unrun" in done.stderr
    assert "workers.E003" in done.stderr and "'halfinline'" in done.stderr


def test_start_up_refuses_a_type_registered_twice() -> None:
    done = _manage_check("tests.support.broken_types.twice")
    assert done.returncode != 0
    assert "'transform' is already registered" in done.stderr


def test_the_whole_stack_passes_the_check() -> None:
    done = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=dict(os.environ),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_the_example_type_is_in_the_catalogue_with_its_schema(api: Any) -> None:
    types = {t["type"]: t for t in api.get("/api/v1/node-types").json()["types"]}
    assert types["shout"]["config_schema"]["required"] == ["text"]
    refused = api.post("/api/v1/workflows/validate", {"workflow": {
        "nodes": [{"id": "s", "type": "shout", "config": {"text": "   "}}], "edges": []}}, format="json").json()
    assert any(e["rule"] == "nothing_to_shout" for e in refused["errors"]), refused


@pytest.fixture(scope="module")
def shout_worker(workers: dict[str, stack.Proc], stack_env: dict[str, str]) -> Iterator[stack.Proc]:
    """A second worker process, on another 'host' as far as the queues go: it serves the example
    type only (``--node-types shout``), while w1 serves every other queue."""
    proc = stack.start_worker(stack_env, "shout", node_types=["shout"], concurrency=1)
    yield proc
    proc.stop()


def _consumed(node_name: str, within_s: float = 30.0) -> set[str]:
    """The queues the worker says it consumes: asked again while no answer came (a worker busy
    starting, on a loaded machine, can miss one broadcast's 5 s)."""
    deadline = time.monotonic() + within_s
    while True:
        replies = app.control.inspect(destination=[node_name], timeout=5).active_queues() or {}
        if node_name in replies or time.monotonic() > deadline:
            return {q["name"] for q in replies.get(node_name, [])}


def test_two_workers_with_disjoint_queues_run_one_workflow(engine: Any, shout_worker: stack.Proc,
                                                           api: Any) -> None:
    w1 = engine["worker"]
    assert _consumed(shout_worker.node_name) == {stack.EXAMPLE_QUEUE}
    assert stack.EXAMPLE_QUEUE not in _consumed(w1.node_name) and "wf.tasks.transform" in _consumed(w1.node_name)

    first, loud, last = unique("first"), unique("loud"), unique("last")
    run_id = submit(api, {"nodes": [
        transform(first, "inputs.word + '!'"),
        {"id": loud, "type": "shout", "config": {"text": f"$nodes.{first}", "times": 2}},
        transform(last, f"nodes.{loud}.shout + ' (' + string(size(nodes.{loud}.shout)) + ')'"),
    ], "edges": [edge(first, loud), edge(loud, last)]}, inputs={"word": "hey"})
    run = wait_for_run(run_id, timeout=60)

    assert run.status == Run.Status.COMPLETED, run.error
    outputs = dict(NodeRun.objects.filter(run=run).values_list("node_id", "output"))
    assert outputs[loud]["shout"] == "HEY! HEY!"
    assert outputs[last] == "HEY! HEY! (9)"
    # the shout node ran in the shout worker's pool, the transforms around it in w1's
    _host, pid = outputs[loud]["worker"].rsplit(":", 1)
    assert os.getpgid(int(pid)) == shout_worker.popen.pid


def test_a_worker_takes_its_types_from_the_environment_besides_its_queues(workers: Any,
                                                                          stack_env: dict[str, str]) -> None:
    """``AOB_WORKER_NODE_TYPES`` (as docker-compose or a host's unit file sets it) plus ``-Q``."""
    proc = stack.start_worker({**stack_env, "AOB_WORKER_NODE_TYPES": "shout"}, "env-types",
                              queues=["wf.tasks.default"], concurrency=1)
    try:
        assert _consumed(proc.node_name) == {stack.EXAMPLE_QUEUE, "wf.tasks.default"}
    finally:
        proc.stop()


def test_a_worker_for_a_type_nobody_registered_does_not_start(workers: Any, stack_env: dict[str, str]) -> None:
    with pytest.raises(RuntimeError, match="nosuchtype"):
        stack.start_worker(stack_env, "no-such-type", node_types=["nosuchtype"], concurrency=1)
