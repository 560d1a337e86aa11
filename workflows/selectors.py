"""Read selectors: what a user may see, and the shapes the API and UI draw."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.db.models import (
    Case,
    F,
    Func,
    IntegerField,
    JSONField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    TextField,
    Value,
    When,
    Window,
)
from django.db.models.functions import Cast, Coalesce, RowNumber

from aob_project.compiled import PROBE_INT, PROBE_TEXT, PROBE_UUID, CompiledRead
from aob_project.exceptions import Conflict, Forbidden, NotFound
from workflows import visibility
from workflows.answers import (
    STORED_BYTES_SQL,
    Page,
    json_size,
    left_out,
    node_value_href,
    run_inputs_href,
    run_inputs_marker,
    stored_bytes,
    text_head,
)
from workflows.engine.coordinator import load_ir
from workflows.models import Artifact, Event, NodeRun, PatchRefusal, Run, RunPatch, Workflow, WorkflowVersion
from workflows.results import run_result, waiting_for_each


def _in_scope(qs: QuerySet[Workflow], *, user: User, scope: str) -> QuerySet[Workflow]:
    if scope in ("global", "all") and visibility.reads_every_workflow(user):
        return qs
    return qs.filter(owner=user)


def workflows_visible(*, user: User, scope: str = "user") -> QuerySet[Workflow]:
    return _in_scope(Workflow.objects.select_related("current_version__artifact", "owner"), user=user, scope=scope)


def workflows_listed(*, user: User, scope: str = "user") -> QuerySet[Workflow]:
    """The workflows a list shows, in a total order, each with its current version's summary (counts, name and
    description, kept at save) and its definition's size; the definitions stay in the database
    (``workflows_fill`` reads those a page has room for, and the name and description of those
    ``workflows_answered`` measured)."""
    qs = Workflow.objects.select_related("current_version", "owner").annotate(
        definition_bytes=F("current_version__artifact__size_bytes"))
    # by tag, and among every owner's (staff's scope) one tag's workflows by id: an order with ties
    # lets offset pages repeat one row and skip another
    return _in_scope(qs, user=user, scope=scope).order_by("tag", "pk")


def workflow_href(workflow: Workflow, *, user: User) -> str:
    """Where ``user`` reads a listed workflow's current definition whole: the workflow's own
    endpoint, which answers its owner; for another owner's (staff listing every owner's) the
    version's artifact."""
    if workflow.owner_id == user.pk:
        return f"/api/v1/workflows/{quote(workflow.tag, safe='')}?materialize=true"
    return f"/api/v1/artifacts/{workflow.current_version.artifact_id}"


# What a list of workflows shows of each current version that its owner (or an agent's metadata
# patch) wrote: up to 500 and 10,000 characters (``definition.validation``).
_WORKFLOW_TEXTS = ("metadata_name", "metadata_description")


def workflows_answered(qs: QuerySet[Workflow]) -> QuerySet[Workflow]:
    """``workflows_listed`` for an API answer: the current version's name and description left in
    the database and measured there (``measured``); ``workflows_fill`` reads those that fit."""
    for field in _WORKFLOW_TEXTS:
        qs = measured(qs, f"current_version__{field}")
    return qs


def workflows_fill(workflows: list[Workflow], *, user: User, materialize: bool = False) -> list[Workflow]:
    """A page of ``workflows_answered`` with each current version's name, then description, then
    (``materialize``) definition (``listed_definition``), read while they fit one answer's budget
    (``AOB_DETAILS_MAX_BYTES``), in the page's order; one that does not is a marker linking to
    ``workflow_href``, which answers it whole. These instances are for answering, never for saving."""
    page = Page(settings.AOB_DETAILS_MAX_BYTES).rows(len(workflows))
    versions = {w.current_version.pk: w for w in workflows if w.current_version is not None}
    if versions:
        rows = [w.current_version for w in versions.values()]
        for field in _WORKFLOW_TEXTS:
            for w in versions.values():
                for measure in ("bytes", "head"):
                    setattr(w.current_version, f"{field}_{measure}", getattr(w, f"current_version_{field}_{measure}"))
            _fill(rows, field, lambda version: workflow_href(versions[version.pk], user=user), page)
    return _materialized(workflows, user=user, page=page) if materialize else workflows


def _materialized(workflows: list[Workflow], *, user: User, page: Page) -> list[Workflow]:
    """``workflows`` with each current definition (``listed_definition``) read while they fit
    ``page``, by the sizes stored with them; one that does not is a marker linking to ``workflow_href``."""
    shown = {w.pk: page.fits(w.definition_bytes) for w in workflows  # type: ignore[attr-defined]
             if w.current_version is not None}
    wanted = {w.current_version.artifact_id for w in workflows if shown.get(w.pk)}
    read = dict(Artifact.objects.filter(pk__in=wanted).values_list("pk", "content")) if wanted else {}
    for w in workflows:
        if w.current_version is not None:
            w.listed_definition = (read[w.current_version.artifact_id] if shown[w.pk]  # type: ignore[attr-defined]
                                   else left_out(w.definition_bytes, workflow_href(w, user=user)))  # type: ignore[attr-defined]
    return workflows


