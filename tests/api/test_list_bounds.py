"""Lists answer within bounds however large what they list: the workflows list (and the web's
workflows page, and a search) reads each version's summary, never a definition; with
``materialize=true`` it carries definitions while they fit ``AOB_DETAILS_MAX_BYTES``, and a marker
linking to where the rest is read whole. Run details spend their budget on what they always carry
first. A run's patches are paged, and they and run details carry each patch's operations while they
fit, else a marker linking to the patch."""

from __future__ import annotations

import importlib
import random
import string
from typing import Any

from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from subflows.models import SubRun
from tests.conftest import client_for, set_inputs, stored_run, with_permissions
from workflows import results
from workflows.models import Artifact, Event, NodeRun, Run, RunPatch, WorkflowVersion, canonical_json, size_of
from workflows.services.artifacts import artifact_store
from workflows.services.definitions import version_summary, workflow_save

API = "/api/v1"
CONTENT = '"workflows_artifact"."content"'


def padded(name: str, kilobytes: int, nodes: int = 2) -> dict[str, Any]:
    """A valid definition of about ``kilobytes`` kB: its builder layout (which runs ignore) pads it."""
    return {"nodes": [{"id": f"n{i}", "type": "transform", "config": {"expression": "1"}} for i in range(nodes)],
            "edges": [{"from": f"n{i}", "to": f"n{i + 1}"} for i in range(nodes - 1)],
            "metadata": {"name": name.title(), "description": f"the {name} workflow",
                         "layout": {f"{i:06d}{'x' * 94}": [0, 0] for i in range(kilobytes * 10)}}}


def read(client: Any, path: str, query: dict[str, str] | None = None) -> tuple[Any, list[str]]:
    """The answer and the statements that made it (one request per capture: a request clears the log)."""
    with CaptureQueriesContext(connection) as reads:
        response = client.get(path, query or {})
    assert response.status_code == 200, response.content[:300]
    return response, [q["sql"] for q in reads.captured_queries]


def saved(owner: Any, tag: str, kilobytes: int, nodes: int = 2) -> int:
    """Save ``tag``; its definition's size in bytes, as stored."""
    return workflow_save(owner=owner, tag=tag, definition=padded(tag, kilobytes, nodes)).version.artifact.size_bytes


def test_the_workflows_list_a_search_and_the_web_page_read_no_definition(user: Any) -> None:
    for tag, nodes in (("alpha", 3), ("beta", 2), ("gamma", 5)):
        saved(user, tag, 100, nodes)
    api, browser = client_for(user), Client()
    browser.force_login(user)

    answers = [read(api, f"{API}/workflows"), read(api, f"{API}/workflows", {"q": "the beta"}),
               read(browser, "/"), read(browser, "/", {"q": "GAMMA work"})]

    for _, statements in answers:
        assert statements and not [sql for sql in statements if CONTENT in sql]
    (listed, _), (searched, _), (page, _), (found, _) = answers
    listed, searched = listed.json()["results"], searched.json()["results"]
    assert [(w["tag"], w["nodes_count"], w["edges_count"], w["name"], w["description"]) for w in listed] == [
        ("alpha", 3, 2, "Alpha", "the alpha workflow"), ("beta", 2, 1, "Beta", "the beta workflow"),
        ("gamma", 5, 4, "Gamma", "the gamma workflow")]
    assert "definition" not in listed[0]
    assert [w["tag"] for w in searched] == ["beta"]
    assert page.status_code == 200 and [w["tag"] for w in page.context["workflows"]] == ["alpha", "beta", "gamma"]
    assert [(w["tag"], w["nodes"], w["name"]) for w in found.context["workflows"]] == [("gamma", 5, "Gamma")]


def test_a_materialized_list_carries_definitions_while_they_fit(user: Any, settings: Any) -> None:
    sizes = {tag: saved(user, tag, kb) for tag, kb in (("a", 300), ("b", 300), ("c", 300), ("d", 300))}
    settings.AOB_DETAILS_MAX_BYTES = 1024 * 1024  # three fit, not four
    api = client_for(user)

    response = api.get(f"{API}/workflows", {"materialize": "true"})

    assert response.status_code == 200, response.content[:300]
    assert len(response.content) < settings.AOB_DETAILS_MAX_BYTES + 10_000
    listed = {w["tag"]: w for w in response.json()["results"]}
    assert all(listed[t]["definition"]["metadata"]["name"] == t.title() for t in "abc")
    assert listed["d"]["definition"] == {"truncated": True, "bytes": sizes["d"],
                                         "href": f"{API}/workflows/d?materialize=true"}
    assert api.get(listed["d"]["definition"]["href"]).json()["definition"] == padded("d", 300)
    assert listed["d"]["nodes_count"] == 2 and listed["d"]["name"] == "D"


