"""The secrets page: names and dates; values are set here and never shown."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


@login_required
def secrets_page(request: HttpRequest) -> HttpResponse:
    return render(request, "vault/secrets.html", {"nav": "secrets"})