# The reads behind most API requests, compiled once per thread (aob_project/compiled.py).
_WORKFLOW_BY_TAG = {
    content: CompiledRead(lambda owner_id, tag, related=related: Workflow.objects.select_related(related).filter(
        owner_id=owner_id, tag=tag), owner_id=PROBE_INT, tag=PROBE_TEXT)
    for content, related in ((True, "current_version__artifact"), (False, "current_version"))
}
# A run by id with its inputs left in the database (up to AOB_MAX_RUN_INPUTS_BYTES), read only
# when their size (``Run.inputs_bytes``, stored at the start) fits ``limit`` (an answer's budget).
# ``run.inputs`` loads them whole when a service needs them.
_RUN_BY_ID = CompiledRead(lambda pk, limit: Run.objects.filter(pk=pk).defer("inputs").annotate(inputs_head=Case(
    When(inputs_bytes__lte=limit, then=F("inputs")), default=Value(None), output_field=JSONField())),
    pk=PROBE_UUID, limit=PROBE_INT)


def workflow_get(*, owner: User, tag: str, content: bool = True) -> Workflow:
    """``owner``'s workflow ``tag``, or 404. ``content=False`` leaves the current version's
    definition unread (running it needs only its id)."""
    found = _WORKFLOW_BY_TAG[content].objects(owner_id=owner.pk, tag=str(tag))
    if not found:
        raise NotFound(f"workflow {tag!r} not found")
    return found[0]


def with_last_run(qs: QuerySet[Workflow], *, user: User) -> QuerySet[Workflow]:
    """Each workflow with the id, status and time of its newest run that ``user`` may see
    (``runs_visible``): staff listing every owner's workflows (``visibility.reads_every_workflow``)
    without reading their runs were shown each one's newest run, a read of another's run that
    every other surface refuses them."""
    last = runs_visible(user=user).filter(workflow=OuterRef("pk")).order_by("-created_at")
    return qs.annotate(last_run_id=Subquery(last.values("id")[:1]),
                       last_run_status=Subquery(last.values("status")[:1]),
                       last_run_at=Subquery(last.values("created_at")[:1]))


def workflow_with_last_run(*, workflow: Workflow, user: User) -> Workflow:
    """``workflow`` annotated as ``with_last_run`` does for a list (a no-op when it already is)."""
    if hasattr(workflow, "last_run_status"):
        return workflow
    return with_last_run(Workflow.objects.filter(pk=workflow.pk), user=user).select_related(
        "current_version__artifact", "owner").get()


def workflow_versions(*, workflow: Workflow, after: int = -1, limit: int = 1000) -> list[WorkflowVersion]:
    """A workflow's versions after seq ``after`` (-1: from the first), oldest first, at most ``limit``:
    a workflow saved ten thousand times is read a page at a time, and its tag once. Each one's
    description (up to 10,000 characters) is read while they fit one answer's budget
    (``AOB_DETAILS_MAX_BYTES``), else is a marker linking to the version, which answers it whole.
    For answering, never for saving."""
    versions = list(measured(WorkflowVersion.objects.filter(workflow=workflow, seq__gt=after), "description")
                    .select_related("workflow").order_by("seq")[:limit])
    if versions:
        _fill(versions, "description", lambda version: workflow_version_href(
            tag=workflow.tag, seq=version.seq), Page(settings.AOB_DETAILS_MAX_BYTES).rows(len(versions)))
    return versions


def workflow_version_href(*, tag: str, seq: int) -> str:
    return f"/api/v1/workflows/{quote(tag, safe='')}/versions/{seq}"


def workflow_version_get(*, workflow: Workflow, seq: int) -> WorkflowVersion:
    try:
        return WorkflowVersion.objects.select_related("artifact").get(workflow=workflow, seq=seq)
    except WorkflowVersion.DoesNotExist:
        raise NotFound(f"workflow {workflow.tag!r} has no version {seq}") from None


def workflow_runs(*, workflow: Workflow, user: User, limit: int) -> QuerySet[Run]:
    """The newest runs of ``workflow`` that ``user`` started, ``runs_without_inputs``."""
    return runs_without_inputs(runs_owned(user=user).filter(workflow=workflow)).order_by("-created_at")[:limit]


def runs_visible(*, user: User) -> QuerySet[Run]:
    """Who may see a run: the one rule, workflows/visibility.py. Every read of a run by id goes
    through here."""
    return visibility.runs_visible(user=user)


def owners_in_turn(rows: QuerySet, *, owner: str, order: list[Any]) -> QuerySet:
    """``rows`` with their owners in turn: each owner's first (by ``order``), then each one's
    second, and so on, a turn's rows by ``order``. What one owner has by the thousand (due gates,
    due sub-workflow timeouts, gates naming one person) never holds back another's. ``owner``: the
    lookup of each row's owner id (``run__owner_id``)."""
    turn = Window(RowNumber(), partition_by=[F(owner)], order_by=order)
    return rows.annotate(turn=turn).order_by("turn", *order)


def runs_owned(*, user: User) -> QuerySet[Run]:
    """The runs ``user`` may change (cancel, budget, replay, patch): its own."""
    return Run.objects.filter(owner=user)


def is_run_owner(run: Run, *, user: User) -> bool:
    """The one owner check: only a run's owner may change it."""
    return run.owner_id == user.pk