def test_staff_read_another_owner_s_left_out_definition_from_its_artifact(make_user: Any, settings: Any) -> None:
    alice, admin = make_user("alice"), with_permissions(make_user("admin", is_staff=True), "workflows.view_workflow")
    saved(alice, "big", 200)
    settings.AOB_DETAILS_MAX_BYTES = 10_000
    staff, owner = client_for(admin), client_for(alice)

    [listed] = staff.get(f"{API}/workflows", {"scope": "global", "materialize": "true"}).json()["results"]

    artifact = alice.workflows.get(tag="big").current_version.artifact_id
    assert listed["definition"]["href"] == f"{API}/artifacts/{artifact}"
    assert staff.get(listed["definition"]["href"]).json()["content"] == padded("big", 200)
    assert owner.get(f"{API}/workflows", {"materialize": "true"}).json()["results"][0]["definition"]["href"] == (
        f"{API}/workflows/big?materialize=true")
    assert client_for(make_user("bob")).get(listed["definition"]["href"]).status_code == 404


def test_versions_saved_before_their_summary_get_it_from_their_definition(user: Any) -> None:
    """Migration 0011 fills the summary of the versions already saved, as a save takes it."""
    for tag, nodes in (("one", 1), ("two", 4)):
        saved(user, tag, 1, nodes)
    WorkflowVersion.objects.update(nodes_count=0, edges_count=0, metadata_name="", metadata_description="")

    with connection.cursor() as cursor:
        cursor.execute(importlib.import_module("workflows.migrations.0012_version_summary").BACKFILL)

    for version in WorkflowVersion.objects.all():
        content = Artifact.objects.get(pk=version.artifact_id).content
        assert {f: getattr(version, f) for f in version_summary(content)} == version_summary(content)
        assert version.nodes_count == len(content["nodes"]) > 0


# --- run details ---------------------------------------------------------------------------------

def test_run_details_spend_the_run_s_inputs_first(user: Any, settings: Any) -> None:
    """The run's inputs are spent first (then the definitions and patches): once they fit, a node
    field that would pass the budget after them is a marker."""
    run = stored_run(user)
    set_inputs(run, {"pad": "i" * 300_000})
    NodeRun.objects.create(run=run, node_id="a", node_type="transform", status="completed", attempts=1,
                           input={}, output={"pad": "o" * 300_000})
    settings.AOB_DETAILS_MAX_BYTES = 500_000

    body = client_for(user).get(f"{API}/runs/{run.pk}/details").json()

    assert body["run"]["inputs"] == {"pad": "i" * 300_000} and body["inputs_truncated"] is False
    [node] = body["nodes"]
    assert node["output"]["truncated"] is True and node["output"]["bytes"] > 300_000
    assert body["truncated"] is True


def test_run_details_carry_inputs_past_the_budget_as_a_link_to_the_run(user: Any, settings: Any) -> None:
    """Inputs reach AOB_MAX_RUN_INPUTS_BYTES (16 MiB) when a hook or a parent builds them; details,
    which the run page polls, carries them only while they fit, else a marker linking to the run,
    which answers them whole. The node's output then has the room."""
    run = stored_run(user)
    inputs = {"pad": "i" * 600_000}
    set_inputs(run, inputs)
    NodeRun.objects.create(run=run, node_id="a", node_type="transform", status="completed", attempts=1,
                           input={}, output={"pad": "o" * 300_000})
    settings.AOB_DETAILS_MAX_BYTES = 500_000
    client = client_for(user)

    body = client.get(f"{API}/runs/{run.pk}/details").json()

    cut = body["run"]["inputs"]
    assert cut == {"truncated": True, "bytes": size_of(canonical_json(inputs)), "href": f"{API}/runs/{run.pk}/inputs"}
    assert body["inputs_truncated"] is True
    assert body["nodes"][0]["output"] == {"pad": "o" * 300_000}
    assert body["truncated"] is True
    assert client.get(cut["href"]).json()["inputs"] == inputs
    assert Run.objects.get(pk=run.pk).inputs == inputs  # cut for the answer only


# --- a run's patches -------------------------------------------------------------------------------

def operations(seq: int, kilobytes: int) -> list[dict[str, Any]]:
    return [{"op": "test", "path": "/nodes/0/id", "value": "a"},
            {"op": "add", "path": f"/metadata/pad{seq}", "value": "p" * (kilobytes * 1024)}]


def patched_run(owner: Any, kilobytes: list[int]) -> Run:
    """A stored run with an applied patch of about ``kilobytes[i]`` kB of operations for each i
    (the rows only: nothing runs, nothing is applied)."""
    run = stored_run(owner)
    for seq, size in enumerate(kilobytes, start=1):
        ops = operations(seq, size)
        RunPatch.objects.create(run=run, seq=seq, operations=ops, op_count=len(ops), description=f"patch {seq}",
                                status="applied",
                                patch_artifact=artifact_store(kind="patch_set", content=ops),
                                before_artifact_id=run.base_artifact_id, after_artifact_id=run.base_artifact_id,
                                applied_at=timezone.now())
    Run.objects.filter(pk=run.pk).update(patch_seq=len(kilobytes))
    return Run.objects.get(pk=run.pk)


