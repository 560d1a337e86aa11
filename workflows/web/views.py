"""Web pages. Each view reads with a selector and renders; every change a page makes goes through
the REST API from the browser, so the UI has no write path of its own."""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.contrib.staticfiles import finders
from django.core.exceptions import SuspiciousFileOperation
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotModified
from django.shortcuts import render
from django.utils.http import http_date
from django.views.static import was_modified_since

from aob_project.exceptions import NotFound
from workflows import selectors
from workflows.models import Run

RUNS_PAGE_SIZE = 100
# What a new workflow's editor starts from: one valid node to grow.
STARTER = {"nodes": [{"id": "start", "type": "transform",
                      "config": {"expression": "{'greeting': 'hello ' + inputs.name}"}}], "edges": []}


def llm_configured() -> bool:
    return bool(settings.OPENAI_API_KEY or settings.OPENAI_BASE_URL)


def _render(request: HttpRequest, template: str, http_status: int = 200, **context: Any) -> HttpResponse:
    context.setdefault("flower_url", settings.AOB_FLOWER_URL)
    return render(request, f"aob/{template}", context, status=http_status)


def _not_found(request: HttpRequest, what: str) -> HttpResponse:
    return _render(request, "not_found.html", http_status=404, what=what)


@login_required
def workflow_list(request: HttpRequest) -> HttpResponse:
    workflows = []
    for workflow in selectors.workflows_visible(user=request.user).order_by("tag"):
        version = workflow.current_version
        definition = version.artifact.content if version else {}
        workflows.append({"tag": workflow.tag, "version": version.seq if version else None,
                          "name": (definition.get("metadata") or {}).get("name", ""),
                          "nodes": len(definition.get("nodes", [])), "edges": len(definition.get("edges", [])),
                          "updated_at": workflow.updated_at})
    return _render(request, "workflow_list.html", nav="workflows", workflows=workflows)


def _workflow_page(request: HttpRequest, tag: str, definition: dict[str, Any] | None) -> HttpResponse:
    page = {"tag": tag, "is_new": definition is None, "llm_configured": llm_configured(),
            "definition": definition if definition is not None else STARTER}
    return _render(request, "workflow.html", nav="workflows", tag=tag, page=page, is_new=definition is None)


@login_required
def workflow_new(request: HttpRequest) -> HttpResponse:
    return _workflow_page(request, request.GET.get("tag", "")[:200], None)


@login_required
def workflow_detail(request: HttpRequest, tag: str) -> HttpResponse:
    workflow = selectors.workflows_visible(user=request.user).filter(tag=tag).first()
    if workflow is None or workflow.current_version is None:
        return _not_found(request, f"workflow {tag!r}")
    return _workflow_page(request, tag, workflow.current_version.artifact.content)


@login_required
def run_list(request: HttpRequest) -> HttpResponse:
    status = request.GET.get("status", "")
    runs = Run.objects.filter(owner=request.user).order_by("-created_at")
    if status in Run.Status.values:
        runs = runs.filter(status=status)
    else:
        status = ""
    return _render(request, "run_list.html", nav="runs", runs=runs[:RUNS_PAGE_SIZE], status=status,
                   statuses=Run.Status.values, page_size=RUNS_PAGE_SIZE)


@login_required
def run_detail(request: HttpRequest, run_id: str) -> HttpResponse:
    try:
        run = selectors.run_get(user=request.user, run_id=run_id)
    except NotFound:
        return _not_found(request, "run")
    page = {"run_id": str(run.pk), "is_owner": run.owner_id == request.user.pk, "llm_configured": llm_configured()}
    return _render(request, "run.html", nav="runs", run=run, page=page)


@login_required
def approval_inbox(request: HttpRequest) -> HttpResponse:
    return _render(request, "approvals.html", nav="approvals")


def static_file(request: HttpRequest, path: str) -> HttpResponse:
    """Static files from the app folders (the finders, so no collectstatic is needed), read whole:
    they are small, and a streamed FileResponse warns under ASGI. Revalidated by Last-Modified."""
    try:
        found = finders.find(path)
    except SuspiciousFileOperation:
        found = None
    if not found or not Path(found).is_file():
        raise Http404(path)
    file = Path(found)
    mtime = file.stat().st_mtime
    if not was_modified_since(request.META.get("HTTP_IF_MODIFIED_SINCE"), int(mtime)):
        return HttpResponseNotModified()
    content_type, encoding = mimetypes.guess_type(file.name)
    if file.suffix == ".js":
        content_type = "text/javascript"
    response = HttpResponse(file.read_bytes(), content_type=content_type or "application/octet-stream")
    response["Last-Modified"] = http_date(mtime)
    response["Cache-Control"] = "no-cache"
    if encoding:
        response["Content-Encoding"] = encoding
    return response