def run_owner_check(*, run: Run, user: User, action: str) -> None:
    """``is_run_owner`` as a service applies it: every service that changes a run on a person's
    behalf (cancel, budget, replay, patch) calls this first, so the admin, a command or a task
    meets the rule the API meets (where ``run_get(change=True)`` has already answered a 404).
    ``action`` completes the message: "only the run's owner may <action>"."""
    if not is_run_owner(run, user=user):
        raise Forbidden(f"only the run's owner may {action}", code="not_run_owner",
                        extra={"run_id": str(run.pk), "rule": "run_owner"})


def run_finished_check(*, status: str) -> None:
    """What only a finished run allows (its delete, its replay): a 409 naming the rule otherwise.
    A replay of a run still going ran what follows its node twice, once in each run, under two
    different keys: the payee took the second for a new order."""
    if status not in Run.FINISHED:
        raise Conflict(f"run is {status}: cancel it first, or wait for it to finish",
                       code="run_not_finished", extra={"status": status, "rule": "finished"})


def run_get(*, user: User, run_id: Any, change: bool = False) -> Run:
    """A run ``user`` may see, or with ``change`` one it may also change (``is_run_owner``).
    Anything else is the 404 of a run that does not exist: an id never tells whether a run exists."""
    try:
        found = _RUN_BY_ID.objects(pk=run_id if isinstance(run_id, uuid.UUID) else uuid.UUID(str(run_id)),
                                   limit=settings.AOB_DETAILS_MAX_BYTES)
    except (ValueError, TypeError):  # not a UUID
        raise NotFound("run not found") from None
    if not found:
        raise NotFound("run not found")
    run = found[0]
    if not visibility.run_visible(run, user=user) or (change and not is_run_owner(run, user=user)):
        raise NotFound("run not found")
    # what an answer shows of its inputs (``RunOut``): them, or past the budget the marker
    run.inputs_shown = (run.inputs_head if run.inputs_head is not None  # type: ignore[attr-defined]
                        else run_inputs_marker(run))
    # and of the run above, whose ceilings bind it (``Run.shown_ceilings``): its id only to a reader
    # who may see that run (one asked in a child run only is told nothing of its parent, as its family)
    above = run.within
    run.within_hidden = bool(above) and not (  # type: ignore[attr-defined]
        run.owner_id == user.pk or runs_visible(user=user).filter(pk=above).exists())
    return run


def measured(qs: QuerySet[Any], field: str) -> QuerySet[Any]:
    """Rows of a list with ``field`` (a JSON or a text column) left in the database and its size
    measured there, as ``<field>_bytes`` (a related one's ``a__b`` as ``a_b_bytes``): ``fill_within``
    then reads the values that fit the answer. A text's size is kept with it (never read to measure
    it), and a short one comes along (``<field>_head``, ``answers.text_head``)."""
    name = field.replace("__", "_")
    qs = qs.defer(field).annotate(**{f"{name}_bytes": stored_bytes(field)})
    return qs.annotate(**{f"{name}_head": text_head(field)}) if _is_text(qs.model, field) else qs


def _is_text(model: Any, field: str) -> bool:
    """Whether ``field`` (which may follow relations, ``a__b``) is a text column."""
    *path, last = field.split("__")
    for step in path:
        model = model._meta.get_field(step).related_model
    return isinstance(model._meta.get_field(last), TextField)


def fill_within(rows: list[Any], field: str, href: Callable[[Any], str], page: Page | None = None) -> list[Any]:
    """A page of ``measured`` rows with ``field`` read while the values fit ``page`` (one answer's
    ``AOB_DETAILS_MAX_BYTES`` unless given: an answer of several fields spends one); the instances
    are for answering, never for saving (``_fill``)."""
    _fill(rows, field, href, page if page is not None else Page(settings.AOB_DETAILS_MAX_BYTES))
    return rows


def _fill(rows: list[Any], field: str, href: Callable[[Any], str], page: Page, into: str | None = None) -> int:
    """The one way an answer reads JSON values and texts it measured first: ``field`` of each of ``rows``
    (its size in ``<field>_bytes``) while it fits ``page``, in order, in one statement (none for
    the short texts read with the rows, ``<field>_head``); a value that does not is the marker
    linking to ``href(row)``. Set on each row as ``into`` (default ``field``). Returns how many
    were cut."""
    fits = [row.pk for row in rows if page.fits(getattr(row, f"{field}_bytes") or 0)]
    heads = {row.pk: head for row in rows if (head := getattr(row, f"{field}_head", None)) is not None}
    wanted = [pk for pk in fits if pk not in heads]
    read = dict(type(rows[0]).objects.filter(pk__in=wanted).values_list("pk", field)) if wanted else {}
    read.update((pk, heads[pk]) for pk in fits if pk in heads)
    for row in rows:
        setattr(row, into or field,
                read[row.pk] if row.pk in read else left_out(getattr(row, f"{field}_bytes"), href(row)))
    return len(rows) - len(read)


def runs_without_inputs(qs: QuerySet[Run]) -> QuerySet[Run]:
    """Runs of a list with their inputs (their size is ``inputs_bytes``) and errors (up to
    ``limits.ERROR_MAX_BYTES``, measured) left in the database: ``fill_inputs`` then reads the ones
    that fit the answer."""
    return measured(qs.defer("inputs"), "error")


def run_href(*, run_id: Any) -> str:
    return f"/api/v1/runs/{run_id}"