def marker(run: Run, seq: int) -> dict[str, Any]:
    size = RunPatch.objects.get(run=run, seq=seq).patch_artifact.size_bytes
    return {"truncated": True, "bytes": size, "href": f"{API}/runs/{run.pk}/patches/{seq}"}


def test_a_run_s_patches_are_paged_with_their_operations_while_they_fit(user: Any, settings: Any) -> None:
    run = patched_run(user, [300] * 5)
    settings.AOB_DETAILS_MAX_BYTES = 1024 * 1024  # three fit, not four
    api = client_for(user)

    response, statements = read(api, f"{API}/runs/{run.pk}/patches")

    assert len(response.content) < settings.AOB_DETAILS_MAX_BYTES + 10_000
    body = response.json()
    assert body["count"] == 5 and body["next"] is None
    assert [p["operations"] for p in body["results"]] == [operations(s, 300) for s in (1, 2, 3)] + [
        marker(run, 4), marker(run, 5)]
    assert all(p["op_count"] == 2 for p in body["results"])
    assert api.get(body["results"][4]["operations"]["href"]).json()["operations"] == operations(5, 300)
    counted = [sql for sql in statements if "COUNT(" in sql]
    assert counted and not [sql for sql in counted if "operations" in sql]  # the count reads no patch

    paged = api.get(f"{API}/runs/{run.pk}/patches", {"limit": 2, "offset": 2}).json()
    assert [p["seq"] for p in paged["results"]] == [3, 4] and "offset=4" in paged["next"]
    assert paged["results"][1]["operations"] == operations(4, 300)  # a page of its own: room for it


def test_run_details_carry_patch_operations_while_they_fit(user: Any, settings: Any) -> None:
    run = patched_run(user, [300] * 8)
    api = client_for(user)

    response = api.get(f"{API}/runs/{run.pk}/details")

    assert response.status_code == 200, response.content[:300]
    assert len(response.content) < settings.AOB_DETAILS_MAX_BYTES
    body = response.json()
    assert body["truncated"] is True and body["patches_count"] == 8
    assert [p["seq"] for p in body["patches"]] == list(range(1, 9)) and all(p["op_count"] == 2 for p in body["patches"])
    shown = [p["seq"] for p in body["patches"] if isinstance(p["operations"], list)]
    assert shown == [1, 2, 3]
    assert [p["operations"] for p in body["patches"][3:]] == [marker(run, s) for s in range(4, 9)]
    assert api.get(body["patches"][7]["operations"]["href"]).json()["operations"] == operations(8, 300)


def test_run_details_list_the_latest_patches_and_count_them_all(user: Any) -> None:
    run = patched_run(user, [0] * 105)
    api = client_for(user)

    body = api.get(f"{API}/runs/{run.pk}/details").json()

    assert body["patches_count"] == 105 and body["truncated"] is False
    assert [p["seq"] for p in body["patches"]] == list(range(6, 106))
    assert body["patches"][0]["operations"] == operations(6, 0)
    assert api.get(f"{API}/runs/{run.pk}/patches", {"limit": 1000}).json()["count"] == 105


# U+2028: three bytes stored, six as DRF's JSON renderer writes it ("\u2028"); a long text of it
# is counted at six bytes a stored byte (``answers.text_bytes``), a JSON value's at what it stores
WIDE = "\u2028"


def wide_patches(owner: Any, count: int, inputs: dict[str, Any] | None = None) -> Run:
    """A run with ``count`` applied patches, each described by 10,000 characters (an agent's to
    write: up to DESCRIPTION_MAX_CHARS, up to AOB_RUN_MAX_PATCHES = 500 of them)."""
    run = patched_run(owner, [0] * count)
    RunPatch.objects.filter(run=run).update(description=WIDE * 10_000)
    if inputs is not None:
        set_inputs(run, inputs)
    return run


def test_a_run_s_patches_carry_their_descriptions_while_they_fit_and_the_patch_answers_them_whole(
        user: Any, settings: Any) -> None:
    """100 descriptions of 60 kB each were sent whole, outside the answer's budget: 6 MB a page."""
    run = wide_patches(user, 100)
    api = client_for(user)

    response, statements = read(api, f"{API}/runs/{run.pk}/patches", {"limit": "1000"})

    assert len(response.content) <= 2 * settings.AOB_DETAILS_MAX_BYTES, len(response.content)
    listed = response.json()["results"]
    whole = [p["seq"] for p in listed if p["description"] == WIDE * 10_000]
    cut = [p for p in listed if isinstance(p["description"], dict)]
    assert whole and cut and len(whole) + len(cut) == 100
    assert cut[0]["description"]["href"] == f"{API}/runs/{run.pk}/patches/{cut[0]['seq']}"
    assert api.get(cut[0]["description"]["href"]).json()["description"] == WIDE * 10_000
    assert all(p["op_count"] == 2 for p in listed)


