"""Retention: finished runs past their owner's retention go, with everything that is theirs (node
runs, events, patches, refusals, approvals and their decisions and deliveries, the agent journal,
sub-run links: every model that cascades from a run); then the artifacts no run, patch or workflow
version refers to any more (older than ``AOB_ARTIFACT_GRACE_S``); then webhook delivery ids and
schedule firings past their own retention.

Each batch (``AOB_RETENTION_BATCH_SIZE`` rows) is its own short transaction that skips rows someone
holds, so pruning never stands in a run's way. A batch of runs first loses what is theirs, table by
table and leaves first, ``AOB_RETENTION_CHUNK_ROWS`` rows per transaction (a run may hold 10,000
node runs and many more events: a batch of them deleted at once was millions of rows in one
transaction), then the run rows go. A prune that stops between two chunks (its time is up, or it
dies) leaves runs that are still candidates, missing some of their rows: the next prune finishes
them, and a reader meanwhile sees a finished run with fewer node runs and events.

A run that is not finished is never a candidate; nor is a finished child run whose parent has not
taken its outcome yet, nor a run an unfinished replay replays (``removable``, which an owner's
delete of one run, ``run_remove``, follows too).
"""

from __future__ import annotations

import logging
import operator
import time
from datetime import datetime, timedelta
from functools import reduce
from typing import Any

from django.apps import apps
from django.conf import settings
from django.db import models, transaction
from django.db.models import DurationField, Exists, F, Func, OuterRef, QuerySet, Subquery, Value
from django.db.models.deletion import ProtectedError, RestrictedError, get_candidate_relations_to_delete
from django.db.models.functions import Coalesce
from django.utils import timezone

from workflows.models import Artifact, Event, NodeRun, Run, RunPatch

from .models import RetentionPolicy

logger = logging.getLogger(__name__)


def runs_past_retention(now: datetime) -> QuerySet[Run]:
    days = Subquery(RetentionPolicy.objects.filter(owner=OuterRef("owner")).values("days")[:1])
    keep = Func(Coalesce(days, Value(settings.AOB_RETENTION_DAYS)), function="make_interval",
                template="make_interval(days => %(expressions)s)", output_field=DurationField())
    return removable(Run.objects.filter(finished_at__isnull=False).annotate(keep=keep)
                     .filter(finished_at__lt=Value(now) - F("keep")))


def removable(runs: QuerySet[Run]) -> QuerySet[Run]:
    """Of ``runs``, those that may go: finished, and read by no unfinished run. The one rule for a
    prune and an owner's delete (``run_remove``)."""
    finished = runs.filter(status__in=Run.FINISHED)
    for read in _read_by_unfinished():
        finished = finished.exclude(read)
    return finished


def in_use(runs: QuerySet[Run]) -> QuerySet[Run]:
    """Of ``runs``, the finished ones ``removable`` keeps: read by an unfinished run. Its
    complement, from the same conditions: an ``exclude`` of ``removable``'s rows was a ``NOT IN``
    PostgreSQL judged row by row once they passed ``work_mem`` (quadratic: 700,000 runs ran past
    120 s, a reviewer's measure)."""
    first, *rest = _read_by_unfinished()
    return runs.filter(status__in=Run.FINISHED).filter(reduce(operator.or_, rest, first))


def _read_by_unfinished() -> list[Exists]:
    """What keeps a finished run (``OuterRef("pk")``): an unfinished run that reads it."""
    from subflows.models import SubRun

    waiting_parent = SubRun.objects.filter(child_run=OuterRef("pk"), settled_at__isnull=True).exclude(
        parent_run__status__in=Run.FINISHED)
    # a replay reads its source while it runs (reuse_llm: the source's journal stands in for model
    # calls); removed, the replay's reference would go null and its agents call the model again
    replaying = Run.objects.filter(replay_of=OuterRef("pk")).exclude(status__in=Run.FINISHED)
    # a parent whose child still runs (its cancel lost): the sweeper finds the child through the
    # link, and the child's spend counts against the parent's ceilings
    running_child = SubRun.objects.filter(parent_run=OuterRef("pk")).exclude(child_run__status__in=Run.FINISHED)
    return [Exists(waiting_parent), Exists(replaying), Exists(running_child)]