def fill_inputs(rows: list[Run]) -> list[Run]:
    """A page of ``runs_without_inputs`` with their errors, then their inputs (as ``inputs_shown``),
    read while they fit one answer's budget (``AOB_DETAILS_MAX_BYTES``), in one statement each; an
    error that does not is the marker linking to the run, inputs the marker linking to them whole.
    The instances are for answering, never for saving."""
    page = Page(settings.AOB_DETAILS_MAX_BYTES).rows(len(rows))
    _fill(rows, "error", lambda row: run_href(run_id=row.pk), page)
    _fill(rows, "inputs", lambda row: run_inputs_href(run_id=row.pk), page, into="inputs_shown")
    return rows


def runs_for_list(*, user: User, owner: str | None) -> QuerySet[Run]:
    """The runs list's base: your runs; staff who read every run (``visibility.reads_every_run``)
    asking for an owner, every run (the filter narrows). An approver reaches a run it must decide
    through its approval."""
    if owner and visibility.reads_every_run(user):
        return Run.objects.all()
    return runs_owned(user=user)


def run_patches(*, run: Run) -> QuerySet[RunPatch]:
    return RunPatch.objects.filter(run=run).order_by("seq")


def run_patches_listed(*, run: Run) -> QuerySet[RunPatch]:
    """A run's patches in order, each with its operations' size (its patch set artifact's, stored)
    and count (``RunPatch.op_count``, kept when it was written), and its description's size; the
    operations and descriptions stay in the database (``patches_fill`` reads those that fit). Only
    a patch written before its count was kept (a process on the code before 0039) has its
    operations read to count them (an agent writes up to 1 MiB of them a patch)."""
    return measured(run_patches(run=run), "description").defer("operations").annotate(
        operations_bytes=F("patch_artifact__size_bytes"),
        op_count_listed=Coalesce(F("op_count"), Func(F("operations"), function="jsonb_array_length"),
                                 output_field=IntegerField()))


def patch_href(*, run_id: Any, seq: int) -> str:
    return f"/api/v1/runs/{run_id}/patches/{seq}"


def patches_fill(patches: list[RunPatch], *, run: Run, page: Page | None = None) -> list[RunPatch]:
    """``patches`` (of ``run_patches_listed``) with each one's description, then each one's
    operations, read while they fit ``page`` (one answer's ``AOB_DETAILS_MAX_BYTES`` unless given),
    in order; one that does not is a marker linking to the patch, which answers it whole. A
    description is an agent's to write (up to 10,000 characters, up to 500 patches a run): counted
    like any other value, it cannot take an answer past its budget. These instances are for
    answering, never for saving."""
    if not patches:
        return patches
    # details pass their page, which counted the patches' other fields; a list counts its rows here
    page = page if page is not None else Page(settings.AOB_DETAILS_MAX_BYTES).rows(len(patches))
    for field in ("description", "operations"):
        _fill(patches, field, lambda p: patch_href(run_id=run.pk, seq=p.seq), page)
    return patches


def run_patch_get(*, run: Run, seq: int) -> RunPatch:
    try:
        return RunPatch.objects.get(run=run, seq=seq)
    except RunPatch.DoesNotExist:
        raise NotFound(f"run has no patch {seq}") from None


def artifact_get(*, user: User, artifact_id: str, admit: Callable[[int], None] = lambda size: None) -> Artifact:
    """An artifact is visible through what refers to it: a version of one's own workflow, or a run
    one may see (``visibility``: its definitions, node outputs and patches); to staff who read every
    workflow (``visibility.reads_every_workflow``), any workflow's version too, as the workflows list
    shows them (``scope=global``). An approver reads the artifacts of the run behind the approval,
    as its page links them. One's own runs are asked
    first (their owner index); the rule's other runs (staff's, an approver's) only on a miss.
    Its content is left in the database: ``text`` is its JSON text as stored, never parsed (parsing
    an output and rendering it again took three times as long, and many times its size in memory).

    Same content, same id: the row is shared by everyone who stored that content, and its own
    ``kind`` and ``created_at`` are those of whoever stored it first, maybe another user. Anyone can
    compute the id of small, guessable content and store it themselves, so the answer's kind and
    time are those of the reference that let ``user`` read it (``_reference``), never the row's:
    an id tells nobody whether, when or as what someone else stored the same content.

    ``admit`` is given its size before its content is read, and may refuse it by raising (the
    per-user limit of whole reads, ``api.views.whole_read``)."""
    seen = artifact_seen(user=user, artifact_id=artifact_id)
    if seen is None:
        raise NotFound("artifact not found")
    admit(Artifact.objects.values_list("size_bytes", flat=True).get(pk=artifact_id))
    artifact = Artifact.objects.defer("content").annotate(text=Cast("content", TextField())).get(pk=artifact_id)
    artifact.kind, artifact.created_at = seen  # for answering, never for saving
    return artifact


def artifact_seen(*, user: User, artifact_id: str) -> Seen | None:
    """The (kind, time) of the reference that lets ``user`` read the artifact (``artifact_get``'s
    rule), None when none does: what every surface tells ``user`` of an artifact's kind and age,
    never the shared row's own (the first storer's, maybe another user's)."""
    return (_version_reference(artifact_id, WorkflowVersion.objects.filter(workflow__owner=user))
            or _reference(artifact_id, Run.objects.filter(owner=user))
            or _reference(artifact_id, visibility.runs_visible(user=user))
            or (_version_reference(artifact_id, WorkflowVersion.objects.all())
                if visibility.reads_every_workflow(user) else None))