def test_run_details_carry_the_run_before_its_patches_descriptions(user: Any, settings: Any) -> None:
    """An agent's descriptions, counted before the run's inputs, pushed them out to a marker."""
    inputs = {"pad": "i" * 500_000}
    run = wide_patches(user, 100, inputs)
    api = client_for(user)

    response = api.get(f"{API}/runs/{run.pk}/details")

    assert response.status_code == 200, response.content[:300]
    assert len(response.content) <= 2 * settings.AOB_DETAILS_MAX_BYTES, len(response.content)
    body = response.json()
    assert body["run"]["inputs"] == inputs and body["inputs_truncated"] is False
    cut = [p for p in body["patches"] if isinstance(p["description"], dict)]
    assert cut and body["truncated"] is True
    assert api.get(cut[-1]["description"]["href"]).json()["description"] == WIDE * 10_000


def test_a_list_of_patches_reads_their_kept_count_never_their_operations(user: Any) -> None:
    """``jsonb_array_length(operations)`` read every listed patch's whole operations (an agent
    writes up to 1 MiB a patch) for one number: 40 patches of 500 kB, 2,600 blocks of 8 kB read
    for a page, measured as the buffers its statements touched (never as time). A patch stored
    keeps its count; one stored before the count was kept is counted when listed."""
    run = patched_run(user, [500] * 40)
    api = client_for(user)

    for path in (f"{API}/runs/{run.pk}/patches?limit=1000", f"{API}/runs/{run.pk}/details"):
        with CaptureQueriesContext(connection) as reads:
            assert api.get(path).status_code == 200
        touched = 0
        for sql in [q["sql"] for q in reads.captured_queries]:
            if sql.lstrip().upper().startswith("SELECT") and "workflows_runpatch" in sql:
                with connection.cursor() as cursor:
                    cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql)
                    plan = cursor.fetchone()[0][0]["Plan"]
                touched += plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0)
        assert touched <= 1000, f"{path}: {touched} blocks of 8 kB read for one page of 40 patches"

    RunPatch.objects.filter(run=run, seq=1).update(op_count=None)  # stored by the code before 0039
    listed = api.get(f"{API}/runs/{run.pk}/patches").json()["results"]
    assert [p["op_count"] for p in listed[:2]] == [2, 2]
    proposed = api.post(f"{API}/runs/{stored_run(user).pk}/patches", {"operations": [
        {"op": "replace", "path": "/nodes/0/config/expression", "value": "2"},
        {"op": "add", "path": "/metadata", "value": {}}]}, format="json")
    assert proposed.status_code == 201, proposed.content[:300]
    assert RunPatch.objects.get(pk=proposed.json()["id"]).op_count == 2 == proposed.json()["op_count"]


def test_lists_carry_workflows_versions_and_runs_texts_while_they_fit(make_user: Any, settings: Any) -> None:
    """A workflow's metadata.name (500 characters) and description (10,000), a version's
    description (10,000) and a run's error (8 KiB) were sent whole in every row, 1,000 rows a page:
    63 kB a workflow, 63 MB an answer."""
    owner = make_user("alice")
    for i in range(40):
        workflow_save(owner=owner, tag=f"w{i}", description=WIDE * 10_000, definition={
            "nodes": [{"id": "a", "type": "transform", "config": {"expression": str(i)}}], "edges": [],
            "metadata": {"name": WIDE * 500, "description": WIDE * 10_000}})
        workflow_save(owner=owner, tag="zz", description=WIDE * 10_000, definition={
            "nodes": [{"id": "a", "type": "transform", "config": {"expression": str(i)}}], "edges": []})
    error = {"error_type": "HttpError", "message": WIDE * 2000, "node_id": "a"}
    for _ in range(300):
        Run.objects.filter(pk=stored_run(owner).pk).update(status="failed", error=error)
    api = client_for(owner)

    workflows = api.get(f"{API}/workflows", {"limit": "1000"})
    versions = api.get(f"{API}/workflows/zz/versions", {"limit": "1000"})
    runs = api.get(f"{API}/runs", {"limit": "1000"})

    for answer in (workflows, versions, runs):
        assert answer.status_code == 200, answer.content[:300]
        assert len(answer.content) <= 2 * settings.AOB_DETAILS_MAX_BYTES, (answer.request["PATH_INFO"],
                                                                           len(answer.content))
    listed = workflows.json()["results"]
    assert len(listed) == 41 and listed[0]["name"] == WIDE * 500 and listed[0]["description"] == WIDE * 10_000
    cut = next(w for w in listed if isinstance(w["description"], dict))
    assert cut["description"]["href"] == f"{API}/workflows/{cut['tag']}?materialize=true"
    assert api.get(cut["description"]["href"]).json()["description"] == WIDE * 10_000
    listed = versions.json()
    assert len(listed) == 40 and listed[0]["description"] == WIDE * 10_000
    cut = next(v for v in listed if isinstance(v["description"], dict))
    assert cut["description"]["href"] == f"{API}/workflows/zz/versions/{cut['seq']}"
    assert api.get(cut["description"]["href"]).json()["description"] == WIDE * 10_000
    listed = runs.json()["results"]
    assert len(listed) == 300 and listed[0]["error"] == error
    cut = next(r for r in listed if r["error"].get("truncated"))
    assert cut["error"]["href"] == f"{API}/runs/{cut['run_id']}"
    assert api.get(cut["error"]["href"]).json()["error"] == error


