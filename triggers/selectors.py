"""Reads of triggers for their owners."""

from __future__ import annotations

from django.db.models import (
    CharField,
    F,
    JSONField,
    PositiveSmallIntegerField,
    QuerySet,
    TextField,
    UUIDField,
    Value,
)

from .models import Hook, HookDelivery, HookRefusal

# the columns both kinds of delivery are listed with, in this order (a UNION's columns are by position)
_COLUMNS = ("at", "delivery", "outcome", "run_ref", "code_", "status_", "message_", "details_", "row")


def hook_deliveries_listed(*, hook: Hook) -> QuerySet:
    """The hook's deliveries, newest first: the accepted ones (with their run; kept
    ``AOB_HOOK_DELIVERY_RETENTION_S``) and the refused ones (with what their sender was told; the
    latest ``AOB_HOOK_REFUSALS_KEPT``), as rows of ``_COLUMNS``, for a page of them to be read."""
    accepted = HookDelivery.objects.filter(hook=hook).annotate(
        at=F("received_at"), delivery=F("delivery_id"), outcome=Value("accepted", CharField()),
        run_ref=F("run_id"), code_=Value(None, CharField()), status_=Value(None, PositiveSmallIntegerField()),
        message_=Value(None, TextField()), details_=Value(None, JSONField()), row=F("id")).values(*_COLUMNS)
    refused = HookRefusal.objects.filter(hook=hook).annotate(
        at=F("received_at"), delivery=F("delivery_id"), outcome=Value("refused", CharField()),
        run_ref=Value(None, UUIDField()),
        code_=F("code"), status_=F("status"), message_=F("message"), details_=F("details"), row=F("id"),
    ).values(*_COLUMNS)
    return accepted.union(refused, all=True).order_by("-at", "outcome", "-row")
