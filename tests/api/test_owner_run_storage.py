"""What one owner's runs keep together is bounded (``AOB_OWNER_STORAGE_BYTES``, ``workflows.storage``):
before, only each run was (its inputs, its outputs) and the rate of starts, so one owner could fill
the disk every owner shares within retention. The database keeps each owner's finished runs' bytes
(migration 0027's trigger) and a start adds the unfinished ones'; past the bound a start is refused
naming it, and the owner frees room by deleting runs (``POST /api/v1/runs/{id}/delete``)."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection

from tests.api.factories import post_workflow
from tests.conftest import client_for, stored_run, wait_for_run
from workflows.models import Artifact, Event, NodeRun, OwnerStorage, Run
from workflows.storage import KEPT, owner_stored_bytes

API = "/api/v1"
ECHO = {"nodes": [{"id": "echo", "type": "transform", "config": {"expression": "inputs.text"}}], "edges": []}
GATE = {"nodes": [{"id": "ask", "type": "hitl", "config": {"message": "go?"}}], "edges": []}


def _start(api: Any, definition: dict, inputs: dict) -> Any:
    return api.post(f"{API}/runs", {"workflow": definition, "inputs": inputs}, format="json")


def _recounted(owner_id: int) -> int:
    """The finished runs' bytes summed from the runs themselves: what the trigger's count must equal."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COALESCE(SUM{KEPT}, 0) FROM workflows_run "  # noqa: S608 - no input
                       "WHERE owner_id = %s AND status IN ('completed', 'failed', 'cancelled')", [owner_id])
        return int(cursor.fetchone()[0])


def _kept(owner_id: int) -> int:
    return OwnerStorage.objects.filter(owner_id=owner_id).values_list("finished_bytes", flat=True).first() or 0


def test_a_start_past_the_owner_s_bound_is_refused_until_a_run_is_deleted(engine: Any, user: Any, api: Any,
                                                                          make_user: Any, settings: Any) -> None:
    text = "x" * 20_000
    first = _start(api, ECHO, {"text": text})
    assert first.status_code == 201, first.json()
    done = wait_for_run(first.json()["run_id"])
    assert done.status == "completed", done.error
    kept = _kept(user.pk)
    # its inputs, its node's output, and what else it keeps, as stored, counted once it finished
    assert kept == _recounted(user.pk) == (done.inputs_bytes + done.usage["output_bytes"]
                                           + done.usage["kept_bytes"]) > 40_000
    settings.AOB_OWNER_STORAGE_BYTES = kept + 10_000

    refused = _start(api, ECHO, {"text": text})

    assert refused.status_code == 409, refused.json()
    body = refused.json()
    assert body["error"] == "owner_storage_full"
    assert body["details"] == {"rule": "owner_storage_bytes", "limit": kept + 10_000, "stored": kept,
                               "adding": body["details"]["adding"]} and body["details"]["adding"] > 10_000
    assert Run.objects.filter(owner=user).count() == 1  # nothing started
    # another owner's runs are theirs to count
    bob = make_user("bob")
    assert _start(client_for(bob), ECHO, {"text": "small"}).status_code == 201

    deleted = api.post(f"{API}/runs/{done.pk}/delete")

    assert deleted.status_code == 204, deleted.content
    assert not Run.objects.filter(pk=done.pk).exists() and not NodeRun.objects.filter(run_id=done.pk).exists()
    assert not Event.objects.filter(run_id=done.pk).exists()
    assert _kept(user.pk) == _recounted(user.pk) == 0
    assert _start(api, ECHO, {"text": text}).status_code == 201