def run_remove(*, run: Run, user: Any) -> bool:
    """Delete one finished run of ``user``'s, with everything that is its own, as a prune deletes
    one (``removable``, in chunks), for at most ``AOB_PRUNE_REQUEST_S``: False when that time ran
    out first (the run stays, finished, missing some of its rows; the next call or prune goes on).
    What its owner's runs keep (``workflows.storage``) goes down by what it kept."""
    from aob_project.exceptions import Conflict
    from workflows.selectors import run_finished_check, run_owner_check

    run_owner_check(run=run, user=user, action="delete it")
    run_finished_check(status=run.status)

    def candidates() -> QuerySet[Run]:
        return removable(Run.objects.filter(pk=run.pk))

    if not candidates().exists():
        _still_there(run)
        raise Conflict("an unfinished run still reads this one (its parent waiting for its outcome, a replay of "
                       "it, or a sub-workflow it started): delete it once that one has finished", code="run_in_use",
                       extra={"rule": "removable"})
    deadline = time.monotonic() + settings.AOB_PRUNE_REQUEST_S
    removed, finished = _in_batches(candidates, Run, 1, deadline)
    if finished and not removed:  # a batch skips a run someone holds (a change of it, a prune's batch)
        _still_there(run)
        raise Conflict("the run is being changed or removed by another request: try again", code="run_busy",
                       extra={"rule": "locked"})
    logger.info("retention.run_removed", extra={"run_id": str(run.pk), "finished": finished})
    return finished


def _still_there(run: Run) -> None:
    """The 404 of a run another request removed meanwhile (a prune, a delete of it), not a
    conflict that a retry would answer with the 404."""
    from aob_project.exceptions import NotFound

    if not Run.objects.filter(pk=run.pk).exists():
        raise NotFound("run not found: it was removed meanwhile")


def runs_remove(*, runs: QuerySet[Run]) -> tuple[int, bool]:
    """Delete those of ``runs`` (one owner's, as a filter of theirs chose them) that may go
    (``removable``: finished, read by no unfinished run), as a prune deletes them, for at most
    ``AOB_PRUNE_REQUEST_S``: how many went, and whether none that may go is left (False: the time ran
    out first; the next call goes on from there). What the owner's runs keep goes down with each."""
    deadline = time.monotonic() + settings.AOB_PRUNE_REQUEST_S
    removed, finished = _in_batches(lambda: removable(runs), Run, settings.AOB_RETENTION_BATCH_SIZE, deadline)
    logger.info("retention.runs_removed", extra={"removed": removed, "finished": finished})
    return removed, finished


def runs_remove_preview(*, runs: QuerySet[Run]) -> dict[str, Any]:
    """What ``runs_remove`` would do with ``runs`` now: how many may go (``removable``) and how many
    finished ones stay, each counted up to ``AOB_PRUNE_PREVIEW_CAP`` (``at_least`` names a count that
    reached it), as a prune's dry run counts."""
    cap = settings.AOB_PRUNE_PREVIEW_CAP
    counts = {"would_delete": removable(runs).values("pk")[:cap].count(),
              "kept": in_use(runs).values("pk")[:cap].count()}
    return {"dry_run": True, **counts, "at_least": [name for name, n in counts.items() if n >= cap]}


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


def _expired_keys(now: datetime) -> QuerySet:
    """Start requests' idempotency keys past their ``TTL``: never read again, and they outlive their
    runs (``IdempotencyKey.run`` is SET_NULL), so nothing else removes them."""
    from workflows.models import IdempotencyKey
    from workflows.services.idempotency import TTL

    return IdempotencyKey.objects.filter(created_at__lt=now - TTL)


