"""Who may see a run: one rule. ``workflows.selectors.runs_visible`` / ``run_get`` read it, and every
run view (API, web pages, WebSocket, approvals, sub-runs) reads through those.

A run is visible to its owner, to staff whom the admin lets read runs (``reads_every_run``),
and to every person asked to decide one of its approvals, by name or through a group they belong to (``workflows.approvers``: a name that is a
group's is the group's; an approver who could decide but not see the run would decide blind). The
approvers are read through the reverse relation ``approvals`` (``approvals.Approval.run``), so this
module needs no import of the approvals app."""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet

from workflows.approvers import naming
from workflows.models import Run


def reads_every_run(user: Any) -> bool:
    """Staff whom the admin lets read runs (its ``workflows.view_run`` permission; a superuser holds
    every permission) read every owner's runs, on every surface. Being staff only lets a person into
    the admin, whose pages then show what their permissions allow: before, staff alone read every
    tenant's runs (inputs, outputs, events, artifacts) over the API, the pages and the WebSocket,
    though an operator made them staff to look after their own schedules, with no permission to
    read a run in the admin."""
    return bool(getattr(user, "is_staff", False) and user.has_perm("workflows.view_run"))


def reads_every_workflow(user: Any) -> bool:
    """``reads_every_run`` for workflows (``workflows.view_workflow``): every owner's tags listed
    (``scope=global``) and their versions' artifacts."""
    return bool(getattr(user, "is_staff", False) and user.has_perm("workflows.view_workflow"))


def reads_every_run_and_workflow(user: Any) -> bool:
    """Both, for a row that shows another owner's workflows and runs together: an artifact (a
    version's and a run's alike), a schedule (its workflow's tag beside the inputs of every run it
    starts) or a hook (its workflow's tag beside the mapping that makes its runs' inputs)."""
    return reads_every_run(user) and reads_every_workflow(user)


def runs_visible(*, user: Any) -> QuerySet[Run]:
    if not getattr(user, "is_authenticated", False):
        return Run.objects.none()
    if reads_every_run(user):
        return Run.objects.all()
    return Run.objects.filter(Q(owner=user) | Q(pk__in=_asked(user)))


def run_visible(run: Run, *, user: Any) -> bool:
    """The same rule for one run already read: the owner is answered from the row and the user
    (no query: the common case, a person reading their own run); only someone else's run asks
    for staff's permission (cached on the user) or whether an approval names this user."""
    if not getattr(user, "is_authenticated", False):
        return False
    if run.owner_id == user.pk or reads_every_run(user):
        return True
    return _asked(user).filter(pk=run.pk).exists()


def _asked(user: Any) -> QuerySet[Run]:
    """The runs with an approval that names ``user`` or one of its groups."""
    return Run.objects.filter(naming(user, "approvals__approvers")).values("pk")
