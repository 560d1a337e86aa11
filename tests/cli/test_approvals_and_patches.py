"""approvals list, approve by run and node, reject by id; patch propose (against the definition it was
written for) / list (paged) / show on a parked run."""

from __future__ import annotations

from tests.cli.test_runs import event_types
from tests.conftest import wait_for_run
from tests.engine.flow import wait_until


def hitl() -> dict:
    return {"nodes": [{"id": "prep", "type": "transform", "config": {"expression": "{'amount': 42}"}},
                      {"id": "review", "type": "hitl", "config": {"message": "ok?"}},
                      {"id": "pay", "type": "transform", "config": {"expression": "{'paid': nodes.prep.amount}"}}],
            "edges": [{"from": "prep", "to": "review"},
                      {"from": "review", "to": "pay", "condition": "$.approved == true"}]}


def start_parked(as_alice, path: str) -> str:
    run_id = str(as_alice("-o", "json", "run", "start", path).json()["run_id"])
    run = wait_for_run(run_id, statuses={"waiting_for_approval", "completed", "failed"})
    assert run.status == "waiting_for_approval", run.error
    return run_id


def test_patch_then_approve_by_run_and_node(engine, as_alice, write_json):
    run_id = start_parked(as_alice, write_json("hitl.json", hitl()))

    inbox = as_alice("approvals", "list")
    assert inbox.code == 0, inbox.err
    header, row = inbox.lines()
    assert header.split() == ["ID", "RUN", "NODE", "ASKER", "STATUS", "DEADLINE", "MESSAGE"]
    assert row.split()[1:] == [run_id, "review", "alice", "pending", "-", "ok?"]
    assert as_alice("-o", "json", "approvals", "list", "--asked-by", "bob").json()["results"] == []

    ops = [{"op": "add", "path": "/nodes/-", "value": {"id": "audit", "type": "transform",
                                                        "config": {"expression": "'logged'"}}},
           {"op": "add", "path": "/edges/-", "value": {"from": "pay", "to": "audit"}}]
    proposed = as_alice("patch", "propose", run_id, write_json("ops.json", ops), "-d", "audit after paying")
    assert proposed.code == 0, proposed.err
    assert proposed.lines()[0] == f"patch 1 of run {run_id}: applied"
    listed = as_alice("patch", "list", run_id).lines()
    assert listed[1].split()[:4] == ["1", "applied", "2", "-"] and listed[1].endswith("audit after paying")
    shown = as_alice("-o", "json", "patch", "show", run_id, "1").json()
    assert shown["operations"] == ops and shown["status"] == "applied"
    more = [{"op": "add", "path": "/nodes/-", "value": {"id": "note", "type": "transform", "config": {"expression": "1"}}},
            {"op": "add", "path": "/edges/-", "value": {"from": "audit", "to": "note"}}]
    assert as_alice("patch", "propose", run_id, write_json("more.json", more)).code == 0
    first = as_alice("patch", "list", run_id, "--limit", "1").lines()
    assert [line.split()[0] for line in first[1:-1]] == ["1"] and first[-1] == "(1 of 2; --offset 1 for more)"
    assert [line.split()[0] for line in as_alice("patch", "list", run_id, "--offset", "1").lines()[1:]] == ["2"]
    status = as_alice("run", "status", run_id)
    assert "2 patch(es): `aob patch list" in status.out
    # what a waiting node waits for, in the server's words (NodeRun.WAITING_FOR)
    review = next(line for line in status.lines() if line.startswith("review "))
    assert review.split()[2] == "waiting" and review.endswith("waiting for a person's decision (its approval)")

    approved = as_alice("approve", run_id, "review", "--comment", "fine")
    assert approved.code == 0, approved.err
    assert approved.out.startswith("approved approval ") and approved.out.strip().endswith("now approved")

    watched = as_alice("run", "watch", run_id)
    assert watched.code == 0, watched.err
    types = event_types(watched.lines())
    assert ("patch_applied", "-") in types and ("approval_decided", "review") in types
    assert ("node_completed", "audit") in types and types[-1] == ("workflow_completed", "-")


def test_reject_by_approval_id_and_watch_by_polling(engine, as_alice, write_json):
    run_id = start_parked(as_alice, write_json("hitl.json", hitl()))
    (approval,) = as_alice("-o", "json", "approvals", "list", "--run", run_id).json()["results"]

    rejected = as_alice("-o", "json", "reject", str(approval["id"]), "-m", "no")
    assert rejected.code == 0, rejected.err
    assert rejected.json()["status"] == "rejected"

    watched = as_alice("run", "watch", run_id, "--poll")
    assert watched.code == 0
    assert ("node_skipped", "pay") in event_types(watched.lines())


