from django.contrib import admin

from workflows.admin import BoundedListAdmin

from .models import RetentionPolicy


@admin.register(RetentionPolicy)
class RetentionPolicyAdmin(BoundedListAdmin):
    list_display = ["owner", "days", "updated_at"]
    list_columns = ["owner__username", "days", "updated_at"]
    search_fields = ["owner__username"]
    autocomplete_fields = ["owner"]  # searched as one types, not a select of every user