def test_unfinished_runs_count_as_they_stand(engine: Any, user: Any, api: Any, settings: Any) -> None:
    """A run waiting on a gate is never finished, and kept: its bytes count from its start."""
    waiting = _start(api, GATE, {"blob": "y" * 30_000})
    assert waiting.status_code == 201
    run = wait_for_run(waiting.json()["run_id"], statuses={"waiting_for_approval"})
    stored = run.inputs_bytes + run.usage.get("kept_bytes", 0)  # its definition and its gate's input besides
    assert _kept(user.pk) == 0 and owner_stored_bytes(user.pk) == stored and run.inputs_bytes > 30_000
    settings.AOB_OWNER_STORAGE_BYTES = stored + 1_000

    refused = _start(api, GATE, {"blob": "y" * 2_000})

    assert refused.status_code == 409 and refused.json()["details"]["stored"] == stored
    assert _start(api, GATE, {"blob": "y" * 100}).status_code == 201  # within what is left
    # an unfinished run is not deleted: it is cancelled first
    busy = api.post(f"{API}/runs/{run.pk}/delete")
    assert busy.status_code == 409 and busy.json()["error"] == "run_not_finished"
    assert api.post(f"{API}/runs/{run.pk}/cancel").status_code == 200
    assert _kept(user.pk) == _recounted(user.pk) == stored  # cancelled: a finished run's
    assert api.post(f"{API}/runs/{run.pk}/delete").status_code == 204
    assert _kept(user.pk) == _recounted(user.pk)


@pytest.mark.django_db
def test_the_count_follows_every_way_a_run_finishes_leaves_it_and_goes(user: Any, make_user: Any) -> None:
    """The trigger against a recount, over the transitions the engine makes: a run finishing, a
    finished run resumed and finishing again with more output, a run deleted, an owner deleted."""
    runs = [stored_run(user) for _ in range(3)]
    Run.objects.filter(pk=runs[0].pk).update(status="completed", inputs_bytes=100, usage={"output_bytes": 50})
    Run.objects.filter(pk=runs[1].pk).update(status="failed", inputs_bytes=7, usage={})
    Run.objects.filter(pk=runs[2].pk).update(usage={"output_bytes": 999})  # unfinished: not in the count
    assert _kept(user.pk) == _recounted(user.pk) == 157

    Run.objects.filter(pk=runs[1].pk).update(status="running")  # resumed
    assert _kept(user.pk) == _recounted(user.pk) == 150
    Run.objects.filter(pk=runs[1].pk).update(status="completed", usage={"output_bytes": 3})
    Run.objects.filter(pk=runs[0].pk).update(usage={"output_bytes": 60})  # a finished run's sizes moved
    assert _kept(user.pk) == _recounted(user.pk) == 170
    Run.objects.filter(pk=runs[0].pk).delete()
    assert _kept(user.pk) == _recounted(user.pk) == 10

    bob = make_user("bob")
    Run.objects.filter(pk=stored_run(bob).pk).update(status="cancelled", inputs_bytes=5)
    bob.delete()  # his runs go with him, and his count, in whichever order the collector takes them
    assert not OwnerStorage.objects.filter(owner_id=bob.pk).exists()
    assert _kept(user.pk) == 10


@pytest.mark.django_db
def test_only_the_owner_deletes_a_run_and_only_one_nothing_still_reads(user: Any, make_user: Any) -> None:
    from subflows.models import SubRun

    parent, child = stored_run(user), stored_run(user)
    Run.objects.filter(pk=child.pk).update(status="completed")
    node = NodeRun.objects.create(run=parent, node_id="sub", node_type="workflow", status="running")
    SubRun.objects.create(parent_run=parent, parent_node_run=node, child_run=child)
    bob = make_user("bob")

    assert client_for(bob).post(f"{API}/runs/{child.pk}/delete").status_code == 404  # not his: no such run
    in_use = client_for(user).post(f"{API}/runs/{child.pk}/delete")  # its parent waits for its outcome
    assert in_use.status_code == 409 and in_use.json()["error"] == "run_in_use"
    assert Run.objects.filter(pk=child.pk).exists()


