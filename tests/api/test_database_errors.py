"""A database error the API cannot get past is a JSON 503 naming its rule (workflows/api/errors.py):
a connection lost or refused is ``database_unavailable`` with ``Retry-After``; a statement the
server refused to finish is ``database_busy`` without one, so a heavy request is not sent again at
once. The errors come from a real PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import OperationalError, connection, connections
from django.db.backends.postgresql.base import DatabaseWrapper

from workflows.api.errors import exception_handler


def raised(action: Any) -> Exception:
    with pytest.raises(OperationalError) as caught:
        action()
    return caught.value


def test_a_connection_refused_is_database_unavailable_with_retry_after(db):
    settings = {**connections["default"].settings_dict, "PORT": 1}  # nothing listens there
    error = raised(DatabaseWrapper(settings, alias="refused").ensure_connection)

    response = exception_handler(error, {})

    assert response is not None and response.status_code == 503
    assert response.data["error"] == "service_unavailable"
    assert response.data["details"]["rule"] == "database_unavailable"
    assert response["Retry-After"] == "1"


def test_a_statement_cancelled_is_database_busy_without_retry_after(db):
    def slow() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL statement_timeout = 10")
            cursor.execute("SELECT pg_sleep(1)")

    error = raised(slow)

    response = exception_handler(error, {})

    assert response is not None and response.status_code == 503
    assert response.data["details"] == {"rule": "database_busy", "sqlstate": "57014"}
    assert "Retry-After" not in response