def test_the_inbox_says_how_many_more_wait_and_pages_on_to_them(engine, as_alice, write_json):
    """``--limit`` showed one page and never said more waited, nor could the CLI reach them."""
    gates = {"nodes": [{"id": f"gate{i}", "type": "hitl", "config": {"message": f"gate {i}?"}} for i in range(3)],
             "edges": []}
    run_id = start_parked(as_alice, write_json("gates.json", gates))
    wait_until(lambda: as_alice("-o", "json", "approvals", "list", "--run", run_id).json()["count"] == 3,
               what="three gates asking")

    first = as_alice("approvals", "list", "--run", run_id, "--limit", "2").lines()
    assert len(first) == 4 and first[-1] == "(2 of 3; --offset 2 for more)", first
    rest = as_alice("approvals", "list", "--run", run_id, "--limit", "2", "--offset", "2").lines()
    assert len(rest) == 2 and {line.split()[2] for line in [*first[1:3], rest[1]]} == {"gate0", "gate1", "gate2"}


def test_a_patch_proposed_against_the_definition_status_showed_is_refused_once_another_changed_it(
        engine, as_alice, write_json):
    """``run status`` names the run's definition; ``patch propose --base-artifact-id`` (or the
    file's ``base_artifact_id``) sends it, and a patch written against a definition another patch
    has changed since is refused naming the current one, where its positions applied to whatever
    was current."""
    run_id = start_parked(as_alice, write_json("hitl.json", hitl()))
    shown = next(line for line in as_alice("run", "status", run_id).lines() if line.startswith("definition "))
    read = shown.split()[1]
    audit = [{"op": "add", "path": "/nodes/-", "value": {"id": "audit", "type": "transform",
                                                          "config": {"expression": "'logged'"}}},
             {"op": "add", "path": "/edges/-", "value": {"from": "pay", "to": "audit"}}]

    applied = as_alice("-o", "json", "patch", "propose", run_id, write_json("audit.json", audit),
                       "--base-artifact-id", read)
    assert applied.code == 0 and applied.json()["before_artifact_id"] == read, applied.err
    stale = as_alice("patch", "propose", run_id, write_json("bound.json", {
        "operations": [{"op": "add", "path": "/nodes/2/retry", "value": {"max_attempts": 1}}],
        "base_artifact_id": read}))
    assert stale.code == 1 and stale.err.startswith(
        f"error: the run's definition is {applied.json()['artifact_id']} now; these operations were written "
        f"against {read}"), stale.err
    assert [p["seq"] for p in as_alice("-o", "json", "patch", "list", run_id).json()["results"]] == [1]


def test_approve_by_run_and_node_where_two_passes_of_a_loop_wait_names_their_ids(engine, as_alice, write_json):
    """Naming a gate by run and node where a loop's two passes wait decides neither: the server
    says ``ambiguous`` with their ids, and the CLI how to decide one by its id."""
    from tests.approvals.test_api import looped_gate

    run_id = str(as_alice("-o", "json", "run", "start", write_json("loop.json", looped_gate(["alice"]))).json()["run_id"])

    def pending() -> list:
        return as_alice("-o", "json", "approvals", "list", "--run", run_id).json()["results"]

    two = wait_until(lambda: sorted(a["id"] for a in pending()) if len(pending()) == 2 else None, timeout=20,
                     what="both passes' gates asking")

    refused = as_alice("approve", run_id, "review")
    assert refused.code == 1 and "Traceback" not in refused.err
    assert f"{two[0]}, {two[1]}" in refused.err
    assert f"hint: decide one by its id: `aob approve {two[0]}`" in refused.err
    assert sorted(a["id"] for a in pending()) == two  # neither decided

    assert as_alice("approve", str(two[0])).code == 0
    assert as_alice("approve", run_id, "review").code == 0  # the one left waiting
    assert wait_for_run(run_id).status == "completed"


def test_patch_list_says_where_to_read_a_description_too_long_to_list(as_alice, alice):
    """Past the answer's byte budget (1 MiB) a patch's description is a marker ({"truncated",
    "bytes", "href"}), and ``patch list`` printed the dict in its column."""
    from tests.cli.test_workflows import LONG
    from tests.conftest import stored_run
    from workflows.models import RunPatch

    run = stored_run(alice)
    at = run.base_artifact_id
    RunPatch.objects.bulk_create([RunPatch(run=run, seq=seq, operations=[], op_count=0, description=LONG,
                                           status="applied", patch_artifact_id=at, before_artifact_id=at,
                                           after_artifact_id=at) for seq in range(1, 31)])

    listed = as_alice("patch", "list", str(run.pk))

    assert listed.code == 0, listed.err[-2000:]
    rows = {line.split()[0]: line for line in listed.lines()[1:]}
    assert rows["1"].endswith(LONG)
    assert rows["30"].endswith(f"(too long to list: 40000 bytes, see /api/v1/runs/{run.pk}/patches/30)")