def _expired_sessions(now: datetime) -> QuerySet:
    """Login sessions past their expiry (Django's ``clearsessions``, which nothing else runs): each
    login of the web pages keeps a row until then, 14,400 a day for one user at the login limit."""
    from django.contrib.sessions.models import Session

    return Session.objects.filter(expire_date__lt=now)


def _unused_crontabs(now: datetime) -> QuerySet:
    """Beat's cron rows no periodic task uses: a schedule's cron or zone changed, or the schedule
    went (one row per distinct cron and zone ever saved, thousands a day for a user changing a cron
    all day). A save choosing a row locks it (``schedules._sync_periodic_task``), and a batch skips
    the rows someone holds, so a row being chosen is never taken from under it."""
    from django_celery_beat.models import CrontabSchedule, PeriodicTask

    return CrontabSchedule.objects.exclude(Exists(PeriodicTask.objects.filter(crontab=OuterRef("pk"))))


def prune(*, dry_run: bool = False, now: datetime | None = None, batch_size: int | None = None,
          within_s: float | None = None) -> dict[str, Any]:
    """Remove (or with ``dry_run`` count) what is past retention; returns the counts. With
    ``within_s`` (a request's prune) no batch starts after that many seconds: ``finished`` says
    whether everything was reached, and the next prune (the beat's, or a repeat) takes the rest."""
    now = now or timezone.now()
    batch = batch_size or settings.AOB_RETENTION_BATCH_SIZE
    if dry_run:
        return _preview(now)
    from django.contrib.sessions.models import Session
    from django_celery_beat.models import CrontabSchedule

    from triggers.models import HookDelivery, ScheduleFiring
    from workflows.models import IdempotencyKey

    deadline = None if within_s is None else time.monotonic() + within_s
    counts: dict[str, Any] = {}
    finished = True
    for name, candidates, model in (("runs", lambda: runs_past_retention(now), Run),
                                    ("artifacts", lambda: artifacts_unreferenced(now), Artifact),
                                    ("hook_deliveries", lambda: _expired_deliveries(now), HookDelivery),
                                    ("schedule_firings", lambda: _expired_firings(now), ScheduleFiring),
                                    ("idempotency_keys", lambda: _expired_keys(now), IdempotencyKey),
                                    ("sessions", lambda: _expired_sessions(now), Session),
                                    ("crontabs", lambda: _unused_crontabs(now), CrontabSchedule)):
        counts[name], finished = _in_batches(candidates, model, batch, deadline)
        if not finished:
            break
    counts = {"runs": 0, "artifacts": 0, "hook_deliveries": 0, "schedule_firings": 0, "idempotency_keys": 0,
              "sessions": 0, "crontabs": 0, **counts, "finished": finished}
    logger.info("retention.pruned", extra=counts)
    return counts


def _in_batches(candidates: Any, model: Any, batch: int, deadline: float | None = None) -> tuple[int, bool]:
    """Delete the candidates ``batch`` at a time, in key order from where the last batch ended (each
    batch reads on from there, never the rows before it again). Each batch is its own short
    transaction: its rows are locked, skipping any someone holds (the next prune takes those),
    judged again once locked, in a statement of its own (a reference committed while the first read
    ran keeps its row), then deleted; a batch of runs first loses what is theirs, a chunk at a time
    (``_children_delete``). Returns the count and whether the candidates ran out before ``deadline``
    (``time.monotonic``)."""
    removed, after = 0, None
    while True:
        if _past(deadline):
            return removed, False
        page = candidates() if after is None else candidates().filter(pk__gt=after)
        ids = list(page.order_by("pk").values_list("pk", flat=True)[:batch])
        if not ids:
            return removed, True
        after = ids[-1]
        if model is Run and not _children_delete(candidates, ids, deadline):
            return removed, False
        try:
            with transaction.atomic():
                gone = _locked_candidates(candidates, model, ids)
                if gone:
                    model.objects.filter(pk__in=gone).delete()
        except (ProtectedError, RestrictedError):
            # something began to refer to a candidate meanwhile: its batch waits for the next prune
            logger.info("retention.batch_skipped", extra={"model": model.__name__})
            continue
        removed += len(gone)


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def _locked_candidates(candidates: Any, model: Any, ids: list[Any]) -> list[Any]:
    """Of ``ids``, those this transaction could lock (someone else's are skipped) that are still
    candidates once locked."""
    locked = list(model.objects.filter(pk__in=ids).select_for_update(skip_locked=True).values_list("pk", flat=True))
    return list(candidates().filter(pk__in=locked).values_list("pk", flat=True)) if locked else []