def test_run_lists_carry_inputs_while_they_fit_and_the_web_list_reads_none(make_user: Any, settings: Any) -> None:
    """A run's inputs reach AOB_MAX_RUN_INPUTS_BYTES (16 MiB) when a hook or a parent builds them,
    and the lists answer up to 1,000 (API) or 500 (a workflow's runs) runs."""
    owner = make_user("ann")
    saved = workflow_save(owner=owner, tag="pad", definition=padded("pad", 1))
    runs = [stored_run(owner) for _ in range(3)]
    for i, run in enumerate(runs):
        set_inputs(run, {"pad": "p" * 300_000}, workflow=saved.workflow,
                                             created_at=timezone.now() - timezone.timedelta(minutes=3 - i))
    settings.AOB_DETAILS_MAX_BYTES = 700_000  # two fit
    api = client_for(owner)

    for path in (f"{API}/runs", f"{API}/workflows/pad/runs"):
        answer, _ = read(api, path)
        listed = answer.json()["results"] if isinstance(answer.json(), dict) else answer.json()
        assert len(answer.content) < 700_000 + 10_000
        marked = [r for r in listed if r["inputs"].get("truncated")]
        assert len(listed) == 3 and len(marked) == 1, path
        assert marked[0]["inputs"]["href"] == f"{API}/runs/{marked[0]['run_id']}/inputs"
        assert marked[0]["inputs"]["bytes"] > 300_000
        assert api.get(marked[0]["inputs"]["href"]).json()["inputs"] == {"pad": "p" * 300_000}

    web = Client()
    web.force_login(owner)
    page, statements = read(web, "/runs/")
    assert page.content.count(b"/runs/") >= 3
    assert not any('"workflows_run"."inputs"' in sql for sql in statements), statements


def test_a_run_s_answers_carry_its_inputs_while_they_fit_and_inputs_answers_them_whole(user: Any, make_user: Any,
                                                                                         settings: Any) -> None:
    """Clients poll GET /runs/{id}; inputs a hook or a parent built reach 16 MiB. The run is read
    with its inputs measured in the database and loaded only when they fit the answer's budget."""
    run = stored_run(user)
    inputs = {"pad": "i" * 600_000}
    set_inputs(run, inputs)
    settings.AOB_DETAILS_MAX_BYTES = 500_000
    client = client_for(user)

    with CaptureQueriesContext(connection) as statements:
        body = client.get(f"{API}/runs/{run.pk}").json()

    marker = {"truncated": True, "bytes": size_of(canonical_json(inputs)), "href": f"{API}/runs/{run.pk}/inputs"}
    assert body["inputs"] == marker
    run_reads = [q["sql"] for q in statements.captured_queries if 'FROM "workflows_run"' in q["sql"]]
    assert len(run_reads) == 1 and "CASE WHEN" in run_reads[0], run_reads  # the inputs left where they are
    cancelled = client.post(f"{API}/runs/{run.pk}/cancel").json()["inputs"]  # every run answer
    assert (cancelled["truncated"], cancelled["href"]) == (True, marker["href"])
    whole = client.get(marker["href"])
    assert whole.json() == {"run_id": str(run.pk), "inputs": inputs}
    assert client_for(make_user("mallory")).get(marker["href"]).status_code == 404
    settings.AOB_DETAILS_MAX_BYTES = 1024 * 1024
    assert client.get(f"{API}/runs/{run.pk}").json()["inputs"] == inputs



def test_a_timeline_is_bounded_however_many_attempts_and_errors_its_node_runs_hold(user: Any, settings: Any) -> None:
    """Up to 10,000 node runs of 20 attempts, each with an error of up to 8 KiB: the timeline read
    and sent them all (hundreds of MB). Now each attempt's error is the start of its message, cut in
    the database, and items go in while they fit the answer's budget."""
    settings.AOB_DETAILS_MAX_BYTES = 16 * 1024
    run, now = stored_run(user), timezone.now()
    log = [{"attempt": n, "status": "failed", "duration_ms": 5, "error": {"error_type": "E", "message": "x" * 8000}}
           for n in range(1, 21)]
    NodeRun.objects.bulk_create(NodeRun(run=run, node_id="a", iteration=i, node_type="transform", status="failed",
                                        attempts=20, attempt_log=log, queued_at=now, started_at=now, finished_at=now)
                                for i in range(40))
    Event.objects.bulk_create(Event(run=run, seq=1 + i * 20 + n, type="node_started", node_id="a",
                                    data={"iteration": i, "attempt": n + 1}, created_at=now)
                              for i in range(40) for n in range(20))

    response, _ = read(client_for(user), f"{API}/runs/{run.pk}/timeline")

    assert len(response.content) <= results.TIMELINE_BUDGETS * 16 * 1024 + 2048  # the budget, the run's own fields
    body = response.json()
    assert body["truncated"] is True and 0 < len(body["items"]) < 40
    attempts = [a for item in body["items"] for a in item["attempt_log"]]
    assert len(attempts) == 20 * len(body["items"]) and all(a["started_at"] for a in attempts)
    assert {a["error"] for a in attempts} == {"x" * results.TIMELINE_ERROR_CHARS + "… (8000 characters in all)"}