def artifacts_referenced(*, versions: QuerySet[WorkflowVersion], runs: QuerySet[Run]) -> Q:
    """The artifacts ``versions`` and ``runs`` refer to, every reference ``_reference`` finds one by
    (a run's definitions and output, its node runs' outputs, its patches' operations and
    definitions): for a list of them (the admin's), where ``artifact_get`` judges one by id. One
    ``IN`` of the references' ids, each artifact then found by its key: an ``OR`` of an ``IN`` a
    reference made PostgreSQL test every artifact against each (1.3 s at 1M artifacts for one run)."""
    node_runs, patches = NodeRun.objects.filter(run__in=runs), RunPatch.objects.filter(run__in=runs)
    ids = [versions.values_list("artifact", flat=True),
           *(runs.values_list(key, flat=True) for key in ("base_artifact", "current_artifact", "output_artifact")),
           node_runs.values_list("output_artifact", flat=True),
           *(patches.values_list(key, flat=True) for key in ("patch_artifact", "before_artifact", "after_artifact"))]
    return Q(pk__in=ids[0].order_by().union(*(qs.order_by() for qs in ids[1:]), all=True))


# What a reference found by ``_reference`` says of the artifact: its kind, and when it was made.
Seen = tuple[str, Any]


def _first(qs: QuerySet[Any], kind: Any, at: Any) -> Seen | None:
    """One row's (kind, time), in no order (an order by id would scan the table for a rare match)."""
    rows = list(qs.order_by().values_list(kind, at)[:1])
    return rows[0] if rows else None


def _version_reference(artifact_id: str, versions: QuerySet[WorkflowVersion]) -> Seen | None:
    return _first(versions.filter(artifact_id=artifact_id), Value(Artifact.Kind.DAG_VERSION), "created_at")


def _reference(artifact_id: str, runs: QuerySet[Run]) -> Seen | None:
    """Whether one of ``runs`` refers to the artifact (its definitions or output, a node's output, a
    patch's operations or definitions), as the (kind, time) of that reference."""
    def kind(field: str, then: str, default: str) -> Case:
        return Case(When(**{field: artifact_id}, then=Value(then)), default=Value(default), output_field=TextField())

    return (_first(runs.filter(Q(base_artifact_id=artifact_id) | Q(current_artifact_id=artifact_id)
                               | Q(output_artifact_id=artifact_id)),
                   kind("output_artifact_id", Artifact.Kind.NODE_IO, Artifact.Kind.DAG_VERSION), "created_at")
            or _first(NodeRun.objects.filter(output_artifact_id=artifact_id, run__in=runs),
                      Value(Artifact.Kind.NODE_IO, output_field=TextField()), Coalesce("finished_at", "queued_at"))
            or _first(RunPatch.objects.filter(Q(patch_artifact_id=artifact_id) | Q(after_artifact_id=artifact_id)
                                              | Q(before_artifact_id=artifact_id), run__in=runs),
                      kind("patch_artifact_id", Artifact.Kind.PATCH_SET, Artifact.Kind.DAG_VERSION), "created_at"))


def _ms(start: Any, end: Any) -> int | None:
    if start is None or end is None:
        return None
    return max(0, int((end - start).total_seconds() * 1000))


def _passthrough(output: Any) -> bool:
    """The marker of a node skipped for want of an executor; any JSON value is a real output."""
    return isinstance(output, dict) and bool(output.get("_passthrough"))


# Node fields a details answer carries inline while they fit in its byte budget; past it, a field
# becomes a marker with its size and where to fetch it (``answers.node_value_href``: the output's
# artifact, or ``node_field_text``).
HEAVY_FIELDS = ("input", "output", "attempt_log")


def _sizes(table: str = "") -> str:
    """The heavy fields' sizes, in ``HEAVY_FIELDS``' order: what ``Page`` spends. Kept by the
    database as each is written (``NodeRun.output_bytes`` and the others); a row from before they
    were is measured here."""
    return ", ".join(f"COALESCE({table}{f}_bytes, {STORED_BYTES_SQL.format(table + f)}, 0) AS {f}_bytes"
                     for f in HEAVY_FIELDS)


SIZE_FIELDS = tuple(f"{f}_bytes" for f in HEAVY_FIELDS)


# The two statements of ``_heavy_rows`` as text, prepared after their fifth use per connection (an
# ORM expression per field, built and compiled per request, cost more CPU than the rest of
# ``details``). Columns in ``HEAVY_FIELDS``' order.
_HEAVY_SIZES = f"SELECT id, {_sizes()} FROM workflows_noderun WHERE id = ANY(%s)"  # noqa: S608 - column names
_HEAVY_VALUES = ("SELECT id, CASE WHEN id = ANY(%s) THEN input END, CASE WHEN id = ANY(%s) THEN output END, "
                 "CASE WHEN id = ANY(%s) THEN attempt_log END FROM workflows_noderun WHERE id = ANY(%s)")


