"""Pagination with bounds: ``?limit=`` and ``?offset=`` become SQL ``LIMIT``/``OFFSET``, which
PostgreSQL holds as 64-bit integers; a larger number was a DataError (500), not a page."""

from __future__ import annotations

from typing import Any

from rest_framework.pagination import LimitOffsetPagination

MAX_OFFSET = 2**62  # past every row; far from the 64-bit edge once the limit is added


class BoundedLimitOffsetPagination(LimitOffsetPagination):
    max_limit = 1000  # the CLI's --limit goes up to 1000

    def get_offset(self, request: Any) -> int:
        return min(super().get_offset(request), MAX_OFFSET)