def test_a_timeline_reads_each_attempt_log_once(user: Any) -> None:
    """The attempts' errors are cut in the database, from each node run's whole attempt log (up to
    20 attempts of 8 KiB errors): it was read twice (its type asked, then its elements), 6,000
    blocks of 8 kB for 2,700 of logs; measured as the buffers the timeline's statements on the node
    runs touched, against the size of the table's out-of-row storage, never as time."""
    run = stored_run(user)
    log = [{"attempt": a, "status": "failed", "duration_ms": 5,
            "error": {"error_type": "HTTPStatusError", "message": "".join(random.Random(a).choices(
                string.ascii_letters, k=7000))}} for a in range(1, 21)]
    NodeRun.objects.bulk_create([NodeRun(run=run, node_id="fetch", iteration=i, node_type="http", status="failed",
                                         attempts=20, attempt_log=log) for i in range(150)])

    response, statements = read(client_for(user), f"{API}/runs/{run.pk}/timeline")

    touched = 0
    with connection.cursor() as cursor:
        for sql in statements:
            if sql.lstrip().upper().startswith("SELECT") and "workflows_noderun" in sql:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql)
                plan = cursor.fetchone()[0][0]["Plan"]
                touched += plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0)
        cursor.execute("SELECT pg_relation_size(reltoastrelid) / 8192 FROM pg_class WHERE relname = 'workflows_noderun'")
        (logs,) = cursor.fetchone()
    assert logs > 2000 and touched < 1.5 * logs, f"{touched} blocks touched for {logs} of attempt logs"
    assert len(response.json()["items"]) == 150


def test_every_answer_judges_a_run_s_inputs_by_the_one_size_its_start_stored(user: Any, settings: Any) -> None:
    """Inputs were measured three ways: in characters by the database (a run's read, the lists),
    ASCII-escaped by Python (a cancel's answer, the first event). Non-ASCII inputs near the budget
    were whole in one answer and a marker in another, with different sizes. Now the start measures
    them once, in bytes as stored, and every answer judges them by that."""
    from workflows.services.runs import run_start

    settings.AOB_DETAILS_MAX_BYTES = 40_000
    inputs = {"s": "é" * 30_000}  # 30,008 characters; 60,008 bytes as stored; 180,008 ASCII-escaped
    run = run_start(owner=user, definition={"nodes": [{"id": "a", "type": "transform",
                                                       "config": {"expression": "1"}}], "edges": []}, inputs=inputs)
    client = client_for(user)
    marker = {"truncated": True, "bytes": 60_008, "href": f"{API}/runs/{run.pk}/inputs"}

    read = client.get(f"{API}/runs/{run.pk}").json()["inputs"]
    [listed] = [r["inputs"] for r in client.get(f"{API}/runs").json()["results"] if r["run_id"] == str(run.pk)]
    details = client.get(f"{API}/runs/{run.pk}/details").json()["run"]["inputs"]
    cancelled = client.post(f"{API}/runs/{run.pk}/cancel").json()["inputs"]
    [started] = [e["data"]["inputs"] for e in client.get(f"{API}/runs/{run.pk}/events").json()
                 if e["type"] == "workflow_started"]

    assert Run.objects.get(pk=run.pk).inputs_bytes == 60_008
    assert read == listed == details == cancelled == marker
    assert started == inputs  # the event's own bound (64 KiB), by the same size


def test_an_artifact_is_answered_as_its_stored_text_never_parsed(user: Any) -> None:
    """Where every output's marker leads: parsing an output into Python objects and rendering them
    again took three times as long as writing its text (18 MB: 0.29–0.34 s against 0.11 s here),
    and many times its size in memory."""
    run = stored_run(user)
    content = {"rows": [{"n": i, "s": "é" * 10} for i in range(20_000)]}
    artifact = artifact_store(kind="node_io", content=content)
    NodeRun.objects.create(run=run, node_id="a", node_type="transform", status="completed", attempts=1,
                           output_artifact=artifact)

    response, statements = read(client_for(user), f"{API}/artifacts/{artifact.pk}")

    body = response.json()
    assert body["content"] == content and (body["id"], body["kind"]) == (artifact.pk, "node_io")
    assert body["size_bytes"] == artifact.size_bytes and body["created_at"]
    content_reads = [sql for sql in statements if CONTENT in sql]
    assert content_reads and all(f"({CONTENT})::text" in sql for sql in content_reads), content_reads


