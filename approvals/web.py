"""The approval page, and the signed one-time links notifications carry to it."""

from __future__ import annotations

from typing import cast

from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.contrib.auth.views import redirect_to_login
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from approvals import notifications, selectors
from approvals.exceptions import ApprovalNotFound
from approvals.models import LinkOpen


def _refused(request: HttpRequest, status: int, title: str, text: str, approval_id: int | None = None) -> HttpResponse:
    return render(request, "approvals/link_refused.html", {"title": title, "text": text, "approval_id": approval_id,
                                                           "nav": "approvals"}, status=status)


def approval_open(request: HttpRequest, approval_id: int, token: str) -> HttpResponse:
    """A notification's link: for its person only (or a member of its group), once each."""
    delivery = notifications.delivery_for_token(token)
    if delivery is None or delivery.approval_id != approval_id:
        return _refused(request, 404, "Link not valid", "This link is not valid, or it has expired.")
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    if not notifications.may_open(delivery, request.user):
        return _refused(request, 403, "Not your link", "This link was sent to another approver.")
    try:
        with transaction.atomic():
            LinkOpen.objects.create(delivery=delivery, user=request.user)
    except IntegrityError:
        return _refused(request, 410, "Link already used",
                        "This link has been used; open the approval from your inbox.", approval_id)
    return redirect("web-approval", approval_id=approval_id)


@login_required
def approval_page(request: HttpRequest, approval_id: int) -> HttpResponse:
    try:
        approval = selectors.approval_get(user=cast(User, request.user), approval_id=approval_id)  # login_required
    except ApprovalNotFound:
        return render(request, "aob/not_found.html", {"what": "approval", "nav": "approvals"}, status=404)
    return render(request, "approvals/approval.html", {"approval": approval, "nav": "approvals",
                                                       "page": {"approval_id": approval.pk}})