def test_a_start_sums_the_unfinished_runs_the_partial_index_holds() -> None:
    """The start's sum reads the owner's unfinished runs through ``run_owner_unfinished``: its query
    and the index must name the same statuses, or the planner reads every run of the owner."""
    from workflows.storage import STORED, UNFINISHED

    [index] = [index for index in Run._meta.indexes if index.name == "run_owner_unfinished"]
    assert set(dict(index.condition.children)["status__in"]) == set(UNFINISHED) == {"queued", "running",
                                                                                   "waiting_for_approval"}
    assert "status IN ('queued', 'running', 'waiting_for_approval')" in STORED


@pytest.mark.django_db
def test_an_owner_reads_what_their_runs_keep_and_the_bound(user: Any, api: Any, settings: Any) -> None:
    run = stored_run(user)
    Run.objects.filter(pk=run.pk).update(status="completed", inputs_bytes=1_000, usage={"output_bytes": 234})
    settings.AOB_OWNER_STORAGE_BYTES = 5_000

    assert api.get(f"{API}/auth/me").json()["storage"] == {"stored_bytes": 1_234, "limit_bytes": 5_000}
    settings.AOB_OWNER_STORAGE_BYTES = 0  # no bound
    assert api.get(f"{API}/auth/me").json()["storage"] == {"stored_bytes": 1_234, "limit_bytes": None}


@pytest.mark.django_db
def test_the_finished_runs_a_filter_chooses_are_deleted_in_one_request(user: Any, make_user: Any,
                                                                       settings: Any) -> None:
    """An owner at the bound freed room one run a request (each a write against the rate limit);
    the runs list's filters choose many, read by the same filter as ``GET /runs``. Only the
    caller's finished runs go, none another run still reads, and what they kept goes down."""
    from subflows.models import SubRun
    from tests.api.test_lists import a_run

    bob = make_user("bob")
    failed_old = [a_run(user, tag="billing", status="failed", days_ago=10) for _ in range(3)]
    kept_ones = [a_run(user, tag="billing", status="failed", days_ago=1),  # created after the filter's date
                 a_run(user, tag="billing", status="completed", days_ago=10),  # another status
                 a_run(user, tag="reports", status="failed", days_ago=10),  # another workflow
                 a_run(bob, tag="billing", status="failed", days_ago=10)]  # another owner
    parent, in_use = stored_run(user), a_run(user, tag="billing", status="failed", days_ago=10)
    node = NodeRun.objects.create(run=parent, node_id="sub", node_type="workflow", status="running")
    SubRun.objects.create(parent_run=parent, parent_node_run=node, child_run=in_use)  # its parent waits for it
    Run.objects.filter(owner=user).update(inputs_bytes=1_000)
    before = _kept(user.pk)
    settings.AOB_RETENTION_BATCH_SIZE = 2  # in more than one batch
    cutoff = (failed_old[0].created_at + (kept_ones[0].created_at - failed_old[0].created_at) / 2).isoformat()

    chosen = {"workflow": "billing", "status": "failed", "created_before": cutoff}
    preview = client_for(user).post(f"{API}/runs/delete", {**chosen, "dry_run": True}, format="json")
    settings.AOB_PRUNE_PREVIEW_CAP = 3
    capped = client_for(user).post(f"{API}/runs/delete", {**chosen, "dry_run": True}, format="json")
    answer = client_for(user).post(f"{API}/runs/delete", chosen, format="json")

    assert preview.json() == {"dry_run": True, "would_delete": 3, "kept": 1, "at_least": []}  # the count before
    assert capped.json() == {"dry_run": True, "would_delete": 3, "kept": 1, "at_least": ["would_delete"]}
    assert answer.status_code == 200, answer.json()
    assert answer.json() == {"deleted": 3, "finished": True, "kept": 1}  # the one a parent reads stays
    assert not Run.objects.filter(pk__in=[r.pk for r in failed_old]).exists()
    assert Run.objects.filter(pk__in=[r.pk for r in [*kept_ones, in_use, parent]]).count() == 6
    assert _kept(user.pk) == before - 3_000 == _recounted(user.pk)