def test_every_owner_s_workflows_page_in_a_total_order(make_user: Any) -> None:
    """Staff list every owner's workflows; owners share tags, and an order by tag alone let one
    offset page repeat a row another page had and skip one."""
    owners = [make_user(name) for name in ("ann", "bea", "cyd")]
    for owner in owners:
        for tag in ("deploy", "report"):
            saved(owner, tag, 1)
    staff = client_for(with_permissions(make_user("root", is_staff=True), "workflows.view_workflow"))

    response, statements = read(staff, f"{API}/workflows", {"scope": "global", "limit": "2", "offset": "2"})
    pages = [staff.get(f"{API}/workflows", {"scope": "global", "limit": "2", "offset": str(o)}).json()["results"]
             for o in (0, 2, 4)]

    listed = [(w["tag"], w["owner"]) for page in pages for w in page]
    assert sorted(listed) == sorted((tag, o.username) for o in owners for tag in ("deploy", "report"))
    assert [tag for tag, _ in listed] == ["deploy"] * 3 + ["report"] * 3
    [page_read] = [sql for sql in statements if 'FROM "workflows_workflow"' in sql and "LIMIT" in sql]
    assert page_read.endswith('ORDER BY "workflows_workflow"."tag" ASC, "workflows_workflow"."id" ASC LIMIT 2 OFFSET 2')


def test_run_details_carry_refusals_operations_while_they_fit_and_link_the_rest(user: Any, settings: Any) -> None:
    """Details list a run's latest 50 refused patches, each kept with up to 64 KiB of operations:
    they went in outside the budget (3 MB on a 1 MiB answer). Measured in bytes: counted in
    characters, non-ASCII operations passed it again."""
    from workflows.models import PatchRefusal

    run = stored_run(user)
    settings.AOB_DETAILS_MAX_BYTES = 200_000
    big = [{"op": "add", "path": "/nodes/-", "value": {"pad": "é" * 30_000}}]  # 60 kB: bytes, not characters
    PatchRefusal.objects.bulk_create(PatchRefusal(run=run, node_id="agent", agent=True, rule="r", message="no",
                                                  operations=big) for _ in range(10))
    client = client_for(user)

    response = client.get(f"{API}/runs/{run.pk}/details")

    assert len(response.content) < 200_000 + 20_000  # the budget, and what details always carry
    body = response.json()
    shown = [r["operations"] for r in body["patch_refusals"]]
    assert len(shown) == 10 and body["truncated"] is True
    assert 0 < shown.count(big) < 10
    markers = [op for op in shown if op != big]
    assert all(m["truncated"] is True and m["bytes"] > 60_000 for m in markers)
    whole = client.get(markers[0]["href"])
    assert whole.status_code == 200 and whole.json()["operations"] == big
    other = stored_run(user)
    assert client.get(f"{API}/runs/{other.pk}/refusals/{whole.json()['id']}").status_code == 404


# --- a run's events ------------------------------------------------------------------------------

def test_an_event_whose_data_passes_its_bound_is_stored_and_pushed_as_a_marker(user: Any) -> None:
    """Each writer bounded its own events, and some did not (an approver's comment of 10,000
    characters, an agent's patch description, the nodes a cancel stopped): now every event written
    through ``events.numbered`` is at most ``EVENT_VALUE_MAX_BYTES`` as stored, keeping its small
    identifying keys. 40,000 characters, 80,000 bytes: a count of characters would let it through."""
    from django.db import transaction

    from workflows.engine import events

    run = stored_run(user)
    large = {"approval_id": 7, "iteration": 2, "approve": True, "user": "alice", "comment": "é" * 40_000}
    small = {"iteration": 3, "comment": "é" * 30_000}  # 60,045 bytes: whole

    with transaction.atomic():
        appended = events.append(run.pk, user.pk, [("approval_decided", "gate", large),
                                                   ("approval_decided", "gate", small)])

    marker = {"approval_id": 7, "iteration": 2, "approve": True, "user": "alice", "truncated": True,
              "bytes": size_of(canonical_json(large))}
    assert marker["bytes"] > events.EVENT_VALUE_MAX_BYTES
    assert list(Event.objects.filter(run=run).order_by("seq").values_list("data", flat=True)) == [marker, small]
    assert [e.as_dict()["data"] for e in appended] == [marker, small]  # the frames pushed after commit


def test_a_page_of_events_stops_at_its_byte_budget_and_its_next_link_continues_it(user: Any, settings: Any) -> None:
    """Pages held 1,000 events whatever their size (up to 64 KiB each: 64 MB an answer). Now a
    page stops once its events reach ``AOB_DETAILS_MAX_BYTES``, with at least one (an event larger
    than the budget still goes, alone), and ``Link: rel="next"`` continues after its last event:
    every event comes once, in order."""
    settings.AOB_DETAILS_MAX_BYTES = 30_000
    run, now = stored_run(user), timezone.now()
    pads = [10_000] * 8 + [40_000] + [10_000] * 5  # seq 9 alone passes the budget
    Event.objects.bulk_create(Event(run=run, seq=seq, type="node_completed", node_id="a",
                                    data={"iteration": seq, "pad": "x" * pad}, created_at=now)
                              for seq, pad in enumerate(pads, start=1))
    client, url, pages = client_for(user), f"{API}/runs/{run.pk}/events", []

    while url:
        response = client.get(url)
        assert response.status_code == 200, response.content[:300]
        pages.append([e["seq"] for e in response.json()])
        assert len(response.content) <= 30_000 or len(pages[-1]) == 1
        link = response.headers.get("Link", "")  # <http://testserver/api/v1/...?after=N>; rel="next"
        url = link[1:link.index(">")].removeprefix("http://testserver") if link else ""

    assert pages == [[1, 2], [3, 4], [5, 6], [7, 8], [9], [10, 11], [12, 13], [14]]

