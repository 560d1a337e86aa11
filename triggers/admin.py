"""Schedules and hooks in the admin. A schedule saved here goes through the same service as the API
(its PeriodicTask follows); a hook's secret is never shown (create hooks through the API, UI or CLI,
which show it once)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin

from aob_project.exceptions import AobError
from workflows.admin import ReadOnlyAdmin, latest_rows

from .models import Hook, HookDelivery, Schedule, ScheduleFiring
from .services import schedules


@admin.register(ScheduleFiring)
class ScheduleFiringAdmin(ReadOnlyAdmin):
    list_display = ["schedule", "fire_time", "fired_at", "outcome", "run", "deliveries"]
    list_filter = ["outcome"]


@admin.register(HookDelivery)
class HookDeliveryAdmin(ReadOnlyAdmin):
    list_display = ["hook", "delivery_id", "received_at", "run"]
    search_fields = ["delivery_id"]


class ScheduleForm(forms.ModelForm):
    class Meta:
        model = Schedule
        fields = ["owner", "workflow", "name", "cron", "timezone", "inputs", "version", "catch_up", "enabled"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        try:
            cleaned["cron"], _ = schedules.cron_check(cleaned.get("cron"), cleaned.get("timezone"))
        except AobError as exc:
            self.add_error(exc.extra.get("field") or None, exc.message)
        return cleaned


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin):
    form = ScheduleForm
    list_display = ["id", "workflow", "name", "cron", "timezone", "catch_up", "enabled", "owner", "updated_at"]
    list_filter = ["enabled", "catch_up"]
    search_fields = ["name", "workflow__tag", "owner__username"]
    fields = ["owner", "workflow", "name", "cron", "timezone", "inputs", "version", "catch_up", "enabled",
              "periodic_task", "created_at", "updated_at", "firings"]
    readonly_fields = ["periodic_task", "created_at", "updated_at", "firings"]

    @admin.display(description="firings (latest first)")
    def firings(self, obj: Schedule) -> str:
        if obj.pk is None:
            return "—"
        return latest_rows(ScheduleFiring.objects.filter(schedule=obj).order_by("-fire_time"),
                           ["fire_time", "fired_at", "outcome", "run", "deliveries", "error"], rest={"schedule": obj.pk})

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        schedules._sync_periodic_task(obj)  # the service's own sync, as on the API

    def delete_model(self, request, obj):
        schedules.schedule_delete(schedule=obj)


@admin.register(Hook)
class HookAdmin(admin.ModelAdmin):
    list_display = ["id", "workflow", "name", "enabled", "owner", "last_delivery_at", "created_at"]
    list_filter = ["enabled"]
    search_fields = ["id", "name", "workflow__tag", "owner__username"]
    fields = ["id", "owner", "workflow", "name", "mapping", "enabled", "created_at", "last_delivery_at", "deliveries"]
    readonly_fields = ["id", "owner", "workflow", "created_at", "last_delivery_at", "deliveries"]

    @admin.display(description="deliveries (latest first)")
    def deliveries(self, obj: Hook) -> str:
        return latest_rows(HookDelivery.objects.filter(hook=obj).order_by("-received_at", "-id"),
                           ["delivery_id", "received_at", "run"], rest={"hook": obj.pk})

    def has_add_permission(self, request, obj=None):
        return False
