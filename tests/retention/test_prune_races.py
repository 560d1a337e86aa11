"""A prune runs beside live work. Content is stored once (same content, same artifact), so a write
may refer again to an artifact stored long ago and referenced no more: exactly what a prune
deletes. The prune never deletes it from under that reference, whichever of the two comes first."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import User
from django.db import connection, transaction
from django.utils import timezone

from retention.services import prune
from tests.conftest import stored_run, wait_for_run
from tests.engine.flow import submit, transform, wait_until
from tests.faults.harness import hooks
from workflows.models import Artifact, NodeRun, Run, canonical_json, size_of, text_id
from workflows.services.artifacts import artifact_store

TIMEOUT = 30
DEFINITION = {"nodes": [{"id": "a", "type": "transform", "config": {"expression": "'kept'"}}], "edges": []}


def aged(aid: str) -> str:
    """Past the grace period that spares an artifact just stored."""
    Artifact.objects.filter(pk=aid).update(created_at=timezone.now() - timedelta(days=60))
    return aid


def in_another_connection(work: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def go() -> None:
        try:
            out["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            out["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread, out


def someone_waits_on_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND wait_event_type = 'Lock'")
        return cursor.fetchone()[0] > 0


def holding_then_deleting(aid: str, locked: threading.Event, go_on: threading.Event) -> Callable[[], None]:
    """What a prune's batch does to a candidate: lock it (``FOR UPDATE``), then delete it."""

    def work() -> None:
        with transaction.atomic():
            assert Artifact.objects.select_for_update().filter(pk=aid).exists()
            locked.set()
            assert go_on.wait(TIMEOUT)
            Artifact.objects.filter(pk=aid).delete()

    return work


def old_definition() -> str:
    text = canonical_json(DEFINITION)
    Artifact.objects.create(id=text_id(text), kind="dag_version", content=DEFINITION, size_bytes=size_of(text))
    return aged(text_id(text))


def test_a_prune_passes_by_an_artifact_a_transaction_is_about_to_refer_to_again(transactional_db: Any,
                                                                                user: User) -> None:
    aid = old_definition()
    with transaction.atomic():
        artifact_store(kind="dag_version", content=DEFINITION)  # found stored: held until this commits
        thread, out = in_another_connection(prune)
        thread.join(TIMEOUT)
        assert out["value"]["artifacts"] == 0, out  # before: deleted, and the commit below failed
        Run.objects.create(owner=user, base_artifact_id=aid, current_artifact_id=aid, inputs={})
    assert Artifact.objects.filter(pk=aid).exists()


def test_an_artifact_a_prune_deleted_first_is_stored_again_for_the_reference(transactional_db: Any,
                                                                             user: User) -> None:
    aid = old_definition()
    locked, go_on = threading.Event(), threading.Event()
    pruning, pruned = in_another_connection(holding_then_deleting(aid, locked, go_on))
    assert locked.wait(TIMEOUT)

    def refer() -> Run:
        with transaction.atomic():
            artifact_store(kind="dag_version", content=DEFINITION)
            return Run.objects.create(owner=user, base_artifact_id=aid, current_artifact_id=aid, inputs={})

    referring, referred = in_another_connection(refer)
    wait_until(someone_waits_on_a_lock, what="the reference waiting for the prune's lock")
    go_on.set()
    pruning.join(TIMEOUT), referring.join(TIMEOUT)

    assert "error" not in pruned and "error" not in referred, (pruned, referred)
    assert Run.objects.filter(pk=referred["value"].pk).exists() and Artifact.objects.filter(pk=aid).exists()


def test_a_node_whose_output_was_pruned_under_its_completion_completes_in_its_first_attempt(engine: Any, api: Any,
                                                                                             user: User) -> None:
    """The executor's completion found the output stored (an earlier run's, since deleted) and
    referred to it while a prune deleted it: before, the completion failed on the foreign key, and
    the node ran again in a second attempt once its lease lapsed."""
    flow = {"nodes": [transform("same", "'the same output'")], "edges": []}
    first = wait_for_run(submit(api, flow))
    aid = NodeRun.objects.get(run=first, node_id="same").output_artifact_id
    Run.objects.filter(pk=first.pk).delete()
    aged(aid)
    locked, go_on = threading.Event(), threading.Event()
    pruning, pruned = in_another_connection(holding_then_deleting(aid, locked, go_on))
    assert locked.wait(TIMEOUT)

    run_id = submit(api, flow)
    wait_until(someone_waits_on_a_lock, what="the completion waiting for the prune's lock")
    go_on.set()
    pruning.join(TIMEOUT)
    run = wait_for_run(run_id)

    assert "error" not in pruned, pruned
    assert run.status == "completed", run.error
    same = NodeRun.objects.get(run=run, node_id="same")
    assert (same.attempts, same.output_artifact_id) == (1, aid)
    assert Artifact.objects.filter(pk=aid).exists()