# ``run_details``' latest node runs, as fixed text (0.87 -> 0.34 ms of CPU against the same
# queryset built per request); the columns come from the model, so a new field is read too. The
# heavy fields' sizes (``_HEAVY_SIZES``' columns) come along, measured on the latest rows only.
_LATEST_PER_NODE = (
    "SELECT latest.*, "  # noqa: S608 - the model's own column names, no input
    + _sizes("n.")
    + " FROM (SELECT DISTINCT ON (node_id) "
    + ", ".join(f.column for f in NodeRun._meta.concrete_fields if f.name not in HEAVY_FIELDS + SIZE_FIELDS)
    + ", COUNT(id) OVER (PARTITION BY node_id) AS iteration_count FROM workflows_noderun WHERE run_id = %s"
    " ORDER BY node_id, iteration DESC) latest JOIN workflows_noderun n ON n.id = latest.id")


# details' other reads, compiled once per thread (aob_project/compiled.py)
_ARTIFACT_CONTENT = CompiledRead(lambda pk: Artifact.objects.filter(pk=pk).values_list("content"),
                                 pk=PROBE_TEXT)
# A run's latest refusals with their operations (up to 64 KiB each) left in the database and
# measured there: details carry them while they fit its budget (``refusal_operations_fill``).
_LATEST_REFUSALS = CompiledRead(lambda run_id: PatchRefusal.objects.filter(run_id=run_id).select_related(
    "proposed_by").defer("operations").annotate(operations_bytes=stored_bytes("operations"))
    .order_by("-created_at", "-id")[:50], run_id=PROBE_UUID)


def refusal_href(*, run_id: Any, refusal_id: int) -> str:
    """Where one refused patch is read whole (``GET /runs/{id}/refusals/{refusal_id}``)."""
    return f"/api/v1/runs/{run_id}/refusals/{refusal_id}"


def refusal_operations_fill(refusals: list[PatchRefusal], *, run: Run, page: Page) -> int:
    """Read each of ``refusals``' (of ``_LATEST_REFUSALS``) operations while they fit ``page``,
    newest first; one that does not is a marker linking to the refusal. Returns how many were cut.
    For answering only."""
    return _fill(refusals, "operations", lambda r: refusal_href(run_id=run.pk, refusal_id=r.pk), page)


def run_refusal_get(*, run: Run, refusal_id: int) -> PatchRefusal:
    try:
        return PatchRefusal.objects.select_related("proposed_by").get(run=run, pk=refusal_id)
    except PatchRefusal.DoesNotExist:
        raise NotFound(f"run has no refused patch {refusal_id}") from None


def _heavy_rows(rows: list[NodeRun], page: Page, run: Run,
                sizes: dict[int, dict[str, int]] | None = None) -> dict[int, dict[str, Any]]:
    """Load input, output and attempt log of ``rows`` (``sizes`` measured in the database first,
    here unless read with the rows), each only if it still fits in ``page``; a field that does not
    is a ``{"truncated": true, …}`` marker."""
    if not rows:
        return {}
    if sizes is None:
        with connection.cursor() as cursor:
            cursor.execute(_HEAVY_SIZES, [[nr.pk for nr in rows]])
            sizes = {pk: dict(zip(HEAVY_FIELDS, rest, strict=True)) for pk, *rest in cursor.fetchall()}
    wanted: dict[int, list[str]] = {}
    out: dict[int, dict[str, Any]] = {}
    for nr in rows:
        for f in HEAVY_FIELDS:
            size = sizes.get(nr.pk, {}).get(f, 0)
            if page.fits(size):
                wanted.setdefault(nr.pk, []).append(f)
            else:
                out.setdefault(nr.pk, {})[f] = left_out(size, node_value_href(
                    run_id=run.pk, node_id=nr.node_id, iteration=nr.iteration, field=f,
                    artifact_id=nr.output_artifact_id))
    if wanted:
        # one statement for every field that fits: each column only for the rows it fits for
        picked = [[pk for pk, fields in wanted.items() if f in fields] for f in HEAVY_FIELDS]
        with connection.cursor() as cursor:
            cursor.execute(_HEAVY_VALUES, [*picked, list(wanted)])
            for pk, *values in cursor.fetchall():
                for f, value in zip(HEAVY_FIELDS, values, strict=True):
                    if f in wanted[pk]:  # jsonb arrives as its text (Django's loader), as a JSONField reads it
                        out.setdefault(pk, {})[f] = None if value is None else json.loads(value)
    return out


def _waiting(rows: list[NodeRun]) -> dict[Any, str]:
    return waiting_for_each((nr.pk, nr.node_type, nr.status, nr.wait_reason) for nr in rows)


def _node_out(nr: NodeRun | None, heavy: dict[str, Any], waiting: dict[Any, str]) -> dict[str, Any]:
    output = heavy.get("output") if nr else None
    return {
        "status": nr.status if nr else "not_executed",
        "input": heavy.get("input") if nr else None,
        "output": None if nr is None or _passthrough(output) else output,
        "output_artifact_id": nr.output_artifact_id if nr else None,
        "error": nr.error if nr else None,
        "attempts": nr.attempts if nr else 0,
        "attempt_log": heavy.get("attempt_log", []) if nr else [],
        "reused": nr.reused if nr else False,
        "queued_at": nr.queued_at if nr else None,
        "started_at": nr.started_at if nr else None,
        "finished_at": nr.finished_at if nr else None,
        "queue_time_ms": _ms(nr.queued_at, nr.started_at) if nr else None,
        "execution_time_ms": _ms(nr.started_at, nr.finished_at) if nr else None,
        "total_duration_ms": _ms(nr.queued_at, nr.finished_at) if nr else None,
        "usage": nr.usage if nr else {},
        "wait_reason": nr.wait_reason if nr else "",
        "waiting_for": waiting.get(nr.pk, "") if nr else "",
    }