RUN_INPUTS = '"workflows_run"."inputs"'
NODE_VALUES = ('"workflows_noderun"."input"', '"workflows_noderun"."output"', '"workflows_noderun"."attempt_log"')


def statements(client: Any, path: str) -> tuple[Any, list[str]]:
    with CaptureQueriesContext(connection) as reads:
        response = client.get(path)
    assert response.status_code == 200, response.content[:300]
    return response, [q["sql"] for q in reads.captured_queries]


def test_a_run_s_family_reads_no_child_inputs_nor_node_values(make_user: Any) -> None:
    """``run_family`` (``GET /runs/{id}/family`` and the run page's family) ``select_related``s each
    child run and each parent node run whole: a child's inputs (up to 16 MiB), the workflow node's
    resolved input (16 MiB), output (32 MiB) and attempt log, for every child the run ever started
    (a loop may start thousands), to answer an id, a node id and a status each. Measured: 2,000
    children with 50 kB inputs, node input and output each: 0.88 s for the API (about 300 MB read)
    and 1.26 s for the run page; at the bounds, gigabytes for one page view. Now only what a
    relative is answered with is read (``subflows.selectors.RELATIVE``)."""
    alice = make_user("alice")
    parent = stored_run(alice)
    blob = {"blob": "x" * 500_000}
    children = Run.objects.bulk_create([Run(owner=alice, base_artifact=parent.base_artifact,
                                            current_artifact=parent.base_artifact, inputs=blob, inputs_bytes=500_012)
                                        for _ in range(4)])
    nodes = NodeRun.objects.bulk_create([NodeRun(run=parent, node_id="child", iteration=i, node_type="workflow",
                                                 status="completed", input=blob, output=blob, attempt_log=[blob])
                                         for i in range(4)])
    SubRun.objects.bulk_create([SubRun(parent_run=parent, parent_node_run=node, child_run=child)
                                for node, child in zip(nodes, children, strict=True)])
    browser = Client()
    browser.force_login(alice)

    for client, path in ((client_for(alice), f"{API}/runs/{parent.pk}/family"), (browser, f"/runs/{parent.pk}/")):
        response, sql = statements(client, path)
        family = [s for s in sql if "subflows_subrun" in s]
        assert family, path
        assert [c for c in (RUN_INPUTS, *NODE_VALUES) if any(c in s for s in family)] == [], path
    assert len(client_for(alice).get(f"{API}/runs/{parent.pk}/family").json()["children"]) == 4


def test_a_run_s_family_answers_a_page_of_its_children_with_their_total_and_the_run_page_says_how_many_more(
        make_user: Any) -> None:
    """``GET /runs/{id}/family`` and the run page listed every child of the run, up to
    AOB_MAX_NODE_RUNS_PER_RUN (10,000): measured, 0.6 s and 890 kB for one API answer, 2 s and
    1.4 MB for one page view, for any user whose loop starts that many. Now the API answers a page
    (``CHILDREN_SHOWN`` by default, ``?limit=`` at most 1,000) with ``children_total`` and ``next``,
    and the page shows as many and says how many more."""
    from subflows.selectors import CHILDREN_SHOWN

    alice = make_user("alice")
    parent = stored_run(alice)
    count = CHILDREN_SHOWN * 2 + 50
    children = Run.objects.bulk_create([Run(owner=alice, base_artifact=parent.base_artifact,
                                            current_artifact=parent.base_artifact) for _ in range(count)])
    nodes = NodeRun.objects.bulk_create([NodeRun(run=parent, node_id="child", iteration=i, node_type="workflow",
                                                 status="completed") for i in range(count)])
    SubRun.objects.bulk_create([SubRun(parent_run=parent, parent_node_run=node, child_run=child)
                                for node, child in zip(nodes, children, strict=True)])
    client, url, seen = client_for(alice), f"{API}/runs/{parent.pk}/family", []

    while url:
        answer = client.get(url).json()
        assert len(answer["children"]) <= CHILDREN_SHOWN and answer["children_total"] == count, answer["next"]
        seen += [child["run_id"] for child in answer["children"]]
        url = (answer["next"] or "").removeprefix("http://testserver")

    assert sorted(seen) == sorted(str(child.pk) for child in children) and len(seen) == count
    assert len(client.get(f"{API}/runs/{parent.pk}/family", {"limit": 5000}).json()["children"]) == count  # a page holds up to 1,000
    browser = Client()
    browser.force_login(alice)
    page = browser.get(f"/runs/{parent.pk}/").content.decode()
    assert page.count('(node <span class="mono">child</span>') == CHILDREN_SHOWN
    assert f"and {count - CHILDREN_SHOWN} more" in page