def test_a_run_someone_holds_waits_for_the_next_prune_and_the_rest_go_now(transactional_db: Any,
                                                                         user: User) -> None:
    """A batch skips the rows someone holds; the prune goes on past them from where it stopped.
    Before, the first held row ended the whole pass (and each batch read the candidates again
    from the start)."""
    runs = sorted((stored_run(user) for _ in range(3)), key=lambda r: r.pk)
    Run.objects.filter(pk__in=[r.pk for r in runs]).update(status="completed",
                                                           finished_at=timezone.now() - timedelta(days=60))
    locked, go_on = threading.Event(), threading.Event()

    def hold_the_first() -> None:
        with transaction.atomic():
            assert Run.objects.select_for_update().filter(pk=runs[0].pk).exists()
            locked.set()
            assert go_on.wait(TIMEOUT)

    holding, held = in_another_connection(hold_the_first)
    assert locked.wait(TIMEOUT)
    try:
        assert prune(batch_size=1)["runs"] == 2
    finally:
        go_on.set()
        holding.join(TIMEOUT)
    assert "error" not in held, held
    assert list(Run.objects.filter(pk__in=[r.pk for r in runs]).values_list("pk", flat=True)) == [runs[0].pk]
    assert prune(batch_size=1)["runs"] == 1  # the next prune takes it


def test_a_parent_whose_child_still_runs_is_kept(transactional_db: Any, user: User) -> None:
    """Its cancel lost, the child runs on; the sweeper finds it through the parent's link (which the
    parent's removal would take with it), and its spend counts against the parent's ceilings. (The
    suite's live stack, left from earlier tests, would cancel that child itself meanwhile: its
    ``subflows.sweep`` is off here.)"""
    from subflows.models import SubRun

    hooks().set("aob:test:subflows_sweep_off", 1)
    try:
        parent, child = stored_run(user), stored_run(user)
        Run.objects.filter(pk=parent.pk).update(status="cancelled", finished_at=timezone.now() - timedelta(days=60))
        Run.objects.filter(pk=child.pk).update(status="running")
        waiting = NodeRun.objects.create(run=parent, node_id="a", node_type="workflow", status="cancelled")
        SubRun.objects.create(parent_run=parent, parent_node_run=waiting, child_run=child)

        assert prune()["runs"] == 0
        Run.objects.filter(pk=child.pk).update(status="cancelled", finished_at=timezone.now())
        assert prune()["runs"] == 1 and not Run.objects.filter(pk=parent.pk).exists()  # the child is recent: kept
    finally:
        hooks().delete("aob:test:subflows_sweep_off")


def test_a_pure_node_whose_output_a_prune_deletes_under_the_decision_completes_at_once(engine: Any, api: Any,
                                                                                      user: User) -> None:
    """The decision that evaluates a pure node stores its output (``coordinator.apply``): found
    stored, then deleted by a prune before the node run referring to it commits. Before, that
    decision failed on the foreign key and was asked again (one of the run's few allowed)."""
    flow = {"nodes": [transform("first", "1"), transform("same", "'the pure output'", pure=True)],
            "edges": [{"from": "first", "to": "same"}]}
    earlier = wait_for_run(submit(api, flow))
    aid = NodeRun.objects.get(run=earlier, node_id="same").output_artifact_id
    Run.objects.filter(pk=earlier.pk).delete()
    aged(aid)
    locked, go_on = threading.Event(), threading.Event()
    pruning, pruned = in_another_connection(holding_then_deleting(aid, locked, go_on))
    assert locked.wait(TIMEOUT)

    run_id = submit(api, flow)
    wait_until(someone_waits_on_a_lock, what="the decision waiting for the prune's lock")
    go_on.set()
    pruning.join(TIMEOUT)
    run = wait_for_run(run_id)

    assert "error" not in pruned, pruned
    assert run.status == "completed", run.error
    log = NodeRun.objects.get(run=run, node_id="first").attempt_log
    assert [entry["status"] for entry in log] == ["completed"], log  # no decision_failed
    assert NodeRun.objects.get(run=run, node_id="same").output_artifact_id == aid
    assert Artifact.objects.filter(pk=aid).exists()
