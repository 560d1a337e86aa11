"""The triggers page of a workflow: its schedules and webhooks. Like every page, it reads here and
changes things through the REST API from the browser."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from workflows import selectors


@login_required
def triggers_page(request: HttpRequest, tag: str) -> HttpResponse:
    workflow = selectors.workflows_visible(user=request.user).filter(tag=tag).first()
    if workflow is None:
        return render(request, "aob/not_found.html", {"what": f"workflow {tag!r}", "nav": "workflows"}, status=404)
    return render(request, "triggers/triggers.html", {"tag": tag, "nav": "workflows", "page": {"tag": tag}})