@pytest.mark.parametrize(("body", "field", "rule"), [
    ({}, "created_before", "filter_required"),  # every run of the caller's, by a body left empty: refused
    ({"status": "running"}, "status", "invalid_choice"),  # unfinished runs are cancelled first, one by one
    ({"created_before": "last tuesday"}, "created_before", "date_time"),  # the runs list's own rule
    ({"workflow": ""}, "workflow", "blank"),
    ({"q": "invoice"}, "q", "unknown_field"),  # the text search looks at the latest 1,000 runs: not a choice
    ({"workflow": 5}, "workflow", "type"),
    ({"dry_run": True}, "created_before", "filter_required"),  # a count is not a filter
    ({"status": "failed", "dry_run": "yes"}, "dry_run", "invalid"),
])
@pytest.mark.django_db
def test_a_delete_by_filter_names_the_field_it_cannot_take(user: Any, body: dict, field: str, rule: str) -> None:
    run = stored_run(user)
    Run.objects.filter(pk=run.pk).update(status="failed")

    answer = client_for(user).post(f"{API}/runs/delete", body, format="json")

    assert answer.status_code == 400, answer.content
    assert (answer.json()["details"]["field"], answer.json()["details"]["rule"]) == (field, rule), answer.json()
    assert Run.objects.filter(pk=run.pk).exists()


def test_a_replay_counts_the_outputs_it_reuses_from_its_start(engine: Any, user: Any, api: Any,
                                                              settings: Any) -> None:
    """A replay keeps a copy of each output it reuses, and started counting none of them: twenty
    replays of one run kept twenty times its outputs under a bound of one run's worth (a red team's
    measure), and the run's own output cap never saw them. It starts with them counted now, and a
    replay they would take past the owner's bound is refused."""
    flow = {"nodes": [*ECHO["nodes"], {"id": "tail", "type": "transform", "config": {"expression": "1"}}],
            "edges": [{"from": "echo", "to": "tail"}]}
    first = _start(api, flow, {"text": "x" * 30_000})
    source = wait_for_run(first.json()["run_id"])
    assert source.status == "completed", source.error
    echoed = NodeRun.objects.get(run=source, node_id="echo")

    replayed = api.post(f"{API}/runs/{source.pk}/nodes/tail/replay", {}, format="json")

    assert replayed.status_code == 201, replayed.json()
    replay = wait_for_run(replayed.json()["run_id"])
    assert replay.status == "completed", replay.error
    assert replay.usage["output_bytes"] == source.usage["output_bytes"] > 30_000  # echo's, reused, and tail's
    assert NodeRun.objects.get(run=replay, node_id="echo").reused and echoed.output_bytes > 30_000
    assert _kept(user.pk) == _recounted(user.pk)
    settings.AOB_OWNER_STORAGE_BYTES = owner_stored_bytes(user.pk) + 10_000  # room for inputs, not for echo's copy
    refused = api.post(f"{API}/runs/{source.pk}/nodes/tail/replay", {}, format="json")
    assert refused.status_code == 409 and refused.json()["error"] == "owner_storage_full", refused.json()
    assert refused.json()["details"]["adding"] > 30_000 + source.inputs_bytes
    assert Run.objects.filter(owner=user).count() == 2


def test_a_sub_workflow_s_outcome_counts_in_its_parent(engine: Any, user: Any, api: Any) -> None:
    """A ``workflow`` node stores its child's outputs in the parent, and its size was added nowhere:
    outside the parent's output cap and, once the children were deleted, outside what the owner's
    runs keep (a red team's six children kept 1.8 MB the count said was 0)."""
    from workflows.services.definitions import workflow_save

    workflow_save(owner=user, tag="big", definition={"nodes": [
        {"id": "make", "type": "transform", "config": {"expression": "'y' + inputs.text"}}], "edges": []})
    parent = {"nodes": [{"id": f"c{i}", "type": "workflow", "config": {"tag": "big", "inputs": {"text": "x" * 20_000}}}
                        for i in range(2)], "edges": []}

    run = wait_for_run(_start(api, parent, {}).json()["run_id"], timeout=60)

    assert run.status == "completed", run.error
    copies = NodeRun.objects.filter(run=run, node_id__in=["c0", "c1"])
    assert all(nr.output["outputs"]["make"].endswith("x" * 20_000) for nr in copies)
    assert run.usage["output_bytes"] >= 2 * 20_000
    assert _kept(user.pk) == _recounted(user.pk)


