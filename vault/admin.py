"""Secrets in the admin: names and timestamps; a value can be set, never read (the form's field
is a password input that is never filled in)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin

from workflows.admin import OwnedRowsAdmin

from . import services
from .models import Secret


class SecretForm(forms.ModelForm):
    value = forms.CharField(widget=forms.PasswordInput(render_value=False), required=False,
                            min_length=services.MIN_LENGTH, max_length=services.MAX_LENGTH, strip=False,
                            help_text="Write-only: leave empty to keep the current value.")

    class Meta:
        model = Secret
        fields = ["owner", "name"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if not self.instance.pk and not cleaned.get("value"):
            self.add_error("value", "a new secret needs a value")
        return cleaned


@admin.register(Secret)
class SecretAdmin(OwnedRowsAdmin):
    form = SecretForm
    list_display = ["name", "owner", "created_at", "updated_at"]
    list_columns = ["name", "owner__username", "created_at", "updated_at"]  # never the ciphertext
    search_fields = ["name", "owner__username"]
    autocomplete_fields = ["owner"]  # searched as one types, not a select of every user
    readonly_fields = ["created_at", "updated_at"]

    def get_readonly_fields(self, request, obj=None):
        return [*self.readonly_fields, "owner", "name"] if obj else self.readonly_fields

    def save_model(self, request, obj, form, change):
        value = form.cleaned_data.get("value")
        if value:  # through the service, as on the API: its rules (the name, the value, the owner's cap)
            made, _ = services.secret_set(owner=obj.owner, name=obj.name, value=value)
            obj.pk = made.pk  # the admin's log entry and redirect name the secret
            obj.refresh_from_db()
