"""A prune is bounded: over the API it starts no batch, and no chunk of a run's rows, after
``AOB_PRUNE_REQUEST_S`` and says what is left; no transaction of it deletes more than a chunk
(``AOB_RETENTION_CHUNK_ROWS``) of a run's rows or a batch (``AOB_RETENTION_BATCH_SIZE``) of runs; a
dry run counts each kind of row up to ``AOB_PRUNE_PREVIEW_CAP``."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from django.db import connection
from django.utils import timezone

from retention import services
from retention.services import prune
from tests.conftest import client_for, stored_run, with_permissions
from workflows.models import Event, NodeRun, Run


def old_runs(owner: Any, n: int) -> list[Any]:
    runs = [stored_run(owner) for _ in range(n)]
    Run.objects.filter(pk__in=[r.pk for r in runs]).update(
        status="completed", finished_at=timezone.now() - timezone.timedelta(days=45))
    return runs


def test_a_prune_over_the_api_stops_at_its_time_and_says_the_rest_is_left(db: Any, make_user: Any,
                                                                        settings: Any) -> None:
    staff = with_permissions(make_user("ops", is_staff=True), "workflows.view_run", "workflows.delete_run")
    runs = old_runs(staff, 3)
    settings.AOB_PRUNE_REQUEST_S = 0  # out of time before the first batch (start-up allows 1 to 600)

    answer = client_for(staff).post("/api/v1/prune", {}, format="json")

    assert answer.status_code == 200
    assert answer.json() == {"runs": 0, "artifacts": 0, "hook_deliveries": 0, "schedule_firings": 0, "idempotency_keys": 0, "sessions": 0,
                             "crontabs": 0, "finished": False}
    assert Run.objects.filter(pk__in=[r.pk for r in runs]).count() == 3
    # the next prune takes the rest
    assert prune(batch_size=2) | {"artifacts": 0} == {"runs": 3, "artifacts": 0, "hook_deliveries": 0,
                                                      "schedule_firings": 0, "idempotency_keys": 0, "sessions": 0, "crontabs": 0,
                                                      "finished": True}


def test_a_dry_run_counts_up_to_its_cap_and_names_what_reached_it(db: Any, make_user: Any, settings: Any) -> None:
    staff = with_permissions(make_user("ops", is_staff=True), "workflows.view_run", "workflows.delete_run")
    old_runs(staff, 3)
    settings.AOB_PRUNE_PREVIEW_CAP = 2

    preview = client_for(staff).post("/api/v1/prune", {"dry_run": True}, format="json").json()

    assert preview["dry_run"] is True and preview["runs"] == 2 and "runs" in preview["at_least"]
    assert preview["events"] == 0 and "events" not in preview["at_least"]
    settings.AOB_PRUNE_PREVIEW_CAP = 100
    assert prune(dry_run=True)["runs"] == 3 and prune(dry_run=True)["at_least"] == []


def big_old_runs(owner: Any, n: int, *, node_runs: int, events: int) -> list[Run]:
    """Finished runs past retention, each with ``node_runs`` iterations of node ``a`` and ``events`` events."""
    runs = old_runs(owner, n)
    for run in runs:
        NodeRun.objects.bulk_create([NodeRun(run=run, node_id="a", iteration=i, node_type="transform",
                                             status="completed", consumed=True, attempts=1, output=i)
                                     for i in range(node_runs)], batch_size=5000)
        Event.objects.bulk_create([Event(run=run, seq=i, type="node_completed", node_id="a", data={})
                                   for i in range(events)], batch_size=5000)
    return runs


class RowsPerTransaction:
    """Rows each DELETE removed, summed per transaction (the test's ``db`` wraps everything, so a
    prune's ``transaction.atomic`` is a savepoint: from SAVEPOINT to its RELEASE); ``committed``
    counts the transactions that deleted a row."""

    def __init__(self) -> None:
        self.current = self.largest = self.committed = 0

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
        result = execute(sql, params, many, context)
        head = sql.lstrip()[:20].upper()
        if head.startswith("SAVEPOINT"):
            self.current = 0
        elif head.startswith("RELEASE") and self.current:
            self.committed += 1
        elif head.startswith("DELETE"):
            self.current += max(context["cursor"].rowcount, 0)
            self.largest = max(self.largest, self.current)
        return result


def test_no_prune_transaction_deletes_more_than_a_chunk_of_a_runs_rows(db: Any, make_user: Any,
                                                                        settings: Any) -> None:
    """A batch is counted in runs, and a run may hold AOB_MAX_NODE_RUNS_PER_RUN (10,000) node runs
    and more events: deleted with their runs, one batch of four such runs was 80,004 rows in one
    transaction (3.1 s of an API prune asked to stop after 1 s; five runs of 30,000 events, 18 s),
    on the maintenance queue beside the coordinator. Their rows go first, a chunk per transaction,
    then the runs."""
    staff = with_permissions(make_user("ops", is_staff=True), "workflows.view_run", "workflows.delete_run")
    # each table of each run over a chunk (1,000 by default): unchunked, any one of them breaks the bound
    runs = big_old_runs(staff, 2, node_runs=1500, events=1500)
    tally = RowsPerTransaction()

    with connection.execute_wrapper(tally):
        answer = client_for(staff).post("/api/v1/prune", {}, format="json")

    assert answer.status_code == 200, answer.content
    assert answer.json() | {"artifacts": 0} == {"runs": 2, "artifacts": 0, "hook_deliveries": 0,
                                                "schedule_firings": 0, "idempotency_keys": 0, "sessions": 0, "crontabs": 0, "finished": True}
    assert not Run.objects.filter(pk__in=[r.pk for r in runs]).exists() and not NodeRun.objects.exists()
    bound = max(settings.AOB_RETENTION_CHUNK_ROWS, settings.AOB_RETENTION_BATCH_SIZE)
    assert tally.largest <= bound, f"one prune transaction deleted {tally.largest} rows (bound {bound})"


def test_a_prune_out_of_time_between_chunks_leaves_a_run_the_api_reads_and_the_next_prune_ends(
        db: Any, make_user: Any, settings: Any, monkeypatch: Any) -> None:
    """A run's rows go over several transactions: one stopped between them (its time up, or its
    process killed) leaves a finished run missing some of them, still past retention. Its pages
    read what is left, and the next prune removes the rest and the run."""
    staff = with_permissions(make_user("ops", is_staff=True), "workflows.view_run", "workflows.delete_run")
    [run] = big_old_runs(staff, 1, node_runs=300, events=150)
    reader = client_for(staff)
    reader.raise_request_exception = False
    pages = ["", "details", "events", "timeline", "output", "inputs", "patches", "nodes/a/iterations",
             *(f"nodes/a/iterations/{i}/{field}" for i in (0, 299) for field in ("output", "input"))]
    before = {page: reader.get(f"/api/v1/runs/{run.pk}/{page}".rstrip("/")).status_code for page in pages}
    settings.AOB_RETENTION_CHUNK_ROWS = 100
    settings.AOB_PRUNE_REQUEST_S = 3
    tally = RowsPerTransaction()  # the prune's clock: a second per transaction that deleted rows
    monkeypatch.setattr(services, "time", SimpleNamespace(monotonic=lambda: tally.committed))

    with connection.execute_wrapper(tally):
        answer = client_for(staff).post("/api/v1/prune", {}, format="json")

    # events went first (100, then 50), then a chunk of node runs: the time is up in the middle of the run
    assert answer.json() == {"runs": 0, "artifacts": 0, "hook_deliveries": 0, "schedule_firings": 0, "idempotency_keys": 0, "sessions": 0,
                             "crontabs": 0, "finished": False}
    assert Run.objects.filter(pk=run.pk).exists()
    assert (Event.objects.filter(run=run).count(), NodeRun.objects.filter(run=run).count()) == (0, 200)
    kept = NodeRun.objects.filter(run=run).values_list("iteration", flat=True).first()
    gone = next(i for i in range(300) if not NodeRun.objects.filter(run=run, iteration=i).exists())
    after = {page: reader.get(f"/api/v1/runs/{run.pk}/{page}".rstrip("/")).status_code for page in pages}
    # a page about what is left reads as before; one about a node run gone is a 404, never a 500
    assert set(before.values()) == {200}, before
    assert {page: code for page, code in after.items() if "iterations/" not in page} == {
        page: code for page, code in before.items() if "iterations/" not in page}
    assert reader.get(f"/api/v1/runs/{run.pk}/nodes/a/iterations/{kept}/output").status_code == 200
    assert reader.get(f"/api/v1/runs/{run.pk}/nodes/a/iterations/{gone}/output").status_code == 404
    details = reader.get(f"/api/v1/runs/{run.pk}/details").json()
    assert [(n["node_id"], n["iterations"]) for n in details["nodes"]] == [("a", 200)]
    # a replay would take the node runs gone for never run and run them again (a red team's sibling
    # payment went out twice): the run is marked as its first rows go, and a replay of it refused
    marked = Run.objects.get(pk=run.pk).deleting_at
    assert marked is not None
    assert reader.get(f"/api/v1/runs/{run.pk}").json()["deleting_at"] == marked.isoformat().replace("+00:00", "Z")
    replay = reader.post(f"/api/v1/runs/{run.pk}/nodes/a/replay", {}, format="json")
    assert replay.status_code == 409 and replay.json()["error"] == "run_being_deleted", replay.json()

    monkeypatch.undo()
    assert prune() | {"artifacts": 0} == {"runs": 1, "artifacts": 0, "hook_deliveries": 0, "schedule_firings": 0,
                                          "idempotency_keys": 0, "sessions": 0, "crontabs": 0, "finished": True}
    assert not Run.objects.filter(pk=run.pk).exists() and not NodeRun.objects.exists()


def test_a_prune_needs_staff_the_admin_lets_delete_runs(db: Any, make_user: Any) -> None:
    """It counts and deletes every owner's finished runs past retention: staff alone (an operator's
    helper who looks after their own schedules), or staff who may delete runs but see only their own,
    are refused before anything is counted."""
    runs = old_runs(make_user("alice"), 2)
    deleter = with_permissions(make_user("deleter", is_staff=True), "workflows.delete_run")  # sees no run of alice's
    for user in (make_user("scheduler", is_staff=True), deleter, make_user("bob")):
        answer = client_for(user).post("/api/v1/prune", {}, format="json")
        assert answer.status_code == 403
        assert answer.json()["error"] == "permission_denied" and "workflows.delete_run" in answer.json()["message"]
    assert Run.objects.filter(pk__in=[r.pk for r in runs]).count() == 2

    allowed = with_permissions(make_user("ops", is_staff=True), "workflows.view_run", "workflows.delete_run")
    assert client_for(allowed).post("/api/v1/prune", {}, format="json").json()["runs"] == 2


def test_a_delete_out_of_time_marks_only_the_runs_it_took_rows_of(db: Any, make_user: Any, settings: Any,
                                                                     monkeypatch: Any) -> None:
    """A batch's chunk marked every run it locked, though its rows were of one: runs a delete by
    filter never touched stayed unreplayable until deleted (a reviewer's). Only the runs losing
    rows are marked."""
    owner = make_user("own")
    runs = big_old_runs(owner, 3, node_runs=300, events=150)
    settings.AOB_RETENTION_CHUNK_ROWS = 100
    settings.AOB_PRUNE_REQUEST_S = 1
    tally = RowsPerTransaction()  # the delete's clock: a second per transaction that deleted rows
    monkeypatch.setattr(services, "time", SimpleNamespace(monotonic=lambda: tally.committed))

    with connection.execute_wrapper(tally):
        answer = client_for(owner).post("/api/v1/runs/delete", {"status": "completed"}, format="json")

    assert answer.status_code == 202 and answer.json() == {"deleted": 0, "finished": False}
    touched = {run.pk for run in runs if Event.objects.filter(run=run).count() < 150}
    marked = set(Run.objects.filter(pk__in=[r.pk for r in runs], deleting_at__isnull=False).values_list("pk", flat=True))
    assert len(touched) == 1 and marked == touched


def test_what_a_delete_keeps_and_what_it_takes_split_the_finished_runs(db: Any, user: Any) -> None:
    """``in_use`` (a dry run's ``kept``) is ``removable``'s complement among finished runs, from the
    same conditions: it was an exclude of ``removable``'s rows, a ``NOT IN`` PostgreSQL judged row by
    row past ``work_mem`` (700,000 runs ran past 120 s, a reviewer's measure)."""
    from subflows.models import SubRun

    def run(status: str) -> Run:
        made = stored_run(user)
        Run.objects.filter(pk=made.pk).update(status=status)
        return made

    free, read_by_a_parent, replayed, parent_of_a_runner, running = (
        run("completed"), run("failed"), run("completed"), run("cancelled"), run("running"))
    waiting = run("running")
    node = NodeRun.objects.create(run=waiting, node_id="sub", node_type="workflow", status="running")
    SubRun.objects.create(parent_run=waiting, parent_node_run=node, child_run=read_by_a_parent)
    Run.objects.filter(pk=run("running").pk).update(replay_of=replayed)
    node = NodeRun.objects.create(run=parent_of_a_runner, node_id="sub", node_type="workflow", status="completed")
    SubRun.objects.create(parent_run=parent_of_a_runner, parent_node_run=node, child_run=running)

    runs = Run.objects.filter(owner=user)
    taken = set(services.removable(runs).values_list("pk", flat=True))
    kept = set(services.in_use(runs).values_list("pk", flat=True))

    assert taken == {free.pk}
    assert kept == {read_by_a_parent.pk, replayed.pk, parent_of_a_runner.pk}
    assert taken | kept == set(runs.filter(status__in=Run.FINISHED).values_list("pk", flat=True))
    assert '"workflows_run"."id" IN (SELECT' not in str(services.in_use(runs).query)  # not removable's rows
