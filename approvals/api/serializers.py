from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from approvals.models import Approval, Decision, Delivery
from approvals.selectors import LISTED_DELIVERIES, fill_decidable
from approvals.services import COMMENT_MAX_CHARS
from workflows.api.serializers import JSONBooleanField, StrictSerializer


class DecideIn(StrictSerializer):
    approve = JSONBooleanField()
    comment = serializers.CharField(required=False, allow_blank=True, max_length=COMMENT_MAX_CHARS, default="")
    # the API's field name; it shadows Serializer.data, which an input serializer never reads
    data = serializers.JSONField(required=False, allow_null=True, default=None)  # type: ignore[assignment]
    # the approval's action_digest as the voter read it: a vote on an action a patch changed since is refused
    action_digest = serializers.CharField(required=False, allow_blank=True, allow_null=True, max_length=80,
                                          default=None)


class CompatDecideIn(StrictSerializer):
    run_id = serializers.UUIDField()
    node_id = serializers.RegexField(r"^[a-zA-Z0-9_-]+$", max_length=200)
    approved = JSONBooleanField()
    comment = serializers.CharField(required=False, allow_blank=True, max_length=COMMENT_MAX_CHARS, default="")
    data = serializers.JSONField(required=False, allow_null=True, default=None)  # type: ignore[assignment]
    # the approval's action_digest as the voter read it: a vote on an action a patch changed since is refused
    action_digest = serializers.CharField(required=False, allow_blank=True, allow_null=True, max_length=80,
                                          default=None)


# a message or a comment, the approvers, whom it escalates to, a form, a context, the latest notifications or
# a decision's data as well (approvals.selectors.fill_page)
LEFT_OUT = ('in a list, while the page has room (AOB_DETAILS_MAX_BYTES), else {"truncated": true, "bytes", '
            '"href"} linking to the approval, which answers it whole')


class DecisionOut(serializers.ModelSerializer):
    user = serializers.CharField(source="username")
    comment = serializers.JSONField(help_text=f"a string; {LEFT_OUT}")

    class Meta:
        model = Decision
        fields = ["user", "approve", "comment", "data", "at"]


class NotificationDeliveryOut(serializers.ModelSerializer):
    class Meta:
        model = Delivery
        fields = ["recipient", "channel", "reason", "status", "attempts", "error", "created_at", "sent_at"]


class ApprovalPatchOut(serializers.Serializer):
    seq = serializers.IntegerField()
    status = serializers.CharField()
    reason = serializers.CharField(allow_blank=True)


class ApprovalOut(serializers.ModelSerializer):
    run_id = serializers.UUIDField()
    asked_by = serializers.SerializerMethodField(help_text=(
        "the username of the run's owner, who asks: anyone may name anyone as an approver (the inbox lists "
        "the askers in turn; GET /approvals?asked_by= lists one's)"))
    message = serializers.JSONField(help_text=f"a string; {LEFT_OUT}")
    decisions = DecisionOut(many=True, read_only=True)
    deliveries = serializers.SerializerMethodField(help_text=(
        "its notifications, oldest first (recipient, channel, reason, status, attempts, error, created_at, "
        f"sent_at); in a list its latest {LISTED_DELIVERIES} only, {LEFT_OUT}"))
    patch_id = serializers.IntegerField(allow_null=True)
    patch = ApprovalPatchOut(allow_null=True, read_only=True, help_text=(
        "a patch approval's patch as it is now: pending_approval, applied, or rejected with the reason (an "
        "approved patch the run's definition moved away from is refused: its reason starts with 'stale:')"))

    nobody_can_decide = serializers.SerializerMethodField(help_text=(
        "pending, and none of its approvers is an active user or a group with an active member (a name "
        "mistyped, an approver deactivated since): nobody can decide it; its deadline, else a cancel, ends it"))

    cannot_be_approved = serializers.SerializerMethodField(help_text=(
        "pending, and fewer active people could approve it than required_approvals (the run's owner not counted "
        "when allow_self_approval is false): a vote can reject it, none can approve it"))

    class Meta:
        model = Approval
        fields = ["id", "run_id", "asked_by", "node_id", "kind", "status", "message", "context", "approvers",
                  "required_approvals", "allow_self_approval", "form", "deadline", "on_timeout", "escalate_to",
                  "escalated", "patch_id", "patch", "decisions", "deliveries", "notifications_not_sent", "created_at",
                  "decided_at", "nobody_can_decide", "cannot_be_approved", "action_digest"]
        extra_kwargs = {**{field: {"help_text": f"{what}; {LEFT_OUT}"} for field, what in (
            ("approvers", "the usernames and group names asked"), ("escalate_to", "whom it escalates to"),
            ("form", "the JSON Schema a decision's data must meet, or null"),
            ("context", "what the approvers are shown of the run"))},
            "action_digest": {"help_text": (
            "while pending, the digest of the action its approvers are asked about (a patch that changes the "
            "action moves it); a vote that sends it back (POST /approvals/{id}/decide action_digest) is refused "
            "409 action_changed when it no longer matches, so a page read before the patch cannot approve the "
            "new action. Once settled, the digest it settled on; \"\" for a patch approval")}}

    def get_asked_by(self, approval: Approval) -> str:
        asked_by = getattr(approval, "asked_by", None)  # read with it (selectors.ASKED_BY)
        return asked_by if asked_by is not None else approval.run.owner.username

    @extend_schema_field({"oneOf": [{"type": "array", "items": {"type": "object", "additionalProperties": {}}},
                                    {"type": "object", "additionalProperties": {}}]})
    def get_deliveries(self, approval: Approval) -> Any:
        shown = getattr(approval, "deliveries_shown", None)  # a list's, measured (selectors.fill_page)
        if isinstance(shown, dict):
            return shown  # the marker
        return NotificationDeliveryOut(approval.deliveries.all() if shown is None else shown, many=True).data

    def get_nobody_can_decide(self, approval: Approval) -> bool:
        flag = getattr(approval, "nobody_can_decide", None)  # a list's page is filled at once
        return bool(flag if flag is not None else fill_decidable([approval])[0].nobody_can_decide)  # type: ignore[attr-defined]

    def get_cannot_be_approved(self, approval: Approval) -> bool:
        flag = getattr(approval, "cannot_be_approved", None)
        return bool(flag if flag is not None else fill_decidable([approval])[0].cannot_be_approved)  # type: ignore[attr-defined]
