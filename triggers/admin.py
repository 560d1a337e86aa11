"""Schedules and hooks in the admin. A schedule is made, changed and deleted here through the same
services as on the API (their rules shown on the form; its PeriodicTask follows); a hook is changed
and deleted through its services too (deleted by its owner only), and its secret is never shown
(create hooks through the API, UI or CLI, which show it once)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django_celery_beat.admin import (
    ClockedScheduleAdmin,
    CrontabScheduleAdmin,
    IntervalScheduleAdmin,
    PeriodicTaskAdmin,
    SolarScheduleAdmin,
)
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    SolarSchedule,
)

from aob_project.exceptions import AobError
from workflows import visibility
from workflows.admin import (
    OwnedRowsAdmin,
    OwnersRowsAdmin,
    ReadOnlyAdmin,
    StrictJSONField,
    SuperusersOnly,
    latest_rows,
)

from .models import Hook, HookDelivery, HookRefusal, Schedule, ScheduleFiring
from .services import hooks, schedules

admin.site.unregister(PeriodicTask)


@admin.register(PeriodicTask)
class BeatEntryAdmin(SuperusersOnly, PeriodicTaskAdmin):
    """django-celery-beat's page without the schedules' own entries: each is derived from its
    ``Schedule`` (changed, disabled and deleted on the Schedules page, through the services), and
    one changed, disabled or deleted here would leave its schedule saying one thing and beat doing
    another. Deleting one elsewhere is refused (``Schedule.periodic_task`` protects it).
    Superusers only, as every beat page: an entry sends any task with any arguments (a staff member
    with its permissions fired another user's schedule, at slots of their choosing, as that user)."""

    def get_queryset(self, request: Any) -> Any:
        return super().get_queryset(request).exclude(task=schedules.FIRE_TASK)

    def get_form(self, request: Any, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change, **kwargs)

        class BeatEntryForm(form):  # type: ignore[misc, valid-type]
            """beat's form read its ``task`` in ``clean`` as though the field could not be refused: a
            name with a NUL (or past its length) answered a 500 (``KeyError``), not the field's error."""

            def clean(self) -> Any:
                if "task" not in self.cleaned_data and not self.cleaned_data.get("regtask"):
                    return self.cleaned_data  # the field's own error stands
                return super().clean()

        return BeatEntryForm


for model, beat_admin in ((IntervalSchedule, IntervalScheduleAdmin), (SolarSchedule, SolarScheduleAdmin),
                          (ClockedSchedule, ClockedScheduleAdmin)):  # beat's other pages, superusers' as its entries'
    admin.site.unregister(model)
    admin.site.register(model, type(beat_admin.__name__, (SuperusersOnly, beat_admin), {}))

admin.site.unregister(CrontabSchedule)


@admin.register(CrontabSchedule)
class CronAdmin(SuperusersOnly, CrontabScheduleAdmin):
    """django-celery-beat's crontabs. A row a schedule's entry uses is read-only here: schedules with
    the same cron and time zone share it, so one edit would move every one of them while each
    ``Schedule.cron`` still said the old time (a schedule's cron is changed on the Schedules page,
    which takes the row of the new cron). The entries using a row are listed bounded, not inline."""

    inlines: list[Any] = []
    readonly_fields = ("human_readable", "entries")
    fields = (*CrontabScheduleAdmin.fields, "entries")

    def _used_by_schedules(self, obj: CrontabSchedule | None) -> bool:
        return obj is not None and PeriodicTask.objects.filter(crontab=obj, task=schedules.FIRE_TASK).exists()

    def has_change_permission(self, request: Any, obj: CrontabSchedule | None = None) -> bool:
        return super().has_change_permission(request, obj) and not self._used_by_schedules(obj)

    def has_delete_permission(self, request: Any, obj: CrontabSchedule | None = None) -> bool:
        return super().has_delete_permission(request, obj) and not self._used_by_schedules(obj)

    @admin.display(description="human readable")
    def human_readable(self, obj: CrontabSchedule) -> str:
        """beat's reading of the row; of a row the form refused (``minute: -1``) it raised, a 500
        where the form's errors were due."""
        try:
            return obj.human_readable
        except Exception:  # noqa: BLE001 - celery's ParseException and ValueError: nothing to read
            return "—"

    @admin.display(description="beat entries using it (latest first)")
    def entries(self, obj: CrontabSchedule) -> str:
        if obj.pk is None:
            return "—"
        return latest_rows(PeriodicTask.objects.filter(crontab=obj).order_by("-id"), ["name", "task", "enabled"],
                           rest={"crontab__id__exact": obj.pk})


@admin.register(ScheduleFiring)
class ScheduleFiringAdmin(OwnersRowsAdmin, ReadOnlyAdmin):
    owner = "schedule__owner"  # its run's, as the schedule starts runs as its owner
    list_display = ["schedule", "fire_time", "fired_at", "outcome", "run", "deliveries"]
    list_columns = ["schedule__cron", "schedule__timezone", "fire_time", "fired_at", "outcome", "run__tag",
                    "deliveries"]
    list_filter = ["outcome"]

    def get_queryset(self, request):
        # the page names its schedule and run, read without their inputs (a run's up to megabytes)
        return super().get_queryset(request).select_related("schedule", "run").defer("schedule__inputs",
                                                                                      "run__inputs")


@admin.register(HookDelivery)
class HookDeliveryAdmin(OwnersRowsAdmin, ReadOnlyAdmin):
    owner = "hook__owner"
    reads_every = staticmethod(visibility.reads_every_run_and_workflow)  # who reads another's hooks (HookAdmin)
    list_display = ["hook", "delivery_id", "received_at", "run"]
    list_columns = ["hook__id", "delivery_id", "received_at", "run__tag"]
    search_fields = ["delivery_id"]

    def get_queryset(self, request):
        # the page names its run, read without its inputs (up to megabytes)
        return super().get_queryset(request).select_related("hook", "run").defer("run__inputs")


EDITABLE = ["name", "cron", "timezone", "inputs", "version", "catch_up", "enabled"]  # owner, workflow: once


class ScheduleForm(forms.ModelForm):
    """Parses the fields; the rules are the service's (``schedule_check``), shown by field."""

    class Meta:
        model = Schedule
        fields = ["owner", "workflow", *EDITABLE]
        field_classes = {"inputs": StrictJSONField}

    def clean_inputs(self) -> dict[str, Any]:
        inputs = self.cleaned_data.get("inputs")
        if inputs is None:
            return {}
        if not isinstance(inputs, dict):
            raise forms.ValidationError("a run's inputs are a JSON object")
        return inputs

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.errors:  # a field that did not parse: the rules would judge a value that is not there
            return cleaned
        new = self.instance.pk is None
        try:
            cleaned["cron"] = schedules.schedule_check(
                owner=cleaned["owner"] if new else self.instance.owner,
                workflow=cleaned["workflow"] if new else self.instance.workflow,
                cron=cleaned["cron"], tz=cleaned["timezone"],
                version=cleaned["version"] if new or "version" in self.changed_data else None,
                inputs=cleaned.get("inputs") if new or "inputs" in self.changed_data else None,
                schedule=None if new else self.instance)
        except AobError as exc:
            field = exc.extra.get("field")
            self.add_error(field if field in self.fields else None, exc.message)
        return cleaned


class DeletedWithHistory:
    """The delete confirmation of a schedule or hook names what is deleted and counts what goes
    with it (its firings, its delivery ids), in one query each. Django's own listed every one of
    those rows, and asked for a permission to delete them that no one has (they are read-only
    history), so the page refused even the owner as soon as there was one."""

    history: tuple[tuple[Any, str], ...] = ()

    def get_deleted_objects(self, objs: Any, request: Any) -> tuple[list[Any], dict[str, int], set[str], list[Any]]:
        objs = list(objs)
        counts = {model._meta.verbose_name_plural: model.objects.filter(**{f"{parent}__in": objs}).count()
                  for model, parent in self.history}
        own = self.model._meta  # type: ignore[attr-defined]
        # each selected row's own rule still holds (a hook: its owner only)
        refused = {own.verbose_name} if any(not self.has_delete_permission(request, obj)  # type: ignore[attr-defined]
                                            for obj in objs) else set()
        return [str(obj) for obj in objs], {own.verbose_name_plural: len(objs),
                                            **{name: n for name, n in counts.items() if n}}, refused, []


@admin.register(Schedule)
class ScheduleAdmin(DeletedWithHistory, OwnedRowsAdmin):
    history = ((ScheduleFiring, "schedule"),)
    form = ScheduleForm
    list_display = ["id", "workflow", "name", "cron", "timezone", "catch_up", "enabled", "owner", "updated_at"]
    list_columns = ["workflow__tag", "name", "cron", "timezone", "catch_up", "enabled", "owner__username", "updated_at"]
    list_filter = ["enabled", "catch_up"]
    search_fields = ["name", "workflow__tag", "owner__username"]
    fields = ["owner", "workflow", "name", "cron", "timezone", "inputs", "version", "catch_up", "enabled",
              "periodic_task", "created_at", "updated_at", "firings"]
    readonly_fields = ["periodic_task", "created_at", "updated_at", "firings"]
    others_visible = staticmethod(visibility.reads_every_run_and_workflow)
    raw_id_fields = ["owner", "workflow"]  # a select would list every user and every workflow

    @admin.display(description="firings (latest first)")
    def firings(self, obj: Schedule) -> str:
        if obj.pk is None:
            return "—"
        return latest_rows(ScheduleFiring.objects.filter(schedule=obj).order_by("-fire_time"),
                           ["fire_time", "fired_at", "outcome", "run", "deliveries", "error"], rest={"schedule": obj.pk})

    def get_readonly_fields(self, request, obj=None):
        # as on the API, a schedule's owner and workflow are chosen once, when it is made
        return [*self.readonly_fields, "owner", "workflow"] if obj else self.readonly_fields

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        if change:
            schedules.schedule_update(schedule=obj, **{f: data[f] for f in form.changed_data if f in EDITABLE})
            return
        made = schedules.schedule_create(owner=data["owner"], workflow=data["workflow"], cron=data["cron"],
                                         tz=data["timezone"], inputs=data["inputs"], name=data["name"],
                                         version=data["version"], catch_up=data["catch_up"], enabled=data["enabled"])
        obj.pk = made.pk  # the admin's log entry and redirect name the schedule made
        obj.refresh_from_db()

    def delete_model(self, request, obj):
        schedules.schedule_delete(schedule=obj)

    def delete_queryset(self, request, queryset):
        for schedule in queryset:
            schedules.schedule_delete(schedule=schedule)


class HookForm(forms.ModelForm):
    """A mapping is judged by the service's ``mapping_check``, as on the API."""

    class Meta:
        model = Hook
        fields = ["name", "mapping", "enabled"]
        field_classes = {"mapping": StrictJSONField}

    def clean_mapping(self) -> Any:
        try:
            return hooks.mapping_check(self.cleaned_data.get("mapping"))
        except AobError as exc:
            raise forms.ValidationError(exc.message) from None


@admin.register(Hook)
class HookAdmin(DeletedWithHistory, OwnedRowsAdmin):
    history = ((HookDelivery, "hook"), (HookRefusal, "hook"))
    form = HookForm
    list_display = ["id", "workflow", "name", "enabled", "owner", "last_delivery_at", "created_at"]
    list_columns = ["workflow__tag", "name", "enabled", "owner__username", "last_delivery_at", "created_at"]
    list_filter = ["enabled"]
    search_fields = ["id", "name", "workflow__tag", "owner__username"]
    fields = ["id", "owner", "workflow", "name", "mapping", "enabled", "created_at", "last_delivery_at", "deliveries"]
    readonly_fields = ["id", "owner", "workflow", "created_at", "last_delivery_at", "deliveries"]
    others_visible = staticmethod(visibility.reads_every_run_and_workflow)

    @admin.display(description="deliveries (latest first)")
    def deliveries(self, obj: Hook) -> str:
        return latest_rows(HookDelivery.objects.filter(hook=obj).order_by("-received_at", "-id"),
                           ["delivery_id", "received_at", "run"], rest={"hook": obj.pk})

    def has_add_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        hooks.hook_update(hook=obj, **{f: form.cleaned_data[f] for f in form.changed_data})

    def has_delete_permission(self, request, obj=None):
        """A hook is deleted by its owner only (``hooks.is_hook_owner``, as on the API): another
        user's has no delete button, and its delete page or a bulk delete that selects it is
        refused (403) with nothing deleted."""
        allowed = super().has_delete_permission(request, obj)
        return allowed and (obj is None or hooks.is_hook_owner(obj, user=request.user))

    def delete_model(self, request, obj):
        hooks.hook_delete(hook=obj, user=request.user)

    def delete_queryset(self, request, queryset):
        for hook in queryset:
            hooks.hook_delete(hook=hook, user=request.user)