def _stored(run_id: Any) -> int:
    """A run's stored outputs, measured as a completion counts one."""
    from workflows.models import canonical_json, size_of

    return sum(size_of(canonical_json(output)) for output in
               NodeRun.objects.filter(run_id=run_id).values_list("output", flat=True) if output is not None)


LOOPING = {"nodes": [{"id": "a", "type": "transform", "config": {"expression": "{'n': 1}"}},
                     {"id": "again", "type": "loop", "config": {"max_iterations": 3, "loop_back_to": "a"}},
                     {"id": "end", "type": "transform", "config": {"expression": "'done'"}}],
           "edges": [{"from": "a", "to": "again"}, {"from": "again", "to": "a"}, {"from": "again", "to": "end"}]}
CONDITIONAL_FIRST = {"nodes": [{"id": "c", "type": "conditional", "config": {}},
                               {"id": "end", "type": "transform", "config": {"expression": "'done'"}}],
                     "edges": [{"from": "c", "to": "end"}]}


@pytest.mark.parametrize("definition", [LOOPING, CONDITIONAL_FIRST], ids=["loop", "conditional_first"])
def test_every_output_a_run_stores_is_counted_once(engine: Any, api: Any, definition: dict) -> None:
    """What a run counts against its output cap and its owner's bound is what it stores: a loop's
    counters were stored on every pass and counted on none (a red team's 27 bytes counted of 227
    stored), and a conditional with nothing before it counted the 4 bytes of a ``null`` it does
    not store."""
    run = wait_for_run(_start(api, definition, {}).json()["run_id"])

    assert run.status == "completed", run.error
    assert run.usage["output_bytes"] == _stored(run.pk)


AMPLIFY = {"nodes": [{"id": "n", "type": "transform", "config": {"expression": "1"}}], "edges": [],
           "metadata": {"output": {"expression": "inputs.n.map(i, inputs.t + string(i))"}}}


def test_a_run_s_computed_output_counts_in_what_its_owner_s_runs_keep(engine: Any, user: Any, api: Any,
                                                                      settings: Any) -> None:
    """A run's ``metadata.output`` is an artifact it keeps (up to AOB_MAX_NODE_OUTPUT_BYTES), and was
    counted nowhere: 100 KB of inputs made a 10 MB output the owner's count never saw (a red team's
    measure), so starts went on past the bound. It counts from when it is stored now."""
    answer = _start(api, AMPLIFY, {"n": list(range(200)), "t": "x" * 3_000})
    assert answer.status_code == 201, answer.json()
    run = wait_for_run(answer.json()["run_id"])
    assert run.status == "completed" and run.output_artifact_id, (run.error, run.output_error)
    output_bytes = Artifact.objects.get(pk=run.output_artifact_id).size_bytes
    assert output_bytes > 600_000 > 10 * run.inputs_bytes

    assert run.usage.get("kept_bytes", 0) >= output_bytes
    assert _kept(user.pk) == _recounted(user.pk) == owner_stored_bytes(user.pk) > output_bytes + run.inputs_bytes
    settings.AOB_OWNER_STORAGE_BYTES = output_bytes  # its output alone passes the bound: the next start waits
    refused = _start(api, AMPLIFY, {"n": [1], "t": "y"})
    assert refused.status_code == 409 and refused.json()["error"] == "owner_storage_full", refused.json()


