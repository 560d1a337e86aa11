from django.contrib import admin

from approvals.models import Approval, Decision


class DecisionInline(admin.TabularInline):
    model = Decision
    extra = 0
    fields = ["username", "approve", "comment", "data", "at"]
    readonly_fields = fields
    can_delete = False


@admin.register(Approval)
class ApprovalAdmin(admin.ModelAdmin):
    list_display = ["id", "status", "kind", "run", "node_id", "message", "deadline", "created_at"]
    list_filter = ["status", "kind"]
    readonly_fields = [f.name for f in Approval._meta.fields]
    inlines = [DecisionInline]

    def has_add_permission(self, request, obj=None):  # noqa: ANN001, ANN201
        return False
