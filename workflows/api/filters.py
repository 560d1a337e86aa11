"""List filters (django-filter) and keyset pagination for the runs and workflows lists.

A value the filter cannot take is a 400 that names the parameter, the rule and, for a choice, the
allowed values, the same as every other refused query parameter; never silently ignored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import django_filters
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Q, QuerySet
from django.utils import timezone
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework.exceptions import NotFound as DrfNotFound
from rest_framework.pagination import CursorPagination

from aob_project.exceptions import NotFound, ValidationFailed
from workflows import search
from workflows.api.params import query_int
from workflows.models import Run, Workflow

TEXT_MAX = 200
# Up to 200 characters, no NUL; empty means "any" (no filter).
TAG_PARAM_PATTERN = r"^[^\x00]{0,200}$"


def refuse(field: str, message: str, rule: str, **extra: Any) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", extra={"field": field, "rule": rule, **extra})


class CheckedFilterBackend(DjangoFilterBackend):
    """django-filter, with its errors in our shape: the first bad parameter by name."""

    def filter_queryset(self, request: Any, queryset: QuerySet, view: Any) -> QuerySet:
        filterset = self.get_filterset(request, queryset, view)
        if filterset is None:
            return queryset
        return checked(filterset, request.query_params)


DATE_TIME = "must be an ISO 8601 date-time, e.g. 2026-12-01T00:00:00Z"


def checked(filterset: django_filters.FilterSet, params: Any) -> QuerySet:
    """``filterset``'s rows for ``params`` (what it was given), or the first bad parameter's 400."""
    for name, flt in filterset.filters.items():
        if isinstance(flt, django_filters.IsoDateTimeFilter) and params.get(name, None) == "":
            raise refuse(name, DATE_TIME, "date_time")
    if not filterset.is_valid():
        field, errors = next(iter(filterset.errors.items()))
        if isinstance(filterset.filters.get(field), django_filters.IsoDateTimeFilter):
            value = str(params.get(field, ""))[:100]
            raise refuse(field, f"{value!r} {DATE_TIME}", "date_time")
        allowed = getattr(filterset.filters.get(field), "allowed", None)
        if allowed:
            value = str(params.get(field, ""))[:100]
            raise refuse(field, f"unknown value {value!r}; one of {', '.join(allowed)}", "enum", allowed=allowed)
        code = errors.as_data()[0].code if hasattr(errors, "as_data") else "invalid"
        raise refuse(field, " ".join(str(e) for e in errors), code or "invalid")
    return filterset.qs


class Text(django_filters.CharFilter):
    """A bounded text value without NUL (PostgreSQL refuses NUL in text)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", TEXT_MAX)
        super().__init__(*args, **kwargs)

    def filter(self, qs: QuerySet, value: Any) -> QuerySet:
        if value and "\x00" in value:
            raise refuse(self.field_name if self.field_name != "id" else "q", "must not contain NUL", "nul")
        return super().filter(qs, value)


class Choice(django_filters.ChoiceFilter):
    def __init__(self, *args: Any, choices: list[str], **kwargs: Any) -> None:
        self.allowed = list(choices)
        super().__init__(*args, choices=[(c, c) for c in choices], **kwargs)


SEARCH_HELP = ("text in the run's inputs or error, in any case: among the latest AOB_RUN_SEARCH_MAX_RUNS (1,000) "
               "runs the other filters leave (created_before reaches further back), in inputs of at most "
               "AOB_RUN_SEARCH_INPUTS_MAX_BYTES (16 KiB); a search that takes longer than AOB_RUN_SEARCH_TIMEOUT_MS "
               "(1 s) is a 400, rule search_timeout")


