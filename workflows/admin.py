"""Admin: every model readable; actions go through the same services as the API."""

from __future__ import annotations

import json

from django.contrib import admin, messages
from django.utils.html import format_html, format_html_join

from aob_project.exceptions import AobError
from workflows.models import Artifact, Event, NodeRun, PatchRefusal, Run, RunPatch, Workflow, WorkflowVersion
from workflows.services import runs


def pretty(value: object) -> str:
    return format_html("<pre style='white-space:pre-wrap;max-width:70em'>{}</pre>",
                       json.dumps(value, indent=2, ensure_ascii=False, default=str))


class ReadOnlyAdmin(admin.ModelAdmin):
    """History: no add, change or delete by hand; what may change goes through a service (actions)."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
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
    readonly_fields = ["workflow", "seq", "artifact", "parent", "description", "created_at", "definition"]

    @admin.display(description="definition")
    def definition(self, obj: WorkflowVersion) -> str:
        return pretty(obj.artifact.content)


class NodeRunInline(ReadOnlyInline):
    model = NodeRun
    extra = 0
    fields = ["node_id", "iteration", "node_type", "status", "attempts", "queued_at", "started_at", "finished_at",
              "error"]
    readonly_fields = fields
    can_delete = False
    ordering = ["queued_at", "id"]


class PatchRefusalInline(ReadOnlyInline):
    model = PatchRefusal
    extra = 0
    fields = ["created_at", "agent", "node_id", "proposed_by", "rule", "op", "path", "message"]
    readonly_fields = fields
    can_delete = False
    verbose_name_plural = "refused patches (nothing of them reached the run)"


class EventInline(ReadOnlyInline):
    model = Event
    extra = 0
    fields = ["seq", "type", "node_id", "data", "created_at"]
    readonly_fields = fields
    can_delete = False


@admin.register(Run)
class RunAdmin(ReadOnlyAdmin):
    list_display = ["id", "tag", "owner", "status", "created_at", "finished_at"]
    list_filter = ["status"]
    search_fields = ["id", "tag", "owner__username"]
    readonly_fields = [f.name for f in Run._meta.fields]
    inlines = [NodeRunInline, PatchRefusalInline, EventInline]
    actions = ["cancel_runs"]

    @admin.action(description="Cancel selected runs")
    def cancel_runs(self, request, queryset):
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


def graph_diff(before: dict, after: dict) -> dict[str, list]:
    """Nodes and edges a patch added or removed (edges as ``from → to``)."""
    def nodes(d: dict) -> dict[str, str]:
        return {n["id"]: n.get("type", "?") for n in d.get("nodes", [])}

    def edges(d: dict) -> set[str]:
        return {f"{e['from']} → {e['to']}" + (f" [{e['condition']}]" if e.get("condition") else "")
                for e in d.get("edges", [])}

    b, a = nodes(before), nodes(after)
    return {"nodes added": [f"{k} ({a[k]})" for k in a if k not in b],
            "nodes removed": [f"{k} ({b[k]})" for k in b if k not in a],
            "nodes changed": [k for k in a if k in b and _node(after, k) != _node(before, k)],
            "edges added": sorted(edges(after) - edges(before)), "edges removed": sorted(edges(before) - edges(after))}


def _node(definition: dict, node_id: str) -> dict | None:
    return next((n for n in definition.get("nodes", []) if n.get("id") == node_id), None)


@admin.register(RunPatch)
class RunPatchAdmin(ReadOnlyAdmin):
    list_display = ["run", "seq", "status", "node_id", "description", "created_at"]
    list_filter = ["status"]
    readonly_fields = ["run", "seq", "status", "node_id", "description", "operations_pretty", "graph_diff", "reason",
                       "created_at", "applied_at"]
    exclude = ["operations"]
    # approve / reject of held patches: added by approvals/admin.py (the approvals app decides)

    @admin.display(description="operations")
    def operations_pretty(self, obj: RunPatch) -> str:
        return pretty(obj.operations)

    @admin.display(description="graph diff (before → after)")
    def graph_diff(self, obj: RunPatch) -> str:
        diff = graph_diff(obj.before_artifact.content, obj.after_artifact.content)
        rows = format_html_join("", "<tr><th>{}</th><td>{}</td></tr>",
                                ((k, ", ".join(v) or "—") for k, v in diff.items()))
        return format_html("<table>{}</table>", rows)


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ["run", "seq", "type", "node_id", "created_at"]
    list_filter = ["type"]


@admin.register(PatchRefusal)
class PatchRefusalAdmin(ReadOnlyAdmin):
    """Patches the policy refused, with the operation and the rule: who tried what."""

    list_display = ["run", "created_at", "agent", "node_id", "proposed_by", "rule", "op", "path"]
    list_filter = ["rule", "agent"]
    search_fields = ["run__id", "node_id", "rule"]
    readonly_fields = ["run", "created_at", "agent", "node_id", "proposed_by", "rule", "op", "path", "message",
                       "operations_pretty"]
    exclude = ["operations"]

    @admin.display(description="operations")
    def operations_pretty(self, obj: PatchRefusal) -> str:
        return pretty(obj.operations)
