"""Workflow tags and their version chains (design time)."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import jsonpatch
import jsonpointer
from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import Max, RestrictedError, Sum

from aob_project.exceptions import Conflict, NotFound, ValidationFailed
from workflows.definition.validation import Report, json_depth, validate
from workflows.models import Artifact, DeletedTag, Workflow, WorkflowVersion, stored_size
from workflows.models.workflow import DESCRIPTION_MAX_CHARS, RESERVED_TAGS, TAG_PATTERN, TAG_RULE

from .artifacts import artifact_store


@dataclass
class Saved:
    workflow: Workflow
    version: WorkflowVersion
    created: bool
    report: Report


def validation_error(report: Report, message: str = "workflow definition is invalid") -> ValidationFailed:
    first = report.errors[0]
    return ValidationFailed(f"{message}: {first.path}: {first.message}", code="invalid_workflow",
                            extra={"errors": [p.as_dict() for p in report.errors],
                                   "warnings": [p.as_dict() for p in report.warnings]})


class DocumentTooLarge(ValidationFailed):
    code = "document_too_large"
    status = 413


ANY = "any"  # a write with no precondition: it is applied to whatever version is current
BaseVersion = int | None | Literal["any"]


class VersionConflict(Conflict):
    code = "version_conflict"


def _check_tag(tag: Any) -> None:
    if not isinstance(tag, str) or not re.fullmatch(TAG_PATTERN, tag):  # `$` would take a final line break
        raise ValidationFailed(TAG_RULE, extra={"field": "tag_name", "rule": "invalid"})
    if tag in RESERVED_TAGS:
        raise ValidationFailed(f"{tag!r} is reserved (POST /workflows/{tag} is an operation)",
                               extra={"field": "tag_name", "rule": "reserved"})


def workflow_save(*, owner: User, tag: str, definition: Any, description: str = "",
                  base_version: BaseVersion = ANY) -> Saved:
    """Point ``tag`` at this definition: a new version unless it is already the current one.

    ``base_version`` is the version the edit started from (None: the tag must not exist yet); a
    save based on a version that is no longer current is refused, so that it cannot silently drop
    the change that made the current one. ``ANY`` saves over whatever is current. The tag and the
    description are judged here, whoever saves (the API's fields state the same rules)."""
    _check_tag(tag)
    if len(description) > DESCRIPTION_MAX_CHARS:
        raise ValidationFailed(f"a description has at most {DESCRIPTION_MAX_CHARS} characters",
                               extra={"field": "description", "rule": "max_length", "limit": DESCRIPTION_MAX_CHARS})
    report = validate(definition, literal_urls=True, written=True)
    if not report.valid:
        raise validation_error(report)
    size, limit = json_size(definition), settings.AOB_MAX_DEFINITION_BYTES
    if size > limit:
        raise DocumentTooLarge(f"the workflow definition is {size} bytes; the limit is {limit}",
                               extra={"field": "workflow", "rule": "max_bytes", "limit": limit, "size": size})
    with transaction.atomic():
        artifact = artifact_store(kind=Artifact.Kind.DAG_VERSION, content=definition)
        workflow = _locked_tag(owner=owner, tag=tag)
        current = workflow.current_version
        if current is not None and current.artifact_id == artifact.pk:
            # what the edit would make is current already (a retry whose answer was lost, or the same
            # edit twice): nothing to drop, whatever version it began from
            return Saved(workflow, current, False, report)
        _check_base(tag=tag, current=current, base_version=base_version)  # under the row lock: one truth
        _check_room(owner=owner, adding=artifact.size_bytes)
        seq = (current.seq + 1) if current is not None else _first_seq(owner=owner, tag=tag)
        version = WorkflowVersion.objects.create(workflow=workflow, seq=seq, artifact=artifact, parent=current,
                                                 description=description, **version_summary(definition))
        workflow.current_version = version
        workflow.save(update_fields=["current_version", "updated_at"])
    return Saved(workflow, version, True, report)


def _locked_tag(*, owner: User, tag: str) -> Workflow:
    """The tag's row, made if missing, locked for the caller's transaction. A delete committed while
    this waited for the lock leaves nothing to lock: the tag is made again (and its versions go on
    after the deleted one's, ``_first_seq``), not a 500 from a row that went under the wait."""
    for _ in range(3):
        try:
            with transaction.atomic():
                workflow, _ = Workflow.objects.get_or_create(owner=owner, tag=tag)
        except IntegrityError:  # made meanwhile by another save (and perhaps deleted since)
            workflow = Workflow.objects.filter(owner=owner, tag=tag).first()
        locked = workflow and Workflow.objects.select_for_update().filter(pk=workflow.pk).first()
        if locked is not None:
            return locked
    raise Conflict(f"workflow {tag!r} was deleted again and again while this save waited; send it again",
                   extra={"field": "tag", "rule": "deleted_meanwhile"})


def _check_room(*, owner: User, adding: int) -> None:
    """Refuse a version that would take the definitions ``owner``'s versions keep past
    AOB_MAX_DEFINITIONS_BYTES_PER_OWNER. A version keeps its definition as long as its tag lives
    (retention removes only an artifact nothing refers to): within the write limit one owner kept
    some 36 GB more a day. Each version counts its definition's stored size, a definition two
    versions share twice. Under the owner's row lock (``no_key``: a run's insert, which takes a key
    share of it, is not held up), so one owner's saves are counted in turn; taken after the tag's,
    as hooks and schedules take them."""
    User.objects.select_for_update(no_key=True).filter(pk=owner.pk).first()
    limit = settings.AOB_MAX_DEFINITIONS_BYTES_PER_OWNER
    kept = WorkflowVersion.objects.filter(workflow__owner=owner).aggregate(
        total=Sum("artifact__size_bytes"))["total"] or 0
    if kept + adding > limit:
        raise ValidationFailed(
            f"an owner's workflow versions keep at most {limit} bytes of definitions "
            f"(AOB_MAX_DEFINITIONS_BYTES_PER_OWNER); this one would make them {kept + adding}: delete a "
            "workflow you no longer need (its versions go with it)",
            extra={"field": "workflow", "rule": "max_definitions_bytes", "limit": limit, "size": kept + adding})


def _check_base(*, tag: str, current: WorkflowVersion | None, base_version: BaseVersion) -> None:
    """Refuse a write based on a version that is not the current one. Called with the workflow's
    row locked, in the transaction that writes, so two writes from one version cannot both pass."""
    if base_version == ANY:
        return
    seq = current.seq if current is not None else None
    if base_version == seq:
        return
    details = {"field": "base_version", "rule": "current_version", "tag": tag, "base_version": base_version,
               "current_version": seq}
    if base_version is None:
        raise VersionConflict(f"a workflow tagged {tag!r} exists already (version {seq}): choose another tag, "
                              f"or send base_version {seq} to save over it", extra={**details, "rule": "new_tag"})
    if seq is None:
        raise VersionConflict(f"workflow {tag!r} no longer exists (this edit was based on its version "
                              f"{base_version}); send base_version null to create it again",
                              extra={**details, "rule": "tag_deleted"})
    raise VersionConflict(f"workflow {tag!r} is at version {seq}; this edit was based on version {base_version} "
                          f"and would drop the changes made since: read version {seq}, merge, and send "
                          f"base_version {seq} (or no base_version to overwrite)", extra=details)


def _first_seq(*, owner: User, tag: str) -> int:
    """A new tag's first version: 0, or the one after the highest this tag had before it was deleted
    (``DeletedTag``). A version number then never names two definitions of one tag: an editor left
    open on the old tag's version N is refused as stale, never taken as based on the new tag's
    version N, and a sub-workflow node pinned to N fails instead of running another definition."""
    last = DeletedTag.objects.filter(owner=owner, tag=tag).values_list("last_seq", flat=True).first()
    return 0 if last is None else last + 1


def _keep_last_seq(workflow: Workflow) -> None:
    """Remember the highest version of a tag being deleted, for ``_first_seq``. Called in the
    delete's transaction: a tag made again after the delete commits reads it."""
    last = workflow.versions.aggregate(last=Max("seq"))["last"]
    if last is not None:
        DeletedTag.objects.update_or_create(owner_id=workflow.owner_id, tag=workflow.tag,
                                            defaults={"last_seq": last})


def version_summary(definition: dict[str, Any]) -> dict[str, Any]:
    """What lists show of a definition, kept on its version (``WorkflowVersion.nodes_count`` and
    the rest) so that no list reads a definition. Versions saved before these fields got theirs
    from migration 0011, by the same rules."""
    metadata = definition.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    nodes, edges = definition.get("nodes"), definition.get("edges")
    return {"nodes_count": len(nodes) if isinstance(nodes, list) else 0,
            "edges_count": len(edges) if isinstance(edges, list) else 0,
            "metadata_name": str(metadata.get("name") or ""),
            "metadata_description": str(metadata.get("description") or "")}


# The most operations one workflow patch may carry (the API's field states the same number).
WORKFLOW_PATCH_MAX_OPERATIONS = 1000


def workflow_patch(*, workflow: Workflow, operations: list[dict[str, Any]], description: str = "",
                   base_version: BaseVersion = ANY) -> Saved:
    """Apply RFC 6902 operations to the current version; the tag moves only if the result validates.
    The current version is read under the workflow's row lock, in the transaction that saves the
    result: a patch applied to a version another patch has just replaced would undo that one."""
    if isinstance(operations, list) and len(operations) > WORKFLOW_PATCH_MAX_OPERATIONS:
        raise ValidationFailed(f"{len(operations)} operations; a workflow patch has at most "
                               f"{WORKFLOW_PATCH_MAX_OPERATIONS}", extra={"field": "operations", "rule": "max_length",
                                                                          "limit": WORKFLOW_PATCH_MAX_OPERATIONS})
    with transaction.atomic():
        # locked alone: a join in the locking read would be checked again against the row the
        # previous writer left, whose current_version the joined row no longer matches
        locked = Workflow.objects.select_for_update().filter(pk=workflow.pk).first()
        if locked is None or locked.current_version is None:  # deleted since it was read
            raise NotFound(f"workflow {workflow.tag!r} not found")
        workflow = locked
        _check_base(tag=workflow.tag, current=workflow.current_version, base_version=base_version)
        patched = apply_operations(workflow.current_version.artifact.content, operations)
        return workflow_save(owner=workflow.owner, tag=workflow.tag, definition=patched, description=description,
                             base_version=workflow.current_version.seq)


def apply_operations(document: Any, operations: Any) -> Any:
    """Apply RFC 6902 operations one at a time, stopping at the first that would take the document
    past ``AOB_MAX_DEFINITION_BYTES``: a few dozen ``copy`` operations double it each time, so the
    size is followed operation by operation, from the sizes of the values each one touches (never
    by serializing the whole document again). The bytes ``copy`` operations duplicate are bounded
    by the same limit, so a copy-and-remove loop cannot spend the web process's CPU either."""
    if not isinstance(operations, list) or not operations:
        raise ValidationFailed("operations must be a non-empty list of RFC 6902 operations",
                               code="invalid_patch", extra={"field": "operations"})
    limit = settings.AOB_MAX_DEFINITION_BYTES
    size, copied, index = json_size(document), 0, 0
    try:
        for position, operation in enumerate(operations):  # every operation well formed before any is applied
            index = position  # named in the refusal if it is not
            jsonpatch.JsonPatch([operation])
            needs = _MEMBERS.get(operation.get("op")) if isinstance(operation, dict) else None
            if needs is not None and needs not in operation:  # not a path's fault: jsonpatch raised KeyError
                raise jsonpatch.InvalidJsonPatch(f"a {operation['op']!r} operation needs {needs!r}")
        index = 0
        document = copy.deepcopy(document)
        for index, operation in enumerate(operations):
            _check_depth(document, operation, index)
            change, duplicated = _size_change(document, operation)
            copied += duplicated
            if size + change > limit or copied > limit:
                what = (f"would make the document {size + change} bytes" if size + change > limit
                        else f"would make the patch copy {copied} bytes")
                raise DocumentTooLarge(
                    f"operation {index} ({operation['op']} {str(operation['path'])[:200]}) {what}; "
                    f"the limit is {limit}",
                    extra={"field": "operations", "path": f"/operations/{index}", "rule": "max_bytes",
                           "op": index, "limit": limit, "size": size + change, "copied": copied})
            document = jsonpatch.JsonPatch([operation]).apply(document, in_place=True)
            size += change
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError, IndexError,
            ValueError) as exc:
        failure = _failure(exc, document, operations[index])
        raise ValidationFailed(f"patch cannot be applied: {_named(index, operations[index])} "
                               f"{_WHY[failure['failure']](exc)}", code="invalid_patch",
                               extra={"field": "operations", "rule": "rfc6902", "op": index, **failure}) from exc
    return document