class RunFilter(django_filters.FilterSet):
    workflow = Text(field_name="tag", help_text="the workflow's tag")
    tag = Text(field_name="tag", help_text="the same as workflow")
    status = Choice(choices=Run.Status.values)
    created_after = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")
    owner = Text(method="filter_owner",
                 help_text="staff who may read runs (the admin's view_run): another user's runs, by username")
    q = Text(method="search_last", help_text=SEARCH_HELP)

    class Meta:
        model = Run
        fields: list[str] = []

    def filter_owner(self, qs: QuerySet, name: str, value: str) -> QuerySet:
        return qs.filter(owner__username=value)

    def search_last(self, qs: QuerySet, name: str, value: str) -> QuerySet:
        return qs  # filter_queryset searches, once every other filter has narrowed the runs

    def filter_queryset(self, queryset: QuerySet) -> QuerySet:
        """The other filters, then the text search within its bounds (``workflows.search``): it
        looks at the latest runs they leave."""
        runs = super().filter_queryset(queryset)
        text = self.form.cleaned_data.get("q")
        return search.runs_search(runs=runs, text=text) if text else runs


RUN_FILTER_PARAMETERS = [
    OpenApiParameter("workflow", str, description="only runs of this workflow (tag)", pattern=TAG_PARAM_PATTERN),
    OpenApiParameter("tag", str, description="the same as workflow", pattern=TAG_PARAM_PATTERN),
    OpenApiParameter("status", str, enum=Run.Status.values),
    OpenApiParameter("created_after", OpenApiTypes.DATETIME, description="created at or after (ISO 8601)"),
    OpenApiParameter("created_before", OpenApiTypes.DATETIME, description="created before (ISO 8601)"),
    OpenApiParameter("owner", str, pattern=TAG_PARAM_PATTERN,
                     description="staff with the admin's view_run permission: any user's runs, by username; "
                                 "others see only their own"),
    OpenApiParameter("q", str, pattern=TAG_PARAM_PATTERN, description=SEARCH_HELP),
]


class WorkflowFilter(django_filters.FilterSet):
    q = Text(method="filter_text", help_text="text in the tag, name or description")

    class Meta:
        model = Workflow
        fields: list[str] = []

    def filter_text(self, qs: QuerySet, name: str, value: str) -> QuerySet:
        # the summary kept with each version: a search reads no definition
        return qs.filter(Q(tag__icontains=value) | Q(current_version__metadata_name__icontains=value)
                         | Q(current_version__metadata_description__icontains=value))


class KeysetPagination(CursorPagination):
    """Keyset (cursor) pages, newest first: a page costs the same at any depth, and a run started
    while you page does not shift the next page. ``?limit=`` (1…1000) and ``?cursor=`` from ``next``."""

    ordering = ("-created_at", "-id")
    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 1000

    def get_page_size(self, request: Any) -> int:
        """The lists' one reading of ``limit`` (``params.query_int``): an empty one is refused here too."""
        return query_int(request, self.page_size_query_param, self.page_size, 1, self.max_page_size)

    def paginate_queryset(self, queryset: QuerySet, request: Any, view: Any = None) -> list[Any] | None:
        self.model = queryset.model  # decode_cursor judges a position by the ordering's field
        return super().paginate_queryset(queryset, request, view)

    def decode_cursor(self, request: Any) -> Any:
        """DRF's cursor, its position judged too: DRF filters on the position as it comes, so a
        hand-made one that is no value of the ordering's field (no time, a naive time, NUL) would
        reach the database and fail there."""
        try:
            cursor = super().decode_cursor(request)
            if cursor is not None and cursor.position is not None:
                self._check_position(cursor.position)
        except (DrfNotFound, DjangoValidationError):
            # 404, as DRF answers: no such page. The message names the parameter.
            raise NotFound("cursor: no such page (take cursors from the next or previous link)",
                           extra={"field": "cursor", "rule": "invalid_cursor"}) from None
        return cursor

    def _check_position(self, position: str) -> None:
        """Raise DjangoValidationError unless ``position`` is a value this page's ordering could
        have handed out: its field's type, without NUL, and a time with its offset."""
        if "\x00" in position:
            raise DjangoValidationError("NUL")
        field = self.model._meta.get_field(self.ordering[0].lstrip("-"))
        value = field.to_python(position)
        if isinstance(value, datetime) and timezone.is_naive(value):
            raise DjangoValidationError("a time without its offset")

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        return [
            {"name": "cursor", "in": "query", "required": False,
             "description": "the page after (or before) another: take it from next / previous",
             "schema": {"type": "string"}},
            {"name": "limit", "in": "query", "required": False,
             "description": "results per page (at most 1000 are returned)",
             "schema": {"type": "integer", "minimum": 1}},
        ]
