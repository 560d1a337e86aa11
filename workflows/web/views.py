"""Web pages. Each view reads with a selector and renders; every change a page makes goes through
the REST API from the browser, so the UI has no write path of its own."""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.staticfiles import finders
from django.core.exceptions import SuspiciousFileOperation
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotModified, QueryDict
from django.shortcuts import render
from django.utils.http import http_date
from django.views.static import was_modified_since
from rest_framework.request import Request

from aob.text import shown
from aob_project.exceptions import AobError, NotFound
from workflows import selectors, visibility
from workflows.api.filters import CheckedFilterBackend, KeysetPagination, RunFilter, WorkflowFilter
from workflows.models import NodeRun, Run
from workflows.results import run_duration_ms
from workflows.search import search_scope

RUNS_PAGE_SIZE = 100
WORKFLOWS_PAGE_SIZE = 100
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


class LoginView(auth_views.LoginView):
    """Django's login page, sending a signed-in user straight on to its ``next``: one that is the
    login page itself leads home instead (Django raised its "redirection loop" ValueError, a 500
    for anyone following such a link, signed in or signing in)."""

    template_name = "aob/login.html"
    redirect_authenticated_user = True

    def get_redirect_url(self) -> str:
        url = super().get_redirect_url()  # "" for one that leaves this server
        return "" if urlsplit(url).path == self.request.path else url


@login_required
def workflow_list(request: HttpRequest) -> HttpResponse:
    """The user's workflows by tag, a keyset page at a time (``?cursor=`` from the pager), from
    each version's summary: no definition is read."""
    search = request.GET.get("q", "").replace("\x00", "")[:200]
    wanted = {k: v for k, v in (("q", search), ("cursor", request.GET.get("cursor", ""))) if v}
    drf_request = Request(request)
    drf_request._request.GET = QueryDict(mutable=True)
    drf_request._request.GET.update(wanted)
    qs = selectors.workflows_listed(user=request.user)
    if search:
        qs = WorkflowFilter({"q": search}, queryset=qs).qs
    paginator = KeysetPagination()
    paginator.page_size = WORKFLOWS_PAGE_SIZE
    paginator.ordering = ("tag",)  # one owner's tags are unique: a key
    problem = ""
    try:
        page = paginator.paginate_queryset(selectors.with_last_run(qs, user=request.user), drf_request) or []
    except AobError as exc:  # a cursor that is no page
        page, problem = [], exc.message
    workflows = []
    for workflow in page:
        version = workflow.current_version
        workflows.append({"tag": workflow.tag, "version": version.seq if version else None,
                          "name": version.metadata_name if version else "",
                          "description": version.metadata_description if version else "",
                          "nodes": version.nodes_count if version else 0, "edges": version.edges_count if version else 0,
                          "updated_at": workflow.updated_at, "last_run_id": workflow.last_run_id,
                          "last_run_status": workflow.last_run_status, "last_run_at": workflow.last_run_at})
    next_link = paginator.get_next_link() if page else None
    previous_link = paginator.get_previous_link() if page else None
    return _render(request, "workflow_list.html", nav="workflows", workflows=workflows, q=search, problem=problem,
                   next_query=_query_of(next_link), previous_query=_query_of(previous_link))


