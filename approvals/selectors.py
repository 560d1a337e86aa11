"""Who may see and decide which approval."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db.models import Q, QuerySet

from approvals.exceptions import ApprovalNotFound
from approvals.models import Approval
from workflows.visibility import approver_names  # one definition of the names that ask a user


def _as_approver(user: User) -> Q:
    q = Q()
    for name in approver_names(user):
        q |= Q(approvers__contains=[name])
    return q


def is_approver(approval: Approval, user: User) -> bool:
    names = set(approver_names(user))
    return bool(names & set(approval.approvers))


def approvals_decidable(*, user: User) -> QuerySet[Approval]:
    """Pending approvals this user may decide now."""
    return (Approval.objects.filter(status=Approval.Status.PENDING).filter(_as_approver(user))
            .select_related("run").order_by("deadline", "created_at"))


def approvals_visible(*, user: User) -> QuerySet[Approval]:
    """Approvals of the user's own runs, and the ones the user is (or was) asked to decide."""
    return Approval.objects.filter(Q(run__owner=user) | _as_approver(user)).select_related("run").distinct()


def approval_get(*, user: User, approval_id: object) -> Approval:
    try:
        return approvals_visible(user=user).get(pk=int(str(approval_id)))
    except (Approval.DoesNotExist, ValueError, OverflowError):
        raise ApprovalNotFound("approval not found") from None
