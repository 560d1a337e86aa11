"""A run's start (issue 20): when the start's plan only inserts node runs and events, the run, its
node runs and its first events are one statement (``coordinator.start_new``), after the read of what
the owner's runs keep (``workflows.storage``, its bound); any other plan takes
the decision's path (the run saved, then ``coordinator.start``, in a transaction).

Either way the rows must be the decision path's: each generated graph is started both ways and
the run's fields, its node runs and its events are compared.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.engine import graphs
from workflows.engine import coordinator
from workflows.models import Artifact, Event, NodeRun, Run, canonical_json, size_of
from workflows.services.definitions import workflow_save
from workflows.services.runs import run_start

Q = graphs.Q


def facts(run: Run) -> dict[str, Any]:
    """What a start wrote, but for ids and clock readings (their presence only, a duration's too)."""
    run.refresh_from_db()
    nodes = {(nr.node_id, nr.iteration): (nr.node_type, nr.status, nr.input, nr.output, nr.error, nr.consumed,
                                          nr.taken, nr.attempts, nr.output_artifact_id, nr.attempt_log, nr.reused,
                                          nr.wait_reason, nr.usage, nr.started_at is None, nr.finished_at is None,
                                          nr.dispatched_at is None, nr.queued_at is None)
             for nr in NodeRun.objects.filter(run=run)}
    events = [(e.seq, e.type, e.node_id, {k: v if k != "duration_ms" else v is None for k, v in e.data.items()},
               e.request_id) for e in Event.objects.filter(run=run).order_by("seq")]
    return {"run": (run.status, run.error, run.event_seq, run.inputs, run.usage, run.tag, run.base_artifact_id,
                    run.current_artifact_id, run.started_at is None, run.finished_at is None),
            "nodes": nodes, "events": events}


def decision_path(owner: Any, artifact_id: str, inputs: dict[str, Any], usage: dict[str, Any] | None = None) -> Run:
    """The reference: the run saved (with the ``usage`` its start counted: the definition it keeps),
    then the decision's ``start`` applies the plan."""
    run = Run(owner=owner, base_artifact_id=artifact_id, current_artifact_id=artifact_id, inputs=inputs,
              inputs_bytes=size_of(canonical_json(inputs)) if inputs else 0, usage=dict(usage or {}))
    with transaction.atomic():
        run.save(force_insert=True)
        coordinator.start(run)
    return run


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(definition=graphs.dags() | graphs.dags(failures=False).map(graphs.in_decision) | graphs.loop_chains(),
       inputs=st.sampled_from([{}, {"n": 1}]))
def test_a_start_writes_what_the_decisions_path_writes(user: Any, definition: dict[str, Any],
                                                       inputs: dict[str, Any]) -> None:
    started = run_start(owner=user, definition=definition, inputs=inputs)
    counted = {"kept_bytes": size_of(canonical_json(definition))}  # the definition it keeps
    reference = decision_path(user, started.base_artifact_id, inputs, counted)

    assert facts(started) == facts(reference)


def test_a_usual_start_is_one_statement(user: Any) -> None:
    saved = workflow_save(owner=user, tag="two", definition={
        "nodes": [{"id": "a", "type": "transform", "config": {"expression": "1", **Q}},
                  {"id": "b", "type": "transform", "config": {"expression": "2", **Q}},
                  {"id": "c", "type": "transform", "config": {"expression": "3", **Q}}],
        "edges": [{"from": "a", "to": "c"}, {"from": "b", "to": "c"}]})
    artifact_id = saved.workflow.current_version.artifact_id
    run_start(owner=user, artifact_id=artifact_id)  # the version validated and compiled in this process

    with CaptureQueriesContext(connection) as statements:
        run = run_start(owner=user, artifact_id=artifact_id, inputs={"k": 1})

    # what the owner's runs keep, read first (workflows/storage.py: one statement, indexed), then the start
    assert len(statements.captured_queries) == 2, [q["sql"][:60] for q in statements.captured_queries]
    assert "workflows_ownerstorage" in statements.captured_queries[0]["sql"]
    assert statements.captured_queries[1]["sql"].startswith('WITH i0 AS (INSERT INTO "workflows_run"')
    created_at = run.created_at
    stored = facts(run)
    assert stored["run"][:4] == ("queued", None, 1, {"k": 1})  # event_seq: the one event it wrote
    # the version it keeps counted (workflows.storage) from what compiled it: no statement of its own
    assert stored["run"][4] == {"kept_bytes": Artifact.objects.get(pk=artifact_id).size_bytes}
    assert {key: row[1] for key, row in stored["nodes"].items()} == {("a", 0): "queued", ("b", 0): "queued"}
    assert [event[:3] for event in stored["events"]] == [(1, "workflow_started", "")]
    assert run.created_at == created_at  # the caller's instance holds what was stored


def test_a_start_that_continues_in_the_coordinator_takes_the_decisions_path(user: Any) -> None:
    # the only entry is a conditional with no successor: the start stores it for a coordinator's
    # decision (which completes the run), so it is not a plain insert
    definition = {"nodes": [{"id": "only", "type": "conditional", "config": {}}], "edges": []}
    run_start(owner=user, definition=definition)  # validated and compiled here
    artifact_id = Run.objects.latest("created_at").base_artifact_id

    with CaptureQueriesContext(connection) as statements:
        run = run_start(owner=user, artifact_id=artifact_id)

    sql = [q["sql"] for q in statements.captured_queries]
    assert not any(s.startswith("WITH i0 AS (INSERT") for s in sql)
    assert any(s.startswith('INSERT INTO "workflows_run"') for s in sql)
    assert facts(run)["run"][0] == "queued"
    assert [row[5] for row in facts(run)["nodes"].values()] == [False]  # the conditional, unconsumed
    counted = {"kept_bytes": Artifact.objects.get(pk=artifact_id).size_bytes}
    assert facts(run) == facts(decision_path(user, artifact_id, {}, counted))


def test_a_start_and_its_idempotency_key_commit_together(user: Any) -> None:
    """With a key, the key's claim shares the start's transaction: a claim that fails leaves no run."""
    from workflows.services import idempotency

    saved = workflow_save(owner=user, tag="one", definition={
        "nodes": [{"id": "a", "type": "transform", "config": {"expression": "1", **Q}}], "edges": []})
    artifact_id = saved.workflow.current_version.artifact_id
    before = Run.objects.count()

    def claim(run: Run) -> None:
        raise idempotency.KeyTaken("start-1")

    with pytest.raises(idempotency.KeyTaken):
        run_start(owner=user, artifact_id=artifact_id, record=claim)

    assert Run.objects.count() == before


def test_a_run_s_large_inputs_reach_its_first_event_as_a_link(user: Any) -> None:
    """A run's inputs reach AOB_MAX_RUN_INPUTS_BYTES (16 MiB) when a hook or a parent builds them.
    Its ``workflow_started`` event carries them up to ``EVENT_VALUE_MAX_BYTES``, else a marker
    linking to the run, which answers them whole: the event row, its push and every page of
    ``GET /runs/{id}/events`` stay small. Both ways of starting (one statement, the decision's)."""
    from tests.conftest import client_for
    from workflows.engine.events import EVENT_VALUE_MAX_BYTES

    saved = workflow_save(owner=user, tag="big", definition={
        "nodes": [{"id": "a", "type": "transform", "config": {"expression": "1", **Q}}], "edges": []})
    artifact_id = saved.workflow.current_version.artifact_id
    small, large = {"pad": "s" * 1000}, {"pad": "l" * EVENT_VALUE_MAX_BYTES}
    client = client_for(user)

    for start in (lambda inputs: run_start(owner=user, artifact_id=artifact_id, inputs=inputs),
                  lambda inputs: decision_path(user, artifact_id, inputs)):
        shown = {}
        for name, inputs in (("small", small), ("large", large)):
            run = start(inputs)
            [event] = client.get(f"/api/v1/runs/{run.pk}/events").json()
            assert event["type"] == "workflow_started"
            shown[name] = event["data"]["inputs"]
            assert Run.objects.get(pk=run.pk).inputs == inputs
            assert client.get(f"/api/v1/runs/{run.pk}").json()["inputs"] == inputs
        assert shown["small"] == small
        assert shown["large"]["truncated"] is True and shown["large"]["bytes"] > EVENT_VALUE_MAX_BYTES
        assert client.get(shown["large"]["href"]).json()["inputs"] == large


@pytest.mark.parametrize(("inputs", "rule", "path"), [
    ({"x": float("nan")}, "invalid_number", "/x"),
    ({"x": [1, float("-inf")]}, "invalid_number", "/x/1"),
    ({"x": "a\x00b"}, "nul_character", "/x"),
    ({"x": {"k\x00": 1}}, "nul_character", "/x"),
    ({"x": "\ud800"}, "invalid_unicode", "/x"),
])
def test_inputs_json_cannot_hold_are_refused_by_the_body_s_rule_and_start_nothing(user: Any, inputs: dict[str, Any],
                                                                                   rule: str, path: str) -> None:
    """Every start (the API, a hook's mapping, a schedule, a parent run) goes through run_start: what
    the API's body parser refuses as unstorable is refused there too, naming the rule and where,
    instead of a ValueError from the canonical JSON or a DataError from PostgreSQL. An integer
    beyond 64 bits is stored: a replay's inputs hold one where the API took a float (1e20)."""
    from aob_project.exceptions import ValidationFailed

    definition = {"nodes": [{"id": "a", "type": "transform", "config": {"expression": "1", **Q}}], "edges": []}
    before = Run.objects.count()

    with pytest.raises(ValidationFailed) as refused:
        run_start(owner=user, definition=definition, inputs=inputs)

    assert refused.value.code == "invalid_inputs"
    assert refused.value.extra == {"field": "inputs", "rule": rule, "path": path}
    assert Run.objects.count() == before
    stored = run_start(owner=user, definition=definition, inputs={"f": 1e20, "g": 1.5})
    read_back = Run.objects.get(pk=stored.pk).inputs
    assert read_back == {"f": 10**20, "g": 1.5}  # as jsonb reads it back: how a replay starts
    replayed = run_start(owner=user, definition=definition, inputs=read_back)
    assert Run.objects.get(pk=replayed.pk).inputs == read_back


def test_a_start_evaluates_no_expression_its_entry_conditional_goes_on_in_the_coordinator(user: Any) -> None:
    """The start runs in the web process (or a hook's, a parent's): it evaluates nothing in place.
    An entry conditional is stored as it completes, unconsumed, for a coordinator's decision to
    route (its edge rules are that decision's); nothing after it is emitted yet."""
    definition = {"nodes": [{"id": "gate", "type": "conditional", "config": {}},
                            {"id": "yes", "type": "transform", "config": {"expression": "1", **Q}},
                            {"id": "no", "type": "transform", "config": {"expression": "2", **Q}}],
                  "edges": [{"from": "gate", "to": "yes", "condition": "inputs.n > 1"},
                            {"from": "gate", "to": "no", "condition": "inputs.missing.x"}]}

    run = run_start(owner=user, definition=definition, inputs={"n": 2})

    [gate] = NodeRun.objects.filter(run=run)
    assert (gate.node_id, gate.status, gate.consumed, gate.taken) == ("gate", "completed", False, None)
    assert [e.type for e in Event.objects.filter(run=run).order_by("seq")] == [
        "workflow_started", "node_started", "node_completed"]  # no condition_error: nothing was evaluated
    run.refresh_from_db()
    assert run.status == "queued"  # until a decision moves it on


def test_a_loop_node_that_loops_back_to_itself_is_refused() -> None:
    """It would have no body and be an entry, whose condition a run's start would evaluate."""
    from workflows.definition.validation import validate

    report = validate({"nodes": [{"id": "spin", "type": "loop", "config": {"loop_back_to": "spin",
                                                                          "max_iterations": 3, "condition": "true"}}],
                       "edges": []})

    assert not report.valid
    assert [(p.path, p.rule) for p in report.errors] == [("/nodes/0/config/loop_back_to", "loop_reaches_back")]


def test_a_start_of_more_entry_nodes_than_one_statement_carries_is_written_in_batches(user: Any, settings: Any) -> None:
    """Each value of a node run is a parameter of its own (``ValuesJSONField``: Django's ``UNNEST``
    array literal escaped every quote of every value in Python), and PostgreSQL takes at most 65,535
    in one statement: 2,500 entry nodes (an operator's raised ``AOB_MAX_NODES``) are 67,500 in the one
    statement of a usual start. Past ``START_ONE_STATEMENT_MAX`` the start is written in batches."""
    settings.AOB_MAX_NODES = 2600
    definition = {"nodes": [{"id": f"n{i}", "type": "transform", "config": {"expression": "1", **Q}}
                            for i in range(2500)], "edges": []}

    run = run_start(owner=user, definition=definition, inputs={})

    assert NodeRun.objects.filter(run=run, status="queued").count() == 2500


def test_a_definition_sent_again_after_its_artifact_was_pruned_starts(user: Any) -> None:
    """A definition sent with a run is validated once a process (its content id vouches for it
    after). Sent again after its runs were removed and a prune deleted its artifact, in a process
    whose compiled graphs (fewer than the runnable ids it remembers) no longer held it, the start
    read the graph from the artifact it had not stored yet: a 500 (Artifact.DoesNotExist)."""
    from datetime import timedelta

    from django.utils import timezone

    from retention.services import prune
    from workflows.definition import ir

    definition = {"nodes": [{"id": "a", "type": "transform", "config": {"expression": "'pruned'", **Q}}]}
    first = run_start(owner=user, definition=definition)
    artifact_id = first.base_artifact_id
    Run.objects.filter(pk=first.pk).delete()  # its runs removed (as run_remove or a prune removes them)
    prune(now=timezone.now() + timedelta(days=3650))
    assert not Artifact.objects.filter(pk=artifact_id).exists()
    other = {"nodes": [{"id": "x", "type": "transform", "config": {"expression": "1"}}]}
    for k in range(ir._CACHE_SIZE):  # other versions compiled since, evicting its graph
        ir.ir_for(f"other-{k}", lambda: (other, size_of(canonical_json(other))))

    again = run_start(owner=user, definition=definition)

    assert again.base_artifact_id == artifact_id
    assert Artifact.objects.get(pk=artifact_id).content == definition
    assert NodeRun.objects.filter(run=again, node_id="a").exists()


def test_a_start_refused_by_its_run_limit_keeps_no_graph_of_the_definition_it_was_sent(user: Any,
                                                                                   settings: Any) -> None:
    """A start sent with its definition compiled it and kept the graph before its run limits were
    judged: each start answered 429 kept one (a 1 MB definition's ~25 MB of parsed configs), and one
    user's refused starts made a web process hold gigabytes. Kept once a start passes them."""
    from workflows.definition import ir
    from workflows.models import text_id
    from workflows.ratelimit import RateLimited

    definition = {"nodes": [{"id": "a", "type": "transform", "config": {"expression": f"'{uuid.uuid4()}'", **Q}}]}
    artifact_id = text_id(canonical_json(definition))
    settings.AOB_RATE_USER_RUNS_PER_MIN = 0

    with pytest.raises(RateLimited) as refused:
        run_start(owner=user, definition=definition)

    assert refused.value.code == "user_rate_limit_exceeded"
    assert ir.cached(artifact_id) is None
    assert not Run.objects.filter(base_artifact_id=artifact_id).exists()
    settings.AOB_RATE_USER_RUNS_PER_MIN = 1000
    run = run_start(owner=user, definition=definition)
    assert run.base_artifact_id == artifact_id and ir.cached(artifact_id) is not None


def test_a_start_of_a_stored_version_refused_by_its_run_limit_keeps_no_graph(user: Any, settings: Any) -> None:
    """A sent definition's graph was kept only once its start passed its run limits, but a start of a
    stored version this process knew runnable (its second on, by tag, schedule or hook) compiled
    and kept its graph before them: refused starts kept graphs and evicted others'. Both alike."""
    from workflows.definition import ir
    from workflows.ratelimit import RateLimited

    definition = {"nodes": [{"id": "a", "type": "transform", "config": {"expression": f"'{uuid.uuid4()}'", **Q}}]}
    saved = workflow_save(owner=user, tag=f"stored-{uuid.uuid4().hex[:8]}", definition=definition)
    artifact_id = saved.version.artifact_id
    run_start(owner=user, artifact_id=artifact_id, workflow=saved.workflow)  # this process knows it runnable
    settings.AOB_COMPILED_GRAPHS_BYTES = 10_000  # other versions compiled since evict its graph
    other = {"nodes": [{"id": "x", "type": "transform", "config": {"expression": "1"}}]}
    ir.ir_for(f"other-{uuid.uuid4()}", lambda: (other, 9_999))
    assert ir.cached(artifact_id) is None
    settings.AOB_COMPILED_GRAPHS_BYTES = 8 * 1024 * 1024
    settings.AOB_RATE_USER_RUNS_PER_MIN = 0

    with pytest.raises(RateLimited) as refused:
        run_start(owner=user, artifact_id=artifact_id, workflow=saved.workflow)

    assert refused.value.code == "user_rate_limit_exceeded"
    assert Run.objects.filter(base_artifact_id=artifact_id).count() == 1
    assert ir.cached(artifact_id) is None
    settings.AOB_RATE_USER_RUNS_PER_MIN = 1000
    run = run_start(owner=user, artifact_id=artifact_id, workflow=saved.workflow)
    assert run.base_artifact_id == artifact_id and ir.cached(artifact_id) is not None


def test_the_graphs_a_process_keeps_compiled_weigh_at_most_their_bound(settings: Any) -> None:
    """512 compiled graphs were kept whatever their size, each holding its definition's configs
    parsed (~25 times a definition of small objects: 512 of 1 MB, ~12.8 GB). They are weighed by
    their definitions' stored bytes (``AOB_COMPILED_GRAPHS_BYTES``), the least recently used dropped;
    one heavier than the bound alone is compiled for its use and not kept."""
    from workflows.definition import ir

    settings.AOB_COMPILED_GRAPHS_BYTES = 10_000
    definition = {"nodes": [{"id": "a", "type": "transform", "config": {"expression": "1"}}]}
    ids = [f"weighed-{uuid.uuid4()}" for _ in range(5)]

    for artifact_id in ids:
        assert ir.ir_for(artifact_id, lambda: (definition, 3_000)).entries == ["a"]
        assert ir.kept_bytes() <= 10_000

    assert [ir.cached(artifact_id) is not None for artifact_id in ids] == [False, False, True, True, True]
    heavier = f"weighed-{uuid.uuid4()}"
    assert ir.ir_for(heavier, lambda: (definition, 10_001)).entries == ["a"]
    assert ir.cached(heavier) is None and ir.kept_bytes() == 9_000