def test_each_node_run_s_resolved_input_counts_in_what_its_owner_s_runs_keep(engine: Any, user: Any, api: Any,
                                                                            remote: Any) -> None:
    """Each node run keeps its resolved config (``NodeRun.input``, up to AOB_MAX_RESOLVED_CONFIG_BYTES),
    counted nowhere: a loop of a step sending ``$inputs.big`` kept 6.2 MB in 30 passes and counted
    210 KB (a red team's measure). Each is counted as the database measured it, once: a retry's
    attempt wrote it before the one that completed, a loop's and a decision's rows are counted too."""
    from django.db.models import Sum

    definition = {"nodes": [
        {"id": "send", "type": "http", "retry": {"max_attempts": 2, "backoff_ms": 50},
         "config": {"url": f"{remote.base}/flaky/inputs-{user.pk}/1", "method": "POST", "payload": "$inputs.big"}},
        {"id": "again", "type": "loop", "config": {"max_iterations": 5, "loop_back_to": "send"}},
        {"id": "end", "type": "transform", "config": {"expression": "1"}}],
        "edges": [{"from": "send", "to": "again"}, {"from": "again", "to": "send"}, {"from": "again", "to": "end"}]}
    answer = _start(api, definition, {"big": "z" * 50_000})
    assert answer.status_code == 201, answer.json()

    run = wait_for_run(answer.json()["run_id"], timeout=60)

    assert run.status == "completed", run.error
    assert NodeRun.objects.get(run=run, node_id="send", iteration=0).attempts == 2  # the first one dropped
    node_inputs = NodeRun.objects.filter(run=run).aggregate(total=Sum("input_bytes"))["total"]
    assert node_inputs > 5 * 50_000
    definition_bytes = Artifact.objects.get(pk=run.base_artifact_id).size_bytes
    assert run.usage.get("kept_bytes", 0) == node_inputs + definition_bytes
    assert _kept(user.pk) == _recounted(user.pk) == run.inputs_bytes + run.usage["output_bytes"] + node_inputs \
        + definition_bytes


def test_a_definition_sent_with_a_run_counts_in_what_its_owner_s_runs_keep(engine: Any, user: Any, api: Any,
                                                                           settings: Any) -> None:
    """``POST /runs`` with ``workflow`` keeps that definition as the run's artifact (up to
    AOB_MAX_DEFINITION_BYTES a run), counted neither by AOB_MAX_DEFINITIONS_BYTES_PER_OWNER (saved
    versions only) nor by the owner's bound: a run a second sent 1 MiB each, counted as nothing.
    The start counts it as its own, and is refused when it would pass the bound."""
    def sent(k: int) -> dict:
        return {"nodes": [{"id": f"n{i}", "type": "transform", "description": f"{k}-{i}-" + "d" * 9_000,
                           "config": {"expression": "1"}} for i in range(12)], "edges": []}

    first = _start(api, sent(0), {})
    assert first.status_code == 201, first.json()
    run = wait_for_run(first.json()["run_id"])
    definition_bytes = Artifact.objects.get(pk=run.base_artifact_id).size_bytes
    assert definition_bytes > 100_000 and run.usage.get("kept_bytes", 0) >= definition_bytes
    assert _kept(user.pk) == _recounted(user.pk) > definition_bytes
    settings.AOB_OWNER_STORAGE_BYTES = owner_stored_bytes(user.pk) + 50_000  # room for inputs, not for a definition

    refused = _start(api, sent(1), {})

    assert refused.status_code == 409 and refused.json()["error"] == "owner_storage_full", refused.json()
    assert refused.json()["details"]["adding"] >= definition_bytes
    assert "its definition" in refused.json()["message"]
    assert Run.objects.filter(owner=user).count() == 1


def _chain(k: int) -> dict:
    """Twelve steps in a line, some 110 KB of definition."""
    return {"nodes": [{"id": f"n{i}", "type": "transform", "description": f"{k}-{i}-" + "d" * 9_000,
                       "config": {"expression": "1"}} for i in range(12)],
            "edges": [{"from": f"n{i}", "to": f"n{i + 1}"} for i in range(11)]}


