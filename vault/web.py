"""The secrets page: names and dates; values are set here and never shown."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from .services import MAX_LENGTH, MIN_LENGTH


@login_required
def secrets_page(request: HttpRequest) -> HttpResponse:
    # the form's bounds are the service's (the API's and the admin's too)
    return render(request, "vault/secrets.html", {"nav": "secrets", "min_length": MIN_LENGTH, "max_length": MAX_LENGTH})
