"""Approvals in the admin: pending first, with their context; approve and reject go through
``approval_decide`` as the admin user, like every other surface. Users and groups are Django's
pages, with names that approvers read one way only (a name is a user's or a group's, never both)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.helpers import ActionForm
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm
from django.contrib.auth.models import Group, User
from django.db import models
from django.db.models import Q
from django.db.models.constants import LOOKUP_SEP
from django.db.models.functions import Left
from django.utils.html import format_html_join
from django.utils.text import Truncator

from aob.text import shown
from aob_project.exceptions import Conflict
from approvals import services
from approvals.models import PENDING_FIRST, Approval, Decision, Delivery, NotificationTarget
from approvals.selectors import fill_decidable, seen_by
from workflows.admin import (
    OwnedRowsAdmin,
    OwnersRowsAdmin,
    ReadOnlyAdmin,
    RunPatchAdmin,
    act_on_each,
    latest_rows,
    pretty_head,
)
from workflows.approvers import names_of_both, validate_group_name, validate_username
from workflows.models import Run, RunPatch, Workflow

MESSAGE_CHARS = 120  # the list's cut of a message (the approval's page shows it whole)


def _name_judged(form: forms.ModelForm, field: str, value: Any, validate: Callable[..., None], holder: str) -> Any:
    """``value`` once ``validate`` passes it, where the form sets or changes the name: a row that
    clashed before the rule (``workflows.approvers``) can still be edited, deactivated or renamed,
    and may take back a name it left."""
    if value and field in form.changed_data:
        validate(value, **{holder: form.instance.pk})
    return value


class UserAddForm(AdminUserCreationForm):
    def clean_username(self) -> Any:
        return _name_judged(self, "username", super().clean_username(), validate_username, "user_id")


class UserForm(UserChangeForm):
    def clean_username(self) -> Any:
        return _name_judged(self, "username", self.cleaned_data.get("username"), validate_username, "user_id")


class GroupForm(forms.ModelForm):
    class Meta:
        model = Group
        fields = ["name", "permissions"]

    def clean_name(self) -> Any:
        return _name_judged(self, "name", self.cleaned_data.get("name"), validate_group_name, "group_id")


admin.site.unregister(User)
admin.site.unregister(Group)


@admin.register(User)
class NamedUserAdmin(UserAdmin):
    """Django's, refusing a username that is a group's name."""

    form = UserForm
    add_form = UserAddForm

    def get_deleted_objects(self, objs, request):
        """A user who owns runs or workflows is not deleted here (their rows' admins delete nothing:
        history), as before, but refused on two existence checks: Django read every row the delete
        would cascade to, to list it, before refusing (one run of 10,000 node runs and 20,000 events:
        15 s and 80 MB of a web process, at each view, post and bulk delete). Deactivate them instead."""
        owners = [user.pk for user in objs]
        held = [name for model, name in ((Run, "runs"), (Workflow, "workflows"))
                if model.objects.filter(owner_id__in=owners).exists()]
        if held:
            return [], {}, {f"their {name} (deactivate the user instead)" for name in held}, []
        return super().get_deleted_objects(objs, request)


@admin.register(Group)
class NamedGroupAdmin(GroupAdmin):
    """Django's, refusing a group name that is a user's username."""

    form = GroupForm


class DecideActionForm(ActionForm):
    comment = forms.CharField(required=False, label="Comment", widget=forms.TextInput(attrs={"size": 40}))


# A vote's or a notification's page names its approval, read without these (the approval's own
# page cuts them): Django read the row whole to name it.
_APPROVAL_LARGE = ("approval__context", "approval__message")


# The approval by id: naming it (its __str__) would join every approval row, context and all.
class ApprovalRowsAdmin(OwnersRowsAdmin):
    """Approvals, and the rows under one, of every run to staff who read every run; else, as the
    API shows approvals (``selectors.seen_by``), those of the reader's runs and those they are asked
    to decide (the admin is a place to decide them). ``via``: the lookup from a row to its approval."""

    via = ""

    def own(self, user: Any) -> Q:
        return seen_by(user, self.via)  # one lookup in the row's own approver list: no row twice


@admin.register(Decision)
class DecisionAdmin(ApprovalRowsAdmin, ReadOnlyAdmin):
    """Votes, for the link under an approval's latest ones; made only through approval_decide."""

    via = "approval__"

    list_display = ["approval_id", "username", "approve", "voided", "at"]
    list_columns = ["approval", "username", "approve", "voided", "at"]
    list_filter = ["approve", "voided"]
    search_fields = ["username"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("approval").defer(*_APPROVAL_LARGE)


@admin.register(Delivery)
class DeliveryAdmin(ApprovalRowsAdmin, ReadOnlyAdmin):
    """Who was told, when, on which channel, and what came of it."""

    via = "approval__"

    # recipient: the name the approval lists (a group's, for its members); user: whom it was sent to
    list_display = ["approval_id", "recipient", "user", "channel", "reason", "status", "attempts", "created_at",
                    "sent_at"]
    list_columns = ["approval", "recipient", "user__username", "channel", "reason", "status", "attempts", "created_at",
                    "sent_at"]
    list_filter = ["status", "channel", "reason"]
    search_fields = ["recipient"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("approval").defer(*_APPROVAL_LARGE)

    # Whom a delivery was sent to (a group's member; the webhook target, a row the targets' page
    # shows its person only) only to staff who read every run; to everyone else the name the
    # approval lists, as the API answers: naming a group on a gate of one's own run must not list
    # its members.
    MEMBER_FIELDS = ("user", "target")

    def _kept(self, request, fields):
        return fields if self.reads_every(request.user) else [f for f in fields if f not in self.MEMBER_FIELDS]

    def get_list_display(self, request):
        return self._kept(request, super().get_list_display(request))

    def get_fields(self, request, obj=None):
        return self._kept(request, super().get_fields(request, obj))

    def lookup_allowed(self, lookup, value, request=None):
        """Nor filters by them (``?user=<id>`` counted a group's members one id at a time): Django's 400."""
        if lookup.partition(LOOKUP_SEP)[0] in self.MEMBER_FIELDS and not (
                request is not None and self.reads_every(request.user)):
            return False
        return super().lookup_allowed(lookup, value, request)


@admin.register(NotificationTarget)
class NotificationTargetAdmin(OwnedRowsAdmin):
    owner_field = "user"  # a group's target (no user) is a superuser's to add and change
    others_visible = staticmethod(lambda user: False)  # a webhook URL is a credential (``notifications._private``)
    list_display = ["id", "user", "group", "webhook_url", "enabled", "created_at"]
    list_columns = ["user__username", "group__name", "webhook_url", "enabled", "created_at"]
    list_filter = ["enabled"]
    # searched as one types (the auth admins' search_fields), not a select of every user and group
    autocomplete_fields = ["user", "group"]
    # a webhook typed without its scheme is https (Django 6's default, stated now)
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}


@admin.register(Approval)
class ApprovalAdmin(ApprovalRowsAdmin):
    list_display = ["id", "status", "kind", "run", "node_id", "message_head", "approver_list", "deadline",
                    "created_at"]
    list_columns = ["status", "kind", "run__tag", "node_id", "approvers", "deadline", "created_at"]
    list_filter = ["status", "kind"]
    search_fields = ["node_id", "message", "run__id"]
    readonly_fields = ["run", "node_id", "kind", "status", "message_shown", "context_pretty", "approver_list",
                       "who_can_decide", "required_approvals", "allow_self_approval", "form_shown", "deadline", "on_timeout",
                       "escalate_to_shown", "escalated", "patch", "created_at", "decided_at", "remind_at", "reminded_at", "action_digest",
                       "decisions", "deliveries", "notifications_not_sent"]
    fieldsets = [
        (None, {"fields": tuple(readonly_fields[:-3])}),
        ("Decisions", {"fields": ["decisions"]}),
        # how many the run's AOB_MAX_NOTIFICATIONS_PER_RUN kept back (approvals/notifications.py)
        ("Notifications", {"fields": ["deliveries", "notifications_not_sent"]}),
    ]
    action_form = DecideActionForm
    actions = ["approve", "reject"]

    def get_queryset(self, request):
        # the context (every upstream output) is read only cut, by context_pretty; the list reads
        # a message's head only (the page reads it whole); the run it names without its inputs
        return (super().get_queryset(request).select_related("run", "patch").defer(
            "context", "message", "run__inputs", "patch__operations")
                .annotate(message_cut=Left("message", MESSAGE_CHARS + 1)))

    def get_ordering(self, request):
        # Here, not in get_queryset: the changelist puts this (or Meta.ordering) before any
        # ordering the queryset carries. Their index's order (``approval_pending_first``).
        return [PENDING_FIRST.asc(), "-pk"]

    def has_add_permission(self, request, obj=None):
        return False

    # Decisions are history: they are made through approval_decide (the actions), never edited.
    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="approvers")
    def approver_list(self, obj: Approval) -> str:
        """One name a line, never cut: who may decide is what an admin looks for."""
        names = obj.approvers or []
        return format_html_join("", "<div style='white-space:nowrap'>{}</div>", ((shown(n),) for n in names)) or "—"

    @admin.display(description="who can decide")
    def who_can_decide(self, obj: Approval) -> str:
        """Staff decide only as approvers: a pending approval none of whose approvers reaches an active
        person is one only its deadline or a cancel of its run ends (selectors.fill_decidable)."""
        if obj.status != Approval.Status.PENDING:
            return "—"
        filled = fill_decidable([obj])[0]
        shared = names_of_both(obj.approvers or [])
        read = f"; {', '.join(shared)}: a user's name and a group's, read as the group" if shared else ""
        if filled.nobody_can_decide:  # type: ignore[attr-defined]
            return ("nobody can decide it: no approver is an active user or a group with an active member; "
                    + ("its deadline applies its on_timeout" if obj.deadline else "only cancelling its run ends it")
                    + read)
        if filled.cannot_be_approved:  # type: ignore[attr-defined]
            return (f"fewer active people could approve it than the {obj.required_approvals} it needs"
                    + ("" if obj.allow_self_approval else " (not the run's owner: allow_self_approval is false)")
                    + ": it can be rejected, never approved" + read)
        return "its approvers (an active user or group member each)" + read

    # the message is often an agent's words: its bidirectional controls and invisible characters
    # drawn as escapes (``aob.text``), as every other place shows them
    @admin.display(description="message")
    def message_head(self, obj: Approval) -> str:
        return shown(Truncator(obj.message_cut).chars(MESSAGE_CHARS))  # type: ignore[attr-defined]  # get_queryset's

    @admin.display(description="message")
    def message_shown(self, obj: Approval) -> str:
        return shown(obj.message)

    @admin.display(description="form")
    def form_shown(self, obj: Approval) -> str:  # a gate's form, which a patch may have written
        return "—" if obj.form is None else shown(json.dumps(obj.form, ensure_ascii=False))

    @admin.display(description="escalate to")
    def escalate_to_shown(self, obj: Approval) -> str:
        return shown(", ".join(obj.escalate_to or [])) or "—"

    @admin.display(description="context (inputs and upstream outputs)")
    def context_pretty(self, obj: Approval) -> str:
        return pretty_head(Approval.objects.filter(pk=obj.pk), "context", whole=f"GET /api/v1/approvals/{obj.pk}")

    # The latest votes and notifications, with a link to the rest: an approval reopened by
    # patches, or notified through many groups, gathers rows without end, and an inline read and
    # rendered every one of them.
    @admin.display(description="latest first")
    def decisions(self, obj: Approval) -> str:
        return latest_rows(Decision.objects.filter(approval=obj).order_by("-at", "-id"),
                           ["username", "approve", "voided", "comment", "data", "at"], rest={"approval": obj.pk})

    @admin.display(description="latest first")
    def deliveries(self, obj: Approval) -> str:
        return latest_rows(Delivery.objects.filter(approval=obj).order_by("-created_at", "-id"),
                           ["recipient", "channel", "reason", "status", "attempts", "error", "created_at", "sent_at"],
                           rest={"approval": obj.pk})

    def _decide(self, request, queryset, approve: bool) -> None:
        comment = request.POST.get("comment", "")
        act_on_each(self, request, queryset, "approved" if approve else "rejected",
                    lambda approval: services.approval_decide(approval=approval, user=request.user, approve=approve,
                                                              comment=comment))

    @admin.action(description="Approve selected (with the comment above)")
    def approve(self, request, queryset):
        self._decide(request, queryset, True)

    @admin.action(description="Reject selected (with the comment above)")
    def reject(self, request, queryset):
        self._decide(request, queryset, False)


class RunPatchDecisionAdmin(RunPatchAdmin):
    """Run patches as the workflows app shows them, plus approve / reject of the ones held for a
    person, through ``approval_decide`` (registered here so that workflows never imports approvals)."""

    actions = ["approve_patches", "reject_patches"]

    def _decide(self, request, queryset, approve: bool) -> None:
        def decide(patch: RunPatch) -> None:
            approval = Approval.objects.filter(patch=patch, kind=Approval.Kind.PATCH).first()
            if patch.status != RunPatch.Status.PENDING_APPROVAL or approval is None:
                raise Conflict(f"the patch is {patch.status}, not pending")
            services.approval_decide(approval=approval, user=request.user, approve=approve,
                                     comment="decided in the admin")

        act_on_each(self, request, queryset.select_related("run"), "approved" if approve else "rejected", decide)

    @admin.action(description="Approve selected pending patches")
    def approve_patches(self, request, queryset):
        self._decide(request, queryset, True)

    @admin.action(description="Reject selected pending patches")
    def reject_patches(self, request, queryset):
        self._decide(request, queryset, False)


admin.site.unregister(RunPatch)
admin.site.register(RunPatch, RunPatchDecisionAdmin)
