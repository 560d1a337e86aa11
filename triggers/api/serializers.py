from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from workflows.api.serializers import JSONBooleanField, JSONObjectField, StrictSerializer, tag_field

from ..models import Hook, Schedule, ScheduleFiring


class ScheduleIn(StrictSerializer):
    tag = tag_field()
    cron = serializers.CharField(max_length=200)
    timezone = serializers.CharField(max_length=64, required=False, default="UTC")
    inputs = JSONObjectField(required=False, default=dict)
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    version = serializers.IntegerField(min_value=0, max_value=2**31 - 1, required=False, allow_null=True,
                                       default=None)
    catch_up = serializers.ChoiceField(choices=Schedule.CatchUp.choices, required=False,
                                       default=Schedule.CatchUp.SKIP)
    enabled = JSONBooleanField(required=False, default=True)


class ScheduleUpdateIn(StrictSerializer):
    cron = serializers.CharField(max_length=200, required=False)
    timezone = serializers.CharField(max_length=64, required=False)
    inputs = JSONObjectField(required=False)
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    version = serializers.IntegerField(min_value=0, max_value=2**31 - 1, required=False, allow_null=True)
    catch_up = serializers.ChoiceField(choices=Schedule.CatchUp.choices, required=False)
    enabled = JSONBooleanField(required=False)


class ScheduleOut(serializers.ModelSerializer):
    tag = serializers.CharField(source="workflow.tag")

    class Meta:
        model = Schedule
        fields = ["id", "tag", "name", "cron", "timezone", "inputs", "version", "catch_up", "enabled",
                  "created_at", "updated_at"]


class FiringOut(serializers.ModelSerializer):
    run_id = serializers.UUIDField(allow_null=True)

    class Meta:
        model = ScheduleFiring
        fields = ["fire_time", "fired_at", "outcome", "run_id", "deliveries", "error"]


class HookIn(StrictSerializer):
    tag = tag_field()
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    mapping = JSONObjectField(required=False, allow_null=True, default=None,
                              help_text='{"cel": "<expression over body, headers>"} or {"template": <JSON>}')
    enabled = JSONBooleanField(required=False, default=True)


class HookUpdateIn(StrictSerializer):
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    mapping = JSONObjectField(required=False, allow_null=True)
    enabled = JSONBooleanField(required=False)


class HookRotateIn(StrictSerializer):
    grace_s = serializers.IntegerField(
        required=False, help_text="seconds the secret replaced still signs (default and most: the server's "
                                  "AOB_HOOK_SECRET_GRACE_S, 24 h); 0 cuts it off now, for a secret that leaked")


class HookOut(serializers.ModelSerializer):
    tag = serializers.CharField(source="workflow.tag")
    url = serializers.SerializerMethodField()
    previous_secret_expires_at = serializers.SerializerMethodField(
        help_text="until when the secret the last rotation replaced still signs; null if it no longer does")

    class Meta:
        model = Hook
        fields = ["id", "tag", "name", "url", "mapping", "enabled", "created_at", "last_delivery_at",
                  "previous_secret_expires_at"]

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_previous_secret_expires_at(self, hook: Hook) -> str | None:
        from ..services.hooks import previous_secret_expiry

        expires = previous_secret_expiry(hook)
        return serializers.DateTimeField().to_representation(expires) if expires else None

    def get_url(self, hook: Hook) -> str:
        from django.conf import settings

        return f"{settings.AOB_PUBLIC_URL}/api/v1/hooks/{hook.pk}"


class HookSecretOut(HookOut):
    secret = serializers.CharField(help_text="the signing secret: shown this once")

    class Meta(HookOut.Meta):
        fields = [*HookOut.Meta.fields, "secret"]


class HookRefusalOut(serializers.Serializer):
    code = serializers.CharField(help_text="the error the sender was answered with")
    status = serializers.IntegerField(help_text="its HTTP status")
    message = serializers.CharField()
    details = serializers.DictField(help_text="its details: the field and rule (never the body)")


class HookDeliveryOut(serializers.Serializer):
    """A row of ``selectors.hook_deliveries_listed``: an accepted delivery and its run, or a refused
    one and what its sender was told."""

    delivery_id = serializers.CharField(source="delivery")
    received_at = serializers.DateTimeField(source="at")
    outcome = serializers.ChoiceField(choices=["accepted", "refused"])
    run_id = serializers.UUIDField(source="run_ref", allow_null=True)
    error = serializers.SerializerMethodField()

    @extend_schema_field(HookRefusalOut(allow_null=True))
    def get_error(self, row: dict[str, Any]) -> dict[str, Any] | None:
        if row["outcome"] != "refused":
            return None
        return {"code": row["code_"], "status": row["status_"], "message": row["message_"], "details": row["details_"]}


class HookAcceptedOut(serializers.Serializer):
    run_id = serializers.UUIDField(allow_null=True)
    duplicate = serializers.BooleanField()
