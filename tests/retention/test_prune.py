"""Retention removes exactly what is past it, and nothing a live run needs."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth.models import User
from django.utils import timezone

from approvals.models import Approval, Decision
from approvals.services import approval_decide
from retention.models import RetentionPolicy
from retention.services import prune
from tests.approvals.runs import refund_flow, submit
from tests.conftest import wait_for_run
from tests.engine.flow import wait_until
from triggers.models import Hook, HookDelivery
from workflows.models import Artifact, Event, NodeRun, Run
from workflows.services.artifacts import artifact_store
from workflows.services.definitions import workflow_save

DAY = timedelta(days=1)


def finished_run(owner: User, customer: str) -> Run:
    run_id = submit(owner, refund_flow({"approvers": [owner.username]}), {"amount": 1, "customer": customer})
    approval = wait_until(lambda: Approval.objects.filter(run_id=run_id, status="pending").first(), what="gate")
    approval_decide(approval=approval, user=owner, approve=True)
    run = wait_for_run(run_id)
    assert run.status == "completed"
    return run


def referenced(runs: Any) -> set[str]:
    """The artifacts these runs refer to: their versions and their node runs' outputs."""
    versions = {a for r in runs for a in (r.base_artifact_id, r.current_artifact_id)}
    outputs = set(NodeRun.objects.filter(run__in=runs).exclude(output_artifact=None)
                  .values_list("output_artifact_id", flat=True))
    return versions | outputs


def age(run: Run, days: int) -> None:
    Run.objects.filter(pk=run.pk).update(finished_at=timezone.now() - days * DAY,
                                         created_at=timezone.now() - days * DAY)


def test_pruning_removes_exactly_what_is_past_retention_and_nothing_a_live_run_needs(engine: Any, user: User,
                                                                                     make_user: Any) -> None:
    bob = make_user("bob")
    RetentionPolicy.objects.create(owner=bob, days=7)
    saved = workflow_save(owner=user, tag="refunds", definition=refund_flow())
    old, recent, bobs = finished_run(user, "old-co"), finished_run(user, "recent-co"), finished_run(bob, "bob-co")
    age(old, 40), age(recent, 10), age(bobs, 10)  # alice keeps 30 days (AOB_RETENTION_DAYS), bob 7
    live_id = submit(user, refund_flow({"approvers": [user.username]}), {"amount": 1, "customer": "live-co"})
    live_gate = wait_until(lambda: Approval.objects.filter(run_id=live_id, status="pending").first(), what="gate")
    Run.objects.filter(pk=live_id).update(created_at=timezone.now() - 90 * DAY)  # old, but not finished
    orphan = artifact_store(kind="node_io", content={"left": "behind"})
    young = artifact_store(kind="node_io", content={"made": "just now"})
    # this test's own aged, by what its runs refer to: the stack's worker may finish a node of an earlier
    # test's run after that test's flush, storing an output no row refers to, which aged with the rest
    # the prune counted too
    Artifact.objects.filter(pk__in=referenced(Run.objects.all()) | {orphan.pk}).update(
        created_at=timezone.now() - 60 * DAY)
    hook = Hook.objects.create(id="hk_test", owner=user, workflow=saved.workflow, secret_ciphertext="x")
    stale = HookDelivery.objects.create(hook=hook, delivery_id="old", signature="a" * 64)
    HookDelivery.objects.filter(pk=stale.pk).update(received_at=timezone.now() - 4 * DAY)  # past the 3 days kept
    fresh = HookDelivery.objects.create(hook=hook, delivery_id="new", signature="b" * 64)

    gone_runs = [old.pk, bobs.pk]
    only_theirs = referenced(Run.objects.filter(pk__in=gone_runs)) - referenced(Run.objects.exclude(pk__in=gone_runs))
    only_theirs -= {saved.version.artifact_id}
    assert len(only_theirs) >= 3  # their own outputs (their customers differ) and bob's definition
    expected_artifacts = only_theirs | {orphan.pk}

    preview = prune(dry_run=True)
    assert preview["runs"] == 2 and preview["artifacts"] == len(expected_artifacts)
    assert preview["node_runs"] == NodeRun.objects.filter(run__in=gone_runs).count()
    assert preview["hook_deliveries"] == 1
    assert Run.objects.filter(pk__in=gone_runs).count() == 2  # a dry run removes nothing

    counts = prune(batch_size=1)  # one row per transaction: batches add up

    assert counts == {"runs": 2, "artifacts": len(expected_artifacts), "hook_deliveries": 1, "schedule_firings": 0,
                      "idempotency_keys": 0, "sessions": 0, "crontabs": 0, "finished": True}
    assert not Run.objects.filter(pk__in=gone_runs).exists()
    for model in (NodeRun, Event, Approval):
        assert not model.objects.filter(run__in=gone_runs).exists(), model.__name__
    assert not Decision.objects.filter(approval__run__in=gone_runs).exists()
    assert not Artifact.objects.filter(pk__in=expected_artifacts).exists()
    assert Artifact.objects.filter(pk=young.pk).exists()  # younger than AOB_ARTIFACT_GRACE_S
    assert Artifact.objects.filter(pk=saved.version.artifact_id).exists()  # a workflow version's
    assert Run.objects.filter(pk__in=[recent.pk, live_id]).count() == 2
    assert list(HookDelivery.objects.values_list("pk", flat=True)) == [fresh.pk]

    # the live run still has all it needs: decided now, it runs to the end
    approval_decide(approval=live_gate, user=user, approve=True)
    assert wait_for_run(live_id).status == "completed"
    assert prune(dry_run=True)["runs"] == 0


def test_a_start_key_past_its_day_is_pruned_and_one_within_it_kept(user: User) -> None:
    """A key outlives its run (a retry after a delete answers it again), so only its age removes it:
    every start that sent one left a row for good."""
    from workflows.models import IdempotencyKey
    from workflows.services.idempotency import TTL

    now = timezone.now()
    old = IdempotencyKey.objects.create(owner=user, key="old", fingerprint="f", response={}, run=None)
    IdempotencyKey.objects.filter(pk=old.pk).update(created_at=now - TTL - timedelta(minutes=1))
    live = IdempotencyKey.objects.create(owner=user, key="live", fingerprint="f", response={}, run=None)

    assert prune(dry_run=True, now=now)["idempotency_keys"] == 1
    assert prune(now=now)["idempotency_keys"] == 1
    assert list(IdempotencyKey.objects.values_list("pk", flat=True)) == [live.pk]