# details lists a run's latest patches, this many; GET /runs/{id}/patches pages through them all
DETAILS_PATCHES = 100


def run_details(*, run: Run, max_bytes: int | None = None) -> dict[str, Any]:
    """The run with its result, its definitions, its latest ``DETAILS_PATCHES`` patches and the
    latest iteration of each node. The answer stays under ``AOB_DETAILS_MAX_BYTES`` (or less when
    asked): the run's inputs, its output, a node's input, output or attempt log, then a patch's operations,
    that would pass it is a marker linking to the rest; earlier iterations are paged by
    ``node_iterations``, the patches by ``GET /runs/{id}/patches``. Never more than one node run
    per node is read."""
    ir = load_ir(run)
    [(base,)] = _ARTIFACT_CONTENT.rows(pk=run.base_artifact_id)
    current = base if run.current_artifact_id == run.base_artifact_id else _ARTIFACT_CONTENT.rows(
        pk=run.current_artifact_id)[0][0]
    base_ids = {n["id"] for n in base["nodes"]}
    # the latest iteration of each node with the node's count of iterations: one statement (the
    # window counts every row of its node before DISTINCT ON keeps the latest)
    latest = {nr.node_id: nr for nr in NodeRun.objects.raw(_LATEST_PER_NODE, [run.pk])}
    counts = {node_id: nr.iteration_count for node_id, nr in latest.items()}
    # a run's patches are numbered by its patch_seq: none yet, nothing to read
    listed = (list(run_patches_listed(run=run).order_by("-seq")[:DETAILS_PATCHES])[::-1] if run.patch_seq else [])
    patches = [{"id": p.pk, "seq": p.seq, "status": p.status, "description": None, "node_id": p.node_id,
                "op_count": p.op_count_listed, "operations": None,  # type: ignore[attr-defined]
                "artifact_id": p.after_artifact_id, "created_at": p.created_at} for p in listed]
    ceiling = settings.AOB_DETAILS_MAX_BYTES
    page = Page(min(ceiling, max_bytes or ceiling))
    # the run's inputs first, while they fit (up to AOB_MAX_RUN_INPUTS_BYTES, read whole at their href;
    # ``run_get`` measured them in the database, and read them only if they fit an answer)
    size = run.inputs_bytes  # type: ignore[attr-defined]
    inputs_cut = not page.fits(size)
    if inputs_cut:
        run.inputs_shown = run_inputs_marker(run)  # type: ignore[attr-defined]
    # then what is always there: the definitions, the patches but their descriptions and operations
    page.spend(json_size(base) + (0 if current is base else json_size(current)) + json_size(patches))
    # then the run's result, before the nodes' fields: RunResultOut renders what was read here
    result = run.result = run_result(run, page=page)  # type: ignore[attr-defined]
    rows = [latest[n] for n in ir.nodes if n in latest]
    heavy = _heavy_rows(rows, page, run, {nr.pk: {f: getattr(nr, f"{f}_bytes") for f in HEAVY_FIELDS} for nr in rows})
    waiting = _waiting(rows)
    nodes = []
    for node_id, node in ir.nodes.items():
        last = latest.get(node_id)
        nodes.append({"node_id": node_id, "type": node.type, "added_by_patch": node_id not in base_ids,
                      "iterations": counts.get(node_id, 0),
                      **_node_out(last, heavy.get(last.pk, {}) if last else {}, waiting)})
    # the patches' descriptions and operations last: the nodes are what the run page draws from
    # details (an agent's descriptions counted first pushed the run's inputs and output out)
    for summary, patch in zip(patches, patches_fill(listed, run=run, page=page), strict=True):
        summary["description"], summary["operations"] = patch.description, patch.operations
    # the refusals' operations after them (each up to 64 KiB; 50 of them passed the budget threefold)
    refusals = _LATEST_REFUSALS.objects(run_id=run.pk)
    refusals_cut = refusal_operations_fill(refusals, run=run, page=page)
    return {"run": run, "base_definition": base, "current_definition": current, "nodes": nodes, "patches": patches,
            "patches_count": run.patch_seq, "patch_refusals": refusals, "inputs_truncated": inputs_cut,
            "truncated": inputs_cut or page.used > page.limit or result.truncated or any(
                isinstance(v, dict) and v.get("truncated") for h in heavy.values() for v in h.values())
            or any(isinstance(p["operations"], dict) or isinstance(p["description"], dict) for p in patches)
            or refusals_cut > 0}