def test_a_replay_counts_the_definition_it_keeps(engine: Any, user: Any, api: Any, settings: Any) -> None:
    """A replay keeps its source's definition (``base_artifact``, PROTECT) and counted none of it: once
    the source was deleted the definition sent with it was kept and counted by no run, so cycles of
    "start inline, replay, delete the source" kept definitions past the bound (a red team's find).
    It counts as the replay's own from its start."""
    def replay_then_delete(source: Run) -> Any:
        replayed = api.post(f"{API}/runs/{source.pk}/nodes/n11/replay", {}, format="json")
        if replayed.status_code == 201:
            assert wait_for_run(replayed.json()["run_id"]).status == "completed"
            assert api.post(f"{API}/runs/{source.pk}/delete").status_code == 204
        return replayed

    source = wait_for_run(_start(api, _chain(0), {}).json()["run_id"])
    definition_bytes = Artifact.objects.get(pk=source.base_artifact_id).size_bytes
    assert source.status == "completed" and definition_bytes > 100_000
    replay = Run.objects.get(pk=replay_then_delete(source).json()["run_id"])

    assert replay.base_artifact_id == source.base_artifact_id and not Run.objects.filter(pk=source.pk).exists()
    assert replay.usage.get("kept_bytes", 0) == definition_bytes + _node_inputs(replay.pk)
    assert _kept(user.pk) == _recounted(user.pk) == owner_stored_bytes(user.pk) >= definition_bytes
    # room for one more definition, not for its replay's copy of it as well
    settings.AOB_OWNER_STORAGE_BYTES = owner_stored_bytes(user.pk) + int(1.5 * definition_bytes)
    second = wait_for_run(_start(api, _chain(1), {}).json()["run_id"])
    refused = replay_then_delete(second)
    assert refused.status_code == 409 and refused.json()["error"] == "owner_storage_full", refused.json()
    assert refused.json()["details"]["adding"] >= definition_bytes


def test_a_tag_s_runs_count_the_version_they_keep_past_the_tag_s_delete(engine: Any, user: Any, api: Any,
                                                                        settings: Any) -> None:
    """A saved version's definition is bounded by AOB_MAX_DEFINITIONS_BYTES_PER_OWNER only while its
    tag lives; the runs that ran it keep it (PROTECT) past the tag's delete, and counted none of it:
    "save 1 MiB under a tag, start (or replay), delete the tag" kept definitions past both bounds (a
    red team's find). Every run counts the definition it keeps, whatever named it."""
    assert post_workflow(api, "kept", _chain(0)).status_code == 201
    run = wait_for_run(api.post(f"{API}/runs", {"tag": "kept", "inputs": {}}, format="json").json()["run_id"])
    replayed = api.post(f"{API}/runs/{run.pk}/nodes/n11/replay", {}, format="json")
    assert replayed.status_code == 201, replayed.json()
    replay = wait_for_run(replayed.json()["run_id"])
    definition_bytes = Artifact.objects.get(pk=run.base_artifact_id).size_bytes
    assert run.status == replay.status == "completed" and definition_bytes > 100_000

    assert api.delete(f"{API}/workflows/kept").status_code == 204

    assert Artifact.objects.filter(pk=run.base_artifact_id).exists()  # the runs keep it
    for kept in (run, replay):
        assert Run.objects.get(pk=kept.pk).usage.get("kept_bytes", 0) == definition_bytes + _node_inputs(kept.pk)
    assert _kept(user.pk) == _recounted(user.pk) == owner_stored_bytes(user.pk) >= 2 * definition_bytes
    # a tag's start is judged by the definition it would keep
    assert post_workflow(api, "again", _chain(1)).status_code == 201
    settings.AOB_OWNER_STORAGE_BYTES = owner_stored_bytes(user.pk) + definition_bytes // 2
    refused = api.post(f"{API}/runs", {"tag": "again", "inputs": {}}, format="json")
    assert refused.status_code == 409 and refused.json()["error"] == "owner_storage_full", refused.json()
    assert refused.json()["details"]["adding"] >= definition_bytes


def _node_inputs(run_id: Any) -> int:
    from django.db.models import Sum

    return NodeRun.objects.filter(run_id=run_id).aggregate(total=Sum("input_bytes"))["total"] or 0
