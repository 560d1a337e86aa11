"""Retention: finished runs past their owner's retention go, with everything that is theirs (node
runs, events, patches, refusals, approvals and their decisions and deliveries, the agent journal,
sub-run links: the database's cascades); then the artifacts no run, patch or workflow version
refers to any more (older than ``AOB_ARTIFACT_GRACE_S``); then webhook delivery ids and schedule
firings past their own retention.

Each batch (``AOB_RETENTION_BATCH_SIZE`` rows) is its own short transaction that skips rows someone
holds, so pruning never stands in a run's way. A run that is not finished is never a candidate; nor
is a finished child run whose parent has not taken its outcome yet, nor a run an unfinished replay
replays.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.apps import apps
from django.conf import settings
from django.db import transaction
from django.db.models import DurationField, Exists, F, Func, OuterRef, QuerySet, Subquery, Value
from django.db.models.deletion import ProtectedError, RestrictedError
from django.db.models.functions import Coalesce
from django.utils import timezone

from workflows.models import Artifact, Event, NodeRun, Run, RunPatch

from .models import RetentionPolicy

logger = logging.getLogger(__name__)


def runs_past_retention(now: datetime) -> QuerySet[Run]:
    days = Subquery(RetentionPolicy.objects.filter(owner=OuterRef("owner")).values("days")[:1])
    keep = Func(Coalesce(days, Value(settings.AOB_RETENTION_DAYS)), function="make_interval",
                template="make_interval(days => %(expressions)s)", output_field=DurationField())
    from subflows.models import SubRun

    waiting_parent = SubRun.objects.filter(child_run=OuterRef("pk"), settled_at__isnull=True).exclude(
        parent_run__status__in=Run.FINISHED)
    # a replay reads its source while it runs (reuse_llm: the source's journal stands in for model
    # calls); removed, the replay's reference would go null and its agents call the model again
    replaying = Run.objects.filter(replay_of=OuterRef("pk")).exclude(status__in=Run.FINISHED)
    # a parent whose child still runs (its cancel lost): the sweeper finds the child through the
    # link, and the child's spend counts against the parent's ceilings
    running_child = SubRun.objects.filter(parent_run=OuterRef("pk")).exclude(child_run__status__in=Run.FINISHED)
    return (Run.objects.filter(status__in=Run.FINISHED, finished_at__isnull=False)
            .annotate(keep=keep).filter(finished_at__lt=Value(now) - F("keep"))
            .exclude(Exists(waiting_parent)).exclude(Exists(replaying)).exclude(Exists(running_child)))


def _artifact_references() -> list[tuple[Any, str]]:
    """Every (model, column) that points at an artifact, in any app."""
    return [(model, field.attname) for model in apps.get_models() for field in model._meta.concrete_fields
            if field.is_relation and field.related_model is Artifact]


def artifacts_unreferenced(now: datetime, *, without_runs: QuerySet[Run] | None = None) -> QuerySet[Artifact]:
    """Artifacts older than the grace period that nothing refers to (nothing but ``without_runs``)."""
    qs = Artifact.objects.filter(created_at__lt=now - timedelta(seconds=settings.AOB_ARTIFACT_GRACE_S))
    for model, column in _artifact_references():
        refs = model.objects.filter(**{column: OuterRef("pk")})
        if without_runs is not None:
            if model is Run:
                refs = refs.exclude(pk__in=without_runs.values("pk"))
            elif any(f.name == "run" and f.related_model is Run for f in model._meta.concrete_fields):
                refs = refs.exclude(run__in=without_runs.values("pk"))
        qs = qs.exclude(Exists(refs))
    return qs


def _expired_deliveries(now: datetime) -> QuerySet:
    from triggers.models import HookDelivery

    return HookDelivery.objects.filter(received_at__lt=now - timedelta(seconds=settings.AOB_HOOK_DELIVERY_RETENTION_S))


def _expired_firings(now: datetime) -> QuerySet:
    from triggers.models import ScheduleFiring

    return ScheduleFiring.objects.filter(
        created_at__lt=now - timedelta(days=settings.AOB_SCHEDULE_FIRING_RETENTION_DAYS))


def prune(*, dry_run: bool = False, now: datetime | None = None, batch_size: int | None = None) -> dict[str, Any]:
    """Remove (or with ``dry_run`` count) what is past retention; returns the counts."""
    now = now or timezone.now()
    batch = batch_size or settings.AOB_RETENTION_BATCH_SIZE
    if dry_run:
        return _preview(now)
    counts = {"runs": 0, "artifacts": 0, "hook_deliveries": 0, "schedule_firings": 0}
    counts["runs"] = _in_batches(lambda: runs_past_retention(now), Run, batch)
    counts["artifacts"] = _in_batches(lambda: artifacts_unreferenced(now), Artifact, batch)
    from triggers.models import HookDelivery, ScheduleFiring

    counts["hook_deliveries"] = _in_batches(lambda: _expired_deliveries(now), HookDelivery, batch)
    counts["schedule_firings"] = _in_batches(lambda: _expired_firings(now), ScheduleFiring, batch)
    logger.info("retention.pruned", extra=counts)
    return counts


def _in_batches(candidates: Any, model: Any, batch: int) -> int:
    """Delete the candidates ``batch`` at a time, in key order from where the last batch ended (each
    batch reads on from there, never the rows before it again). Each batch is its own short
    transaction: its rows are locked, skipping any someone holds (the next prune takes those),
    judged again once locked, in a statement of its own (a reference committed while the first read
    ran keeps its row), then deleted."""
    removed, after = 0, None
    while True:
        page = candidates() if after is None else candidates().filter(pk__gt=after)
        ids = list(page.order_by("pk").values_list("pk", flat=True)[:batch])
        if not ids:
            return removed
        after = ids[-1]
        try:
            with transaction.atomic():
                locked = list(model.objects.filter(pk__in=ids).select_for_update(skip_locked=True)
                              .values_list("pk", flat=True))
                gone = list(candidates().filter(pk__in=locked).values_list("pk", flat=True)) if locked else []
                if gone:
                    model.objects.filter(pk__in=gone).delete()
        except (ProtectedError, RestrictedError):
            # something began to refer to a candidate meanwhile: its batch waits for the next prune
            logger.info("retention.batch_skipped", extra={"model": model.__name__})
            continue
        removed += len(gone)


def _preview(now: datetime) -> dict[str, Any]:
    from approvals.models import Approval

    runs = runs_past_retention(now)
    ids = runs.values("pk")
    return {"dry_run": True, "runs": runs.count(), "node_runs": NodeRun.objects.filter(run__in=ids).count(),
            "events": Event.objects.filter(run__in=ids).count(),
            "patches": RunPatch.objects.filter(run__in=ids).count(),
            "approvals": Approval.objects.filter(run__in=ids).count(),
            "artifacts": artifacts_unreferenced(now, without_runs=runs).count(),
            "hook_deliveries": _expired_deliveries(now).count(), "schedule_firings": _expired_firings(now).count()}
