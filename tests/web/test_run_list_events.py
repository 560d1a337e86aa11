"""The runs list (run_list.js) re-reads a run's row on the events that say its status moved
(``STATUS_EVENTS``). The coordinator's move of a run to ``waiting_for_approval`` (an agent paused on
its budget, a gate asking) appended no event, so the row kept saying "running" until a reload (a
one-truth review's find): every move of a run's status is in its events now (``run_moved``, a
claim's is its ``node_started``), and the page's list names only event types the engine has."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.agents.flows import WAITING, agent, start
from tests.conftest import PRICEY_MODEL, TEST_PRICES, wait_for_run
from workflows.models import Event

RUN_LIST_JS = Path(__file__).resolve().parents[2] / "workflows/static/aob/run_list.js"


def status_events() -> set[str]:
    found = re.search(r"const STATUS_EVENTS = new Set\(\[(.*?)\]\)", RUN_LIST_JS.read_text(), re.S)
    assert found is not None
    return set(re.findall(r'"([a-z_]+)"', found.group(1)))


def test_the_page_s_status_events_are_the_engine_s() -> None:
    assert status_events() <= set(Event.Type.values)
    assert {Event.Type.RUN_MOVED, Event.Type.NODE_STARTED, Event.Type.WORKFLOW_COMPLETED} <= status_events()


@pytest.fixture
def _prices(settings: Any) -> None:
    settings.AOB_LLM_PRICES = TEST_PRICES


def test_a_run_that_paused_on_its_budget_says_so_in_an_event_the_runs_list_reads(engine, api, user, fake_llm,
                                                                                 remote, _prices):
    pipeline = {"steps": [{"op": "http_request", "url": f"{remote.base}/echo"}]}
    fake_llm.reset([{"tool_calls": [("execute_pipeline", pipeline)]}, {"content": "Done."}])
    run_id = start(api, [agent(model=PRICEY_MODEL, max_tokens=1000)])

    run = wait_for_run(run_id, statuses=WAITING)

    assert run.status == "waiting_for_approval"
    events = list(Event.objects.filter(run=run).order_by("seq").values_list("type", "data"))
    paused_at = [t for t, _ in events].index("node_paused")
    moved = [data for t, data in events[paused_at:] if t == "run_moved"]
    assert moved == [{"status": "waiting_for_approval", "was": "running"}], events
    assert "run_moved" in status_events()


def test_the_runs_list_says_another_owners_rows_do_not_follow_their_runs(db: Any, make_user: Any) -> None:
    """The page follows ``ws/events/``, which carries the viewer's own runs' events: staff reading
    another owner's runs (``?owner=``) saw rows that never moved, on a page that moves its own.
    It says so, there and only there."""
    from django.test import Client

    staff = make_user("root", is_staff=True, is_superuser=True)
    make_user("bob")
    client = Client()
    client.force_login(staff)
    note = "Another owner's runs do not update here as they run"
    assert note in client.get("/runs/?owner=bob").content.decode()
    assert note not in client.get("/runs/").content.decode()
    assert note not in client.get("/runs/?owner=root").content.decode()