def _cascades(model: Any, path: str = "", above: frozenset[Any] = frozenset()) -> list[tuple[Any, str]]:
    """Every (model, lookup to ``model``'s key) that a delete of ``model`` cascades to, in any app,
    a model's own cascades before it: the order that deletes leaves first. Derived from the models,
    as Django's collector derives its cascades, so a new model that belongs to a run is pruned too.
    A cascade back to a model above is left to the collector that deletes that model's rows."""
    found: list[tuple[Any, str]] = []
    relations: list[Any] = list(get_candidate_relations_to_delete(model._meta))
    for relation in relations:
        if relation.on_delete is not models.CASCADE or relation.related_model in above | {model}:
            continue  # SET_NULL and the like: the collector does them when the row itself goes
        lookup = f"{relation.field.name}__{path}" if path else relation.field.name
        found += _cascades(relation.related_model, lookup, above | {model})
        found.append((relation.related_model, lookup))
    return found


def _children_delete(candidates: Any, ids: list[Any], deadline: float | None) -> bool:
    """Delete what belongs to the runs ``ids`` (those still candidates), table by table, leaves
    first, at most ``AOB_RETENTION_CHUNK_ROWS`` rows per transaction, each transaction locking the
    runs and judging them again as a batch does. Only keys are read: the collector that deletes a
    chunk loads its rows' keys, never their fields, and finds nothing left below them (a row added
    below one since, say a late journal entry, goes with it). False when ``deadline`` came first:
    the runs stay candidates, and the next prune carries on where this one stopped."""
    chunk = settings.AOB_RETENTION_CHUNK_ROWS
    for model, lookup in _cascades(Run):
        while True:
            if _past(deadline):
                return False
            with transaction.atomic():
                runs = _locked_candidates(candidates, Run, ids)
                if not runs:
                    return True  # held or no longer candidates: the batch's own judgement skips them too
                rows = list(model.objects.filter(**{f"{lookup}__in": runs}).order_by()
                            .values_list("pk", flat=True)[:chunk])
                if rows:
                    # the runs losing their first rows: a replay of one would run again what they recorded
                    losing = model.objects.filter(pk__in=rows).values(lookup)
                    Run.objects.filter(pk__in=losing, deleting_at__isnull=True).update(deleting_at=timezone.now())
                    model.objects.filter(pk__in=rows).only("pk").delete()
            if len(rows) < chunk:
                break
    return True


def _preview(now: datetime) -> dict[str, Any]:
    """Each kind of row counted up to ``AOB_PRUNE_PREVIEW_CAP`` (``at_least`` names the ones that
    reached it): an exact count of every event of every run past retention scans most of the database."""
    from approvals.models import Approval

    runs = runs_past_retention(now)
    ids = runs.values("pk")
    kinds = {"runs": runs, "node_runs": NodeRun.objects.filter(run__in=ids),
             "events": Event.objects.filter(run__in=ids), "patches": RunPatch.objects.filter(run__in=ids),
             "approvals": Approval.objects.filter(run__in=ids),
             "artifacts": artifacts_unreferenced(now, without_runs=runs),
             "hook_deliveries": _expired_deliveries(now), "schedule_firings": _expired_firings(now),
             "idempotency_keys": _expired_keys(now), "sessions": _expired_sessions(now),
             "crontabs": _unused_crontabs(now)}
    cap = settings.AOB_PRUNE_PREVIEW_CAP
    counts = {name: qs.values("pk")[:cap].count() for name, qs in kinds.items()}
    return {"dry_run": True, **counts, "at_least": [name for name, n in counts.items() if n >= cap]}