def _workflow_page(request: HttpRequest, tag: str, definition: dict[str, Any] | None,
                   version: int | None = None) -> HttpResponse:
    # version: the one the editor starts from, sent back as the save's base_version
    page = {"tag": tag, "is_new": definition is None, "llm_configured": llm_configured(), "version": version,
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
    return _workflow_page(request, tag, workflow.current_version.artifact.content, workflow.current_version.seq)


@login_required
def run_list(request: HttpRequest) -> HttpResponse:
    """The runs list, filtered and paged as ``GET /api/v1/runs`` is (the same filter and keyset pages)."""
    wanted = {k: v for k, v in request.GET.items() if k in RUN_LIST_PARAMS and v != ""}
    drf_request = Request(request)
    drf_request._request.GET = QueryDict(mutable=True)
    drf_request._request.GET.update(wanted)
    problem = ""
    # a row shows neither the inputs (up to AOB_MAX_RUN_INPUTS_BYTES each) nor more of its owner than a name
    base = selectors.runs_for_list(user=request.user, owner=wanted.get("owner")).select_related("owner").only(
        *RUN_ROW_FIELDS)
    runs: list[Run] = []
    paginator = KeysetPagination()
    paginator.page_size = RUNS_PAGE_SIZE
    try:
        filtered = CheckedFilterBackend().filter_queryset(drf_request, base, RunListView)
        runs = paginator.paginate_queryset(filtered, drf_request) or []
    except AobError as exc:
        problem = exc.message
    next_link = paginator.get_next_link() if runs else None
    previous_link = paginator.get_previous_link() if runs else None
    tags = sorted(set(selectors.runs_owned(user=request.user).exclude(tag="").values_list("tag", flat=True)
                      .distinct()[:500]))
    # what POST /runs/delete takes: the caller's own finished runs, chosen by these filters alone
    chosen = {k: v for k, v in wanted.items() if k in DELETE_FILTERS}
    deletable = (chosen if chosen and not problem and set(wanted) - {"cursor"} <= set(DELETE_FILTERS)
                 and chosen.get("status") in (None, *Run.FINISHED) else None)  # a delete takes finished ones
    staff = visibility.reads_every_run(request.user)
    # ws/events/ carries the viewer's own runs' events: another owner's rows do not follow them
    others = staff and wanted.get("owner") not in (None, request.user.get_username())
    return _render(request, "run_list.html", nav="runs", runs=[_run_row(r) for r in runs], filters=wanted,
                   delete_filters=deletable, others_not_live=others,
                   statuses=Run.Status.values, tags=tags, problem=problem, page_size=RUNS_PAGE_SIZE,
                   next_query=_query_of(next_link), previous_query=_query_of(previous_link),
                   is_staff=staff, search_scope=search_scope())


RUN_LIST_PARAMS = ("workflow", "status", "created_after", "created_before", "owner", "q", "cursor")
DELETE_FILTERS = ("workflow", "status", "created_after", "created_before")


class RunListView:
    """What django-filter asks of a view: the filter set of the runs list."""

    filterset_class = RunFilter


def _query_of(link: str | None) -> str:
    return "?" + urlsplit(link).query if link else ""


RUN_ROW_FIELDS = ("id", "tag", "status", "created_at", "started_at", "finished_at", "error", "owner__username")


def _run_row(run: Run) -> dict[str, Any]:
    error = run.error if isinstance(run.error, dict) else ({"message": str(run.error)} if run.error else None)
    return {"pk": run.pk, "tag": run.tag, "status": run.status, "created_at": run.created_at,
            "finished_at": run.finished_at, "duration": fmt_ms(run_duration_ms(run)),
            "error": shown(str((error or {}).get("message", ""))), "error_node": (error or {}).get("node_id", ""),
            "owner": run.owner.username}


def fmt_ms(ms: int | None) -> str:
    if ms is None:
        return ""
    return f"{ms} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


@login_required
def run_detail(request: HttpRequest, run_id: str) -> HttpResponse:
    try:
        run = selectors.run_get(user=request.user, run_id=run_id)
    except NotFound:
        return _not_found(request, "run")
    page = {"run_id": str(run.pk), "is_owner": selectors.is_run_owner(run, user=request.user),
            # the models' own sets of statuses, not the script's copies
            "llm_configured": llm_configured(), "finished": sorted(Run.FINISHED), "active": sorted(NodeRun.ACTIVE),
            # its socket starts at the run's newest page of events, not its first (older: the API's pages)
            "events_after": selectors.events_latest_after(run_id=run.pk)}
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