def node_iterations(*, run: Run, node_id: str, offset: int = 0, limit: int = 20,
                    max_bytes: int | None = None) -> dict[str, Any]:
    """One node's iterations in order, a page at a time, under the same byte budget as details."""
    rows = list(NodeRun.objects.filter(run=run, node_id=node_id).defer(*HEAVY_FIELDS)
                .order_by("iteration")[offset:offset + limit])
    total = NodeRun.objects.filter(run=run, node_id=node_id).count()
    if not total and node_id not in load_ir(run).nodes:  # a misspelt id read as "not run yet"
        raise NotFound(f"node {node_id!r} is not in run {run.pk}", extra={"field": "node_id"})
    ceiling = settings.AOB_DETAILS_MAX_BYTES
    heavy = _heavy_rows(rows, Page(min(ceiling, max_bytes or ceiling)), run)
    waiting = _waiting(rows)
    items = [{"iteration": nr.iteration, **_node_out(nr, heavy.get(nr.pk, {}), waiting)} for nr in rows]
    following = offset + len(rows)
    return {"node_id": node_id, "count": total, "offset": offset, "results": items,
            "next": (f"/api/v1/runs/{run.pk}/nodes/{node_id}/iterations?offset={following}&limit={limit}"
                     if following < total else None)}


def node_field_text(*, run: Run, node_id: str, iteration: int, field: str,
                    admit: Callable[[int], None] = lambda size: None) -> str:
    """One field (``HEAVY_FIELDS``) of one node run whole, as the database's own JSON text, never
    parsed: where the markers of details and iterations lead once the field passes their byte
    budget. Only that column of that row is read. Its size is bounded by what was written, not by
    ``AOB_DETAILS_MAX_BYTES``: an input (the resolved config) by ``AOB_MAX_RESOLVED_CONFIG_BYTES``
    (16 MiB), an output by ``AOB_MAX_NODE_OUTPUT_BYTES`` (32 MiB), an attempt log by one entry per
    attempt. A skipped node's passthrough output is null, as details show it. ``admit`` is given
    the field's size (kept, ``_sizes``) before it is read, and may refuse it by raising."""
    if field not in HEAVY_FIELDS:
        raise NotFound(f"a node run has no field {field!r} (one of {', '.join(HEAVY_FIELDS)})", extra={"field": field})
    row = NodeRun.objects.filter(run=run, node_id=node_id, iteration=iteration)
    sizes = list(row.values_list(Coalesce(F(f"{field}_bytes"), stored_bytes(field), Value(0),
                                          output_field=IntegerField()), flat=True))
    if not sizes:  # (run, node_id, iteration) is unique: one row or none
        raise NotFound(f"node {node_id!r} has no iteration {iteration}",
                       extra={"node_id": node_id, "iteration": iteration})
    admit(sizes[0])
    text: Any = Cast(field, TextField())
    if field == "output":
        text = Case(When(output__contains={"_passthrough": True}, then=Value(None)), default=text)
    values = list(row.values_list(text, flat=True))
    if not values:  # pruned between the two reads
        raise NotFound(f"node {node_id!r} has no iteration {iteration}",
                       extra={"node_id": node_id, "iteration": iteration})
    return "null" if values[0] is None else values[0]


EVENTS_PAGE = 1000
# What an event's frame holds beside its data (run id, seq, type, node id, request id, time, keys),
# at most: counted with each event's data against a page's budget.
EVENT_FRAME_BYTES = 512


def _events_fitting(sizes: list[tuple[int, int]], limit: int) -> int:
    """Of events' (seq, data size) in reading order, how many, from the first, make one page: at
    most ``limit``, and while their bytes fit one answer's budget (``AOB_DETAILS_MAX_BYTES``), at
    least one, so a reader always progresses."""
    page, count = Page(settings.AOB_DETAILS_MAX_BYTES), 0
    for _seq, size in sizes[:limit]:
        if not page.fits(size + EVENT_FRAME_BYTES):
            if count:
                break
            page.spend(size + EVENT_FRAME_BYTES)  # the first goes whatever its size
        count += 1
    return count


def events_page(*, run_id: Any, after: int = 0, upto: int | None = None, since: Any = None,
                limit: int = EVENTS_PAGE) -> tuple[list[Event], bool]:
    """A run's events after ``after`` (up to ``upto``, stamped from ``since``), in order: those of
    one page (``_events_fitting``), and whether more follow, to be read after the last one.
    Sizes are measured in the database first (the data stays there; one more than ``limit``, to
    know), then the events that fit are read: a page of 1,000 events of up to 64 KiB each
    (``events.EVENT_VALUE_MAX_BYTES``) is never loaded to send one MiB of them. Events are
    append-only and numbered under the run's lock, so the second read finds what the first measured."""
    qs = Event.objects.filter(run_id=run_id, seq__gt=after)
    if upto is not None:
        qs = qs.filter(seq__lte=upto)
    if since is not None:
        qs = qs.filter(created_at__gte=since)
    sizes = list(qs.order_by("seq").values_list(
        "seq", stored_bytes("data"))[:limit + 1])
    count = _events_fitting(sizes, limit)
    if not count:
        return [], False
    return list(qs.filter(seq__lte=sizes[count - 1][0]).order_by("seq")), len(sizes) > count


def events_latest_after(*, run_id: Any) -> int:
    """The seq after which a run's newest page of events begins (``_events_fitting``, measured from
    the last one back; 0: they all fit): where the run page's socket starts, so a run of 4,000
    large events sends its newest MiB, not 33 MB. The older ones are read from ``events_page``."""
    sizes = list(Event.objects.filter(run_id=run_id).order_by("-seq").values_list(
        "seq", stored_bytes("data"))[:EVENTS_PAGE + 1])
    count = _events_fitting(sizes, EVENTS_PAGE)
    return sizes[count][0] if len(sizes) > count else 0
