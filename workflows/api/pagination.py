"""Pagination with bounds: ``?limit=`` and ``?offset=`` become SQL ``LIMIT``/``OFFSET``, which
PostgreSQL holds as 64-bit integers; a larger number was a DataError (500), not a page. A value
that is not an integer, or below the minimum, is a 400 naming the parameter (DRF would ignore it)."""

from __future__ import annotations

from typing import Any

from rest_framework.pagination import LimitOffsetPagination

from .params import query_int

MAX_OFFSET = 2**62  # past every row; far from the 64-bit edge once the limit is added


class BoundedLimitOffsetPagination(LimitOffsetPagination):
    """Also strict: ``?limit=ten`` is a 400 naming ``limit``, not the default page."""

    max_limit = 1000  # the CLI's --limit goes up to 1000

    def get_limit(self, request: Any) -> int:
        return query_int(request, self.limit_query_param, self.default_limit, 1, self.max_limit)

    def get_offset(self, request: Any) -> int:
        return query_int(request, self.offset_query_param, 0, 0, MAX_OFFSET)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        return [
            {"name": "limit", "in": "query", "required": False,
             "description": f"results per page (at most {self.max_limit} are returned)",
             "schema": {"type": "integer", "minimum": 1}},
            {"name": "offset", "in": "query", "required": False, "description": "results to skip",
             "schema": {"type": "integer", "minimum": 0}},
        ]
