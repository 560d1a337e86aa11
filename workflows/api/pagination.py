"""Pagination with bounds: ``?limit=`` and ``?offset=`` become SQL ``LIMIT``/``OFFSET``, which
PostgreSQL holds as 64-bit integers; a larger number was a DataError (500), not a page. A value
that is not an integer, or below the minimum, is a 400 naming the parameter (DRF would ignore it)."""

from __future__ import annotations

from typing import Any

from rest_framework.pagination import LimitOffsetPagination

from aob_project.exceptions import ValidationFailed

MAX_OFFSET = 2**62  # past every row; far from the 64-bit edge once the limit is added


def query_int(request: Any, name: str, *, default: int | None, minimum: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationFailed(f"{name}: must be an integer", extra={"field": name, "rule": "integer"}) from None
    if value < minimum:
        raise ValidationFailed(f"{name}: must be at least {minimum}", extra={"field": name, "rule": "minimum"})
    return value


class BoundedLimitOffsetPagination(LimitOffsetPagination):
    max_limit = 1000  # the CLI's --limit goes up to 1000

    def get_limit(self, request: Any) -> int | None:
        limit = query_int(request, self.limit_query_param, default=self.default_limit, minimum=1)
        return min(limit, self.max_limit) if limit is not None else None

    def get_offset(self, request: Any) -> int:
        return min(query_int(request, self.offset_query_param, default=0, minimum=0) or 0, MAX_OFFSET)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        return [
            {"name": "limit", "in": "query", "required": False,
             "description": f"results per page (at most {self.max_limit} are returned)",
             "schema": {"type": "integer", "minimum": 1}},
            {"name": "offset", "in": "query", "required": False, "description": "results to skip",
             "schema": {"type": "integer", "minimum": 0}},
        ]