# Why an operation failed, in words a person can act on (never the exception's own: Python's
# "list index out of range" names no path, and a failed ``test``'s quotes the value it found).
_WHY: dict[str, Callable[[Exception], str]] = {
    "test_failed": lambda exc: "failed: the value at its path is not the one it tests",
    "invalid_operation": lambda exc: f"is not an RFC 6902 operation ({str(exc)[:200]})",
    "path_not_found": lambda exc: ("does not lead into the document: its path (or from) is not a pointer (one "
                                   "starts with /) or names a missing member, an index past the list's end, or "
                                   "an index that is not a number"),
    "cannot_apply": lambda exc: "goes through a value that is neither an object nor an array",
}


def _named(index: int, operation: Any) -> str:
    """``operation 2 (remove /nodes/7)``: the operation as a refusal names it, whatever its shape."""
    if not isinstance(operation, dict):
        return f"operation {index}"
    op, path = operation.get("op"), operation.get("path")
    said = " ".join(str(part)[:200] for part in (op, path) if isinstance(part, str))
    return f"operation {index} ({said})" if said else f"operation {index}"


def json_type(value: Any) -> str:
    """The JSON type of ``value``, as a refusal may name it instead of the value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object" if isinstance(value, dict) else "unknown"


_MISSING = object()


# The member each operation needs beside ``op`` and ``path`` (RFC 6902, 4.1–4.6).
_MEMBERS = {"add": "value", "replace": "value", "test": "value", "copy": "from", "move": "from"}


def _failure(exc: Exception, document: Any, operation: Any) -> dict[str, Any]:
    """Why an operation failed, as facts that quote no value (the exception's text may quote the
    document: a failed ``test`` quotes the value it found): ``failure`` and, for a failed
    ``test``, the JSON types found and tested."""
    if isinstance(exc, jsonpatch.JsonPatchTestFailed) and isinstance(operation, dict):
        try:
            found: Any = jsonpointer.resolve_pointer(document, operation.get("path", ""), _MISSING)
        except (jsonpointer.JsonPointerException, TypeError):
            found = _MISSING
        return {"failure": "test_failed", "found_type": "missing" if found is _MISSING else json_type(found),
                "tested_type": json_type(operation.get("value"))}
    if isinstance(exc, jsonpatch.InvalidJsonPatch):
        return {"failure": "invalid_operation"}
    if isinstance(exc, jsonpatch.JsonPatchConflict | jsonpointer.JsonPointerException | KeyError | IndexError):
        return {"failure": "path_not_found"}
    return {"failure": "cannot_apply"}


def json_size(value: Any) -> int:
    """Bytes of ``value`` as stored (``stored_size``: compact JSON, a number as jsonb writes it
    out), the measure of ``AOB_MAX_DEFINITION_BYTES``."""
    return stored_size(value)


def _check_depth(document: Any, operation: dict[str, Any], index: int) -> None:
    """Refuse an operation that would nest the document past ``AOB_MAX_JSON_DEPTH``: where it puts
    a value, as deep as its path and the value together. The document's depth is judged again by
    ``validate``, after all of them; a dozen ``copy`` operations, each of the chain into its own
    leaf, nested it 8,000 deep before then, and copying or measuring it recursed past Python's
    limit (a 500 on every way a patch comes in: a red team's find)."""
    op, limit = operation["op"], settings.AOB_MAX_JSON_DEPTH
    if op not in ("add", "replace", "copy", "move"):
        return
    at = len(jsonpointer.JsonPointer(operation["path"]).parts)
    if op == "move" and at <= len(jsonpointer.JsonPointer(operation["from"]).parts):
        return  # no deeper than it was, in a document within the limit: nothing to walk
    value = (jsonpointer.JsonPointer(operation["from"]).resolve(document) if op in ("copy", "move")
             else operation["value"])
    depth = at + json_depth(value, limit)
    if depth > limit:
        raise ValidationFailed(
            f"patch cannot be applied: {_named(index, operation)} would nest the document {depth} levels deep; "
            f"the limit is {limit} (AOB_MAX_JSON_DEPTH)",
            code="invalid_patch", extra={"field": "operations", "path": f"/operations/{index}", "rule": "max_depth",
                                         "op": index, "limit": limit})


def _size_change(document: Any, operation: dict[str, Any]) -> tuple[int, int]:
    """(bytes ``operation`` adds to the compact JSON of ``document``, negative when it takes
    some; bytes it duplicates). Exact for add, remove, replace and copy; an upper bound for move.
    A pointer that does not resolve raises, as applying the operation would."""
    op = operation["op"]
    if op == "test":
        return 0, 0
    if op == "remove":
        container, key = jsonpointer.JsonPointer(operation["path"]).to_last(document)
        member = json_size(key) + 1 if isinstance(container, dict) else 0
        return -(member + json_size(container[key]) + (1 if len(container) > 1 else 0)), 0
    if op == "move":  # the value only changes place: at most its new key and a comma more
        parts = jsonpointer.JsonPointer(operation["path"]).parts
        deeper = len(parts) > len(jsonpointer.JsonPointer(operation["from"]).parts)
        # moved deeper, its depth was walked (``_check_depth``): counted as a copy's bytes are, so
        # moves back and forth of a large value cannot spend the process's time (a review's find)
        walked = json_size(jsonpointer.JsonPointer(operation["from"]).resolve(document)) if deeper else 0
        return (json_size(parts[-1]) + 2 if parts else 0), walked
    if op == "copy":
        value_size = json_size(jsonpointer.JsonPointer(operation["from"]).resolve(document))
        return _placed(document, operation["path"], value_size, replace=False), value_size
    return _placed(document, operation["path"], json_size(operation["value"]), replace=op == "replace"), 0


def _placed(document: Any, path: str, value_size: int, *, replace: bool) -> int:
    pointer = jsonpointer.JsonPointer(path)
    if not pointer.parts:
        return value_size - json_size(document)
    container, key = pointer.to_last(document)
    if isinstance(container, dict):
        if key in container:
            return value_size - json_size(container[key])
        return json_size(key) + 1 + value_size + (1 if container else 0)
    if replace:
        return value_size - json_size(container[key])
    return value_size + (1 if container else 0)


def workflow_lock_for_use(*, workflow: Workflow) -> Workflow:
    """Hold the tag against its delete while a row that starts it (a hook, a schedule) is made: in
    the maker's transaction, before any other lock. The delete locks the tag, then at its commit
    its owner's row (``DeletedTag``'s key check), so a maker that locked the owner first (its
    count of hooks) and met the tag's key at its own commit deadlocked with it; one that came
    after it failed that key check, a 500. Now one waits for the other: a delete that comes second
    finds the new row (``workflow_in_use``), a maker that comes second the tag's 404."""
    locked = Workflow.objects.select_for_update(no_key=True).filter(pk=workflow.pk).first()
    if locked is None:
        raise NotFound(f"workflow {workflow.tag!r} not found")
    return locked


_HOLD_FOR_START = "SELECT current_version_id FROM workflows_workflow WHERE id = %s FOR KEY SHARE"


def workflow_version_for_start(*, workflow: Workflow) -> WorkflowVersion:
    """The tag's current version, for a run the caller's transaction is about to insert: the tag's
    row held (``FOR KEY SHARE``, the lock the run's insert takes anyway: a save's ``FOR UPDATE``
    and a delete wait for it, a hook's or schedule's making does not) until that run commits, and
    its version read as committed once held. A start read the version, met a save's lock at its
    insert, and started its run from the version the save had replaced after the save answered (a
    fix removing a leaking step did not hold for a webhook delivered at that moment). Now the save
    waits for the run, or the start for the save and then runs what it saved. First in the start's
    transaction, before a hook's or schedule's row: a tag's delete takes the tag, then them. The
    tag's 404 if it was deleted (or never had a version)."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("workflow_version_for_start holds the tag for the transaction that inserts the run")
    with transaction.get_connection().cursor() as cursor:
        cursor.execute(_HOLD_FOR_START, [workflow.pk])
        row = cursor.fetchone()
    version = WorkflowVersion.objects.filter(pk=row[0]).first() if row and row[0] is not None else None
    if version is None:
        raise NotFound(f"workflow {workflow.tag!r} not found: it was deleted as the run started")
    return version


class WorkflowInUse(Conflict):
    code = "workflow_in_use"


def workflow_delete(*, workflow: Workflow, force: bool = False) -> None:
    """Delete the tag and its version chain; runs keep their frozen artifacts.

    What starts the tag (its schedules and hooks: their foreign keys are ``RESTRICT``) is not
    deleted with it unasked: a hook's URL and secret live in a system outside, and would answer
    404 from then on. Without ``force`` such a delete is refused naming them; with it they go
    first, each through the ORM, so their own ``post_delete`` receivers run (beat's entry)."""
    with transaction.atomic():
        # locked first: a schedule or hook made meanwhile waits on it (its key check), then finds the
        # tag gone, so the dependants read below are all there are when it goes
        locked = Workflow.objects.select_for_update().filter(pk=workflow.pk).first()
        if locked is None:  # another delete of the tag committed while this one waited on its lock
            raise NotFound(f"workflow {workflow.tag!r} not found")
        workflow = locked
        _keep_last_seq(workflow)  # undone with the delete when it is refused
        try:
            with transaction.atomic():
                workflow.delete()
                return
        except RestrictedError as exc:
            users = sorted(exc.restricted_objects, key=lambda o: (o._meta.verbose_name, str(o.pk)))
        if not force:
            named = [{"kind": str(o._meta.verbose_name), "id": o.pk, "name": getattr(o, "name", "")} for o in users]
            listed = ", ".join(f"{u['kind']} {u['id']}" + (f" ({u['name']})" if u["name"] else "") for u in named)
            raise WorkflowInUse(f"workflow {workflow.tag!r} is started by {listed}: delete them first, or send "
                                "force=true to delete them with it", extra={"field": "force", "rule": "in_use",
                                                                             "used_by": named})
        for used_by in users:
            used_by.delete()
        workflow.delete()
