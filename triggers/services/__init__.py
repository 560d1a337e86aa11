"""Trigger services: schedules (``schedules``) and webhooks (``hooks``), and the rule both obey."""

from __future__ import annotations

from django.contrib.auth.models import User

from aob_project.exceptions import ValidationFailed
from workflows.models import Workflow


def trigger_owner_check(owner: User, workflow: Workflow, *, what: str,
                        error: type[ValidationFailed] = ValidationFailed) -> None:
    """A trigger (a schedule, a hook) starts runs of its owner's own workflow, as its owner: one of
    another's would run their version under the trigger owner's name. The API finds the workflow
    by tag among the caller's own; this holds for every other caller of the services too. The refusal
    names no tag: the admin's form takes a workflow by its key, and each key refused with its tag
    listed every owner's tags to staff who may read none of them."""
    if workflow.owner_id != owner.pk:
        raise error(f"the workflow is not {owner.username!r}'s: a {what} runs its owner's own workflow",
                    extra={"field": "workflow", "rule": "workflow_owner"})
