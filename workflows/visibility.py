"""Who may see a run: one rule. ``workflows.selectors.runs_visible`` / ``run_get`` read it, and every
run view (API, web pages, WebSocket, approvals, sub-runs) reads through those.

A run is visible to its owner, to staff, and to every person asked to decide one of its
approvals, by name or through a group they belong to (``workflows.approvers``: a name that is a
group's is the group's; an approver who could decide but not see the run would decide blind). The
approvers are read through the reverse relation ``approvals`` (``approvals.Approval.run``), so this
module needs no import of the approvals app."""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet

from workflows.approvers import naming
from workflows.models import Run


def runs_visible(*, user: Any) -> QuerySet[Run]:
    if not getattr(user, "is_authenticated", False):
        return Run.objects.none()
    if user.is_staff:
        return Run.objects.all()
    return Run.objects.filter(Q(owner=user) | Q(pk__in=_asked(user)))


def run_visible(run: Run, *, user: Any) -> bool:
    """The same rule for one run already read: owner and staff are answered from the row and the
    user (no query: the common case, a person reading their own run); only someone else's run
    asks the database whether an approval names this user."""
    if not getattr(user, "is_authenticated", False):
        return False
    if user.is_staff or run.owner_id == user.pk:
        return True
    return _asked(user).filter(pk=run.pk).exists()


def _asked(user: Any) -> QuerySet[Run]:
    """The runs with an approval that names ``user`` or one of its groups."""
    return Run.objects.filter(naming(user, "approvals__approvers")).values("pk")
