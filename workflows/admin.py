"""Admin: every model readable; actions go through the same services as the API."""

from __future__ import annotations

import json

from django.contrib import admin, messages
from django.utils.html import format_html

from aob_project.exceptions import AobError
from workflows.models import Artifact, Event, NodeRun, Run, RunPatch, Workflow, WorkflowVersion
from workflows.services import runs


def pretty(value: object) -> str:
    return format_html("<pre style='white-space:pre-wrap;max-width:70em'>{}</pre>",
                       json.dumps(value, indent=2, ensure_ascii=False, default=str))


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):  # noqa: ANN001, ANN201
        return False

    def has_change_permission(self, request, obj=None):  # noqa: ANN001, ANN201
        return False


@admin.register(Artifact)
class ArtifactAdmin(ReadOnlyAdmin):
    list_display = ["id", "kind", "size_bytes", "created_at"]
    list_filter = ["kind"]
    search_fields = ["id"]
    readonly_fields = ["id", "kind", "size_bytes", "created_at", "content_pretty"]
    exclude = ["content"]

    @admin.display(description="content")
    def content_pretty(self, obj: Artifact) -> str:
        return pretty(obj.content)


class VersionInline(admin.TabularInline):
    model = WorkflowVersion
    extra = 0
    fields = ["seq", "artifact", "description", "created_at"]
    readonly_fields = fields
    can_delete = False


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    list_display = ["tag", "owner", "current_version", "updated_at"]
    search_fields = ["tag", "owner__username"]
    readonly_fields = ["current_version", "created_at", "updated_at"]
    inlines = [VersionInline]


@admin.register(WorkflowVersion)
class WorkflowVersionAdmin(ReadOnlyAdmin):
    list_display = ["workflow", "seq", "artifact", "created_at"]
    readonly_fields = ["workflow", "seq", "artifact", "parent", "description", "created_at"]


class NodeRunInline(admin.TabularInline):
    model = NodeRun
    extra = 0
    fields = ["node_id", "iteration", "node_type", "status", "attempts", "queued_at", "started_at", "finished_at",
              "error"]
    readonly_fields = fields
    can_delete = False
    ordering = ["queued_at", "id"]


class EventInline(admin.TabularInline):
    model = Event
    extra = 0
    fields = ["seq", "type", "node_id", "data", "created_at"]
    readonly_fields = fields
    can_delete = False


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ["id", "tag", "owner", "status", "created_at", "finished_at"]
    list_filter = ["status"]
    search_fields = ["id", "tag", "owner__username"]
    readonly_fields = [f.name for f in Run._meta.fields]
    inlines = [NodeRunInline, EventInline]
    actions = ["cancel_runs"]

    def has_add_permission(self, request, obj=None):  # noqa: ANN001, ANN201
        return False

    @admin.action(description="Cancel selected runs")
    def cancel_runs(self, request, queryset):  # noqa: ANN001, ANN201
        for run in queryset:
            try:
                runs.run_cancel(run=run, user=request.user, reason="cancelled in the admin")
                self.message_user(request, f"cancelled {run.pk}")
            except AobError as exc:
                self.message_user(request, f"{run.pk}: {exc.message}", level=messages.WARNING)


@admin.register(NodeRun)
class NodeRunAdmin(ReadOnlyAdmin):
    list_display = ["run", "node_id", "iteration", "node_type", "status", "attempts", "started_at"]
    list_filter = ["status", "node_type"]
    search_fields = ["node_id", "run__id"]


@admin.register(RunPatch)
class RunPatchAdmin(ReadOnlyAdmin):
    list_display = ["run", "seq", "status", "node_id", "description", "created_at"]
    list_filter = ["status"]
    readonly_fields = ["run", "seq", "status", "node_id", "description", "operations_pretty", "reason", "created_at",
                       "applied_at"]
    exclude = ["operations"]

    @admin.display(description="operations")
    def operations_pretty(self, obj: RunPatch) -> str:
        return pretty(obj.operations)


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ["run", "seq", "type", "node_id", "created_at"]
    list_filter = ["type"]
