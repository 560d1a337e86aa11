"""The runs list's text search (``?q=``, ``workflows/search.py``) costs what an operator set, whatever
a user stored: it reads inputs only up to ``AOB_RUN_SEARCH_INPUTS_MAX_BYTES``, looks at the latest
``AOB_RUN_SEARCH_MAX_RUNS`` runs the other filters leave, and a statement past
``AOB_RUN_SEARCH_TIMEOUT_MS`` is a 400 naming ``q``. What it found in small inputs and in errors it
still finds. What the database read is counted by PostgreSQL (blocks of the runs table's TOAST,
where large inputs live), never timed."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from django.db import connection
from django.test import Client
from django.utils import timezone

from tests.conftest import client_for, set_inputs, stored_run
from workflows.models import Run

API = "/api/v1"
WRAPPER = len('{"doc":""}')  # canonical JSON around a string of ASCII letters


def a_run(owner: Any, inputs: dict[str, Any], *, days_ago: float = 0, **changes: Any) -> str:
    run = stored_run(owner)
    set_inputs(run, inputs, created_at=timezone.now() - timedelta(days=days_ago), **changes)
    return str(run.pk)


def found(client: Any, **query: str) -> list[str]:
    response = client.get(f"{API}/runs", query)
    assert response.status_code == 200, response.content[:300]
    return [r["run_id"] for r in response.json()["results"]]


def toasted_inputs_read() -> int:
    """Blocks of the runs table's TOAST read so far in this transaction (the test's)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_get_xact_blocks_fetched(reltoastrelid) FROM pg_class "
                       "WHERE relname = 'workflows_run'")
        return cursor.fetchone()[0]


def statement_timeout() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        return cursor.fetchone()[0]


def test_a_search_reads_no_inputs_past_its_bound_nor_another_users(user: Any, make_user: Any) -> None:
    # 2 MiB of hex: each run's inputs are some 130 TOAST blocks, past every answer's budget
    large = [a_run(user, {"doc": secrets.token_hex(1024 * 1024), "customer": "Ada Lovelace"}) for _ in range(3)]
    # inputs within the search's bound, stored in TOAST too: only this user's runs are the search's to read
    bob = make_user("bob")
    for _ in range(3):
        a_run(bob, {"doc": secrets.token_hex(7000), "customer": "Ada Lovelace"})
    declined = a_run(user, {"doc": secrets.token_hex(1024 * 1024)},
                     error={"message": "card declined for Lovelace", "node_id": "pay"})
    small = a_run(user, {"customer": "Ada Lovelace"})
    api, browser = client_for(user), Client()
    browser.force_login(user)
    timeout = statement_timeout()

    before = toasted_inputs_read()
    searched = found(api, q="LOVELACE")
    page = browser.get("/runs/", {"q": "lovelace"})
    read = toasted_inputs_read() - before

    assert read == 0, f"the search read {read} blocks of TOASTed inputs"
    assert set(searched) == {small, declined} and not set(searched) & set(large)
    assert page.status_code == 200 and {str(r["pk"]) for r in page.context["runs"]} == {small, declined}
    assert "Searches the latest 1,000 runs" in page.content.decode()  # the page says what a search looks at
    assert statement_timeout() == timeout  # the search's own timeout ended with it


def test_a_search_still_finds_what_it_found_in_small_inputs_and_errors(user: Any, settings: Any) -> None:
    limit = settings.AOB_RUN_SEARCH_INPUTS_MAX_BYTES
    at_limit = a_run(user, {"doc": "needle" + "x" * (limit - WRAPPER - 6)})
    past_limit = a_run(user, {"doc": "needle" + "x" * (limit - WRAPPER - 5)})
    nested = a_run(user, {"order": {"lines": [{"sku": "A-100", "note": "Gift wrap, 50% off"}]}}, tag="shop")
    failed = a_run(user, {}, status="failed", error={"message": "upstream said 503", "node_id": "call"})
    api = client_for(user)

    assert Run.objects.get(pk=at_limit).inputs_bytes == limit
    assert Run.objects.get(pk=past_limit).inputs_bytes == limit + 1
    assert found(api, q="NEEDLE") == [at_limit]
    assert found(api, q="gift WRAP") == [nested]
    assert found(api, q="50% off") == [nested]  # % and _ are text, not patterns
    assert found(api, q="a_100") == []
    assert found(api, q="a-100", workflow="shop") == [nested]
    assert found(api, q="a-100", workflow="other") == []
    assert found(api, q="said 503") == [failed]
    assert found(api, q="said 503", status="completed") == []


def test_a_search_looks_at_the_latest_runs_the_other_filters_leave(user: Any, settings: Any) -> None:
    settings.AOB_RUN_SEARCH_MAX_RUNS = 3
    oldest_first = [a_run(user, {"ticket": f"needle {i}"}, days_ago=10 - i, tag="t") for i in range(5)]
    newer = [a_run(user, {"other": "haystack"}, days_ago=1 - i / 10, tag="u") for i in range(3)]
    api = client_for(user)

    assert found(api, q="needle") == []  # the latest three runs hold none
    assert found(api, q="needle", workflow="t") == oldest_first[:1:-1]
    assert found(api, q="needle", workflow="t", limit="1") == oldest_first[-1:]  # pages within the same window
    before = (timezone.now() - timedelta(days=7.5)).isoformat()
    assert found(api, q="needle", created_before=before) == oldest_first[2::-1]
    assert found(api, q="haystack") == newer[::-1]


def test_a_search_past_its_time_is_a_400_naming_q(user: Any, settings: Any) -> None:
    # Inputs read whatever their size, and a near miss that costs per byte as much as it is long:
    # some 0.6 s of work for the database against 10 ms.
    settings.AOB_RUN_SEARCH_INPUTS_MAX_BYTES = 4 * 1024 * 1024
    settings.AOB_RUN_SEARCH_TIMEOUT_MS = 10
    for _ in range(2):
        a_run(user, {"doc": "a" * 1024 * 1024})
    small = a_run(user, {"customer": "Ada Lovelace"})
    api, browser = client_for(user), Client()
    browser.force_login(user)
    timeout = statement_timeout()

    response = api.get(f"{API}/runs", {"q": "a" * 199 + "b"})
    page = browser.get("/runs/", {"q": "a" * 199 + "b"})

    assert response.status_code == 400, response.content[:300]
    body = response.json()
    assert body["error"] == "validation_error" and body["message"].startswith("q: ")
    assert body["details"] == {"field": "q", "rule": "search_timeout", "limit_ms": 10}
    assert page.status_code == 200 and page.context["problem"] == body["message"] and not page.context["runs"]
    assert statement_timeout() == timeout
    settings.AOB_RUN_SEARCH_TIMEOUT_MS = 60_000
    assert found(api, q="lovelace") == [small]
