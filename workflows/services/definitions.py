"""Workflow tags and their version chains (design time)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jsonpatch
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction

from aob_project.exceptions import NotFound, ValidationFailed
from workflows.definition.validation import Report, validate
from workflows.models import Artifact, Workflow, WorkflowVersion

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


def workflow_save(*, owner: User, tag: str, definition: Any, description: str = "") -> Saved:
    """Point ``tag`` at this definition: a new version unless it is already the current one."""
    report = validate(definition)
    if not report.valid:
        raise validation_error(report)
    with transaction.atomic():
        artifact = artifact_store(kind=Artifact.Kind.DAG_VERSION, content=definition)
        try:
            with transaction.atomic():
                workflow, _ = Workflow.objects.get_or_create(owner=owner, tag=tag)
        except IntegrityError:
            workflow = Workflow.objects.get(owner=owner, tag=tag)
        workflow = Workflow.objects.select_for_update().get(pk=workflow.pk)
        current = workflow.current_version
        if current is not None and current.artifact_id == artifact.pk:
            return Saved(workflow, current, False, report)
        seq = (current.seq + 1) if current is not None else 0
        version = WorkflowVersion.objects.create(workflow=workflow, seq=seq, artifact=artifact, parent=current,
                                                 description=description)
        workflow.current_version = version
        workflow.save(update_fields=["current_version", "updated_at"])
    return Saved(workflow, version, True, report)


def workflow_patch(*, workflow: Workflow, operations: list[dict[str, Any]], description: str = "") -> Saved:
    """Apply RFC 6902 operations to the current version; the tag moves only if the result validates."""
    current = workflow.current_version.artifact.content
    patched = apply_operations(current, operations)
    return workflow_save(owner=workflow.owner, tag=workflow.tag, definition=patched, description=description)


def apply_operations(document: Any, operations: Any) -> Any:
    if not isinstance(operations, list) or not operations:
        raise ValidationFailed("operations must be a non-empty list of RFC 6902 operations",
                               code="invalid_patch", extra={"field": "operations"})
    try:
        return jsonpatch.JsonPatch(operations).apply(document, in_place=False)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError, IndexError,
            ValueError) as exc:
        raise ValidationFailed(f"patch cannot be applied: {exc}", code="invalid_patch",
                               extra={"field": "operations", "rule": "rfc6902"}) from exc


def workflow_delete(*, workflow: Workflow) -> None:
    """Delete the tag and its version chain; runs keep their frozen artifacts."""
    with transaction.atomic():
        workflow.delete()


def workflow_get(*, owner: User, tag: str, content: bool = True) -> Workflow:
    """``content=False`` leaves the current version's definition unread (running it needs only its id)."""
    try:
        return Workflow.objects.select_related("current_version__artifact" if content else "current_version").get(
            owner=owner, tag=tag)
    except Workflow.DoesNotExist:
        raise NotFound(f"workflow {tag!r} not found") from None
