"""The web UI in a real browser: Playwright driving Debian's Chromium headless (``make chromium``
installs it; never a browser download) against uvicorn serving the ASGI app, with the session's
real workers. Log in, run the approval example, watch the node turn waiting live, type a comment
while the page redraws, approve, watch the run complete live; no console errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User

from tests.web.browsing import ARTIFACTS, PASSWORD, chromium_page, log_in, run_from_its_page
from workflows.models import NodeRun, Run
from workflows.services.definitions import workflow_save

ROOT = Path(settings.BASE_DIR)


@pytest.mark.browser
def test_approve_a_waiting_node_and_watch_the_run_complete_live(web: str) -> None:
    from playwright.sync_api import WebSocketRoute, expect

    user = User.objects.create_user("browser", password=PASSWORD)
    workflow_save(owner=user, tag="approval", definition=json.loads((ROOT / "examples/approval.json").read_text()),
                  description="example")
    ARTIFACTS.mkdir(exist_ok=True)

    with chromium_page("web-run-failure.png") as (page, problems):
        # The run page's sockets pass through here, so the test can drop one as a network blip would.
        sockets: list[WebSocketRoute] = []

        def through(socket: WebSocketRoute) -> None:
            socket.connect_to_server()
            sockets.append(socket)

        page.route_web_socket(re.compile(r"/ws/runs/"), through)
        page.goto(f"{web}/")
        expect(page).to_have_url(f"{web}/login/?next=/")
        page.get_by_label("Username").fill("browser")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.get_by_role("link", name="approval", exact=True).click()
        expect(page.locator("#validation")).to_contain_text("Valid")
        page.get_by_label("Inputs (JSON object)").fill('{"amount": 42, "customer": "Ada"}')
        page.get_by_role("button", name="Run", exact=True).click()
        page.wait_for_url(f"{web}/runs/*/")
        run_id = page.url.rstrip("/").rsplit("/", 1)[1]

        review = page.locator('svg.dag [data-node="review"]')
        expect(review).to_have_attribute("data-status", "waiting")  # drawn from a WebSocket event
        expect(page.locator("#run-status")).to_have_attribute("data-status", "waiting_for_approval")
        expect(page.locator("#node-panel")).to_contain_text("Refund 42 to Ada?")
        # A person types; the page redraws under them (here: the socket drops and the page
        # re-reads the run on reconnecting); they type on and approve. Every key must land.
        comment = page.get_by_label("Comment (optional)")
        comment.click()
        page.keyboard.type("fine by")
        page.locator("#node-h").evaluate("h => { h.dataset.drawn = 'before'; }")
        sockets[-1].close()
        expect(page.locator("#node-h")).not_to_have_attribute("data-drawn", "before")  # redrawn since
        expect(page.locator("#live")).to_have_text("● live")
        # re-read: what the node waits for, in the server's words
        expect(page.locator("#node-panel")).to_contain_text("waiting for a person's decision (its approval)")
        expect(comment).to_be_focused()
        page.keyboard.type(" me")
        expect(comment).to_have_value("fine by me")
        page.get_by_role("button", name="Approve").click()

        expect(page.locator("#run-status")).to_have_attribute("data-status", "completed")
        expect(page.locator('svg.dag [data-node="refund"]')).to_have_attribute("data-status", "completed")
        expect(page.locator('svg.dag [data-node="notify_rejected"]')).to_have_attribute("data-status", "skipped")
        page.screenshot(path=str(ARTIFACTS / "web-run-approved.png"), full_page=True)
        page.get_by_role("tab", name="Events").click()
        expect(page.locator("#events")).to_contain_text("workflow_completed")

    run = Run.objects.get(pk=run_id)
    assert run.status == "completed"
    assert run.approvals.get().decisions.get().comment == "fine by me"
    assert problems == []


@pytest.mark.browser
def test_a_sub_workflow_paused_on_its_parents_budget_is_resumed_from_its_own_page(web: str, fake_llm, settings) -> None:
    """The child's page names the run whose ceiling binds and raises that one, never the child's
    own (a sub-workflow has none unless set)."""
    from playwright.sync_api import expect
    from rest_framework.test import APIClient

    from tests.agents.flows import agent
    from tests.conftest import PRICEY_MODEL, TEST_PRICES
    from tests.engine.flow import wait_until
    from workflows.models import NodeRun

    settings.AOB_LLM_PRICES = TEST_PRICES
    user = User.objects.create_user("browser", password=PASSWORD)
    workflow_save(owner=user, tag="ask", definition={"nodes": [agent(model=PRICEY_MODEL, max_tokens=1000)],
                                                     "edges": []})
    fake_llm.reset([{"content": "Done."}] * 2)
    parent = {"nodes": [{"id": f"c{i}", "type": "workflow", "config": {"tag": "ask"}} for i in range(2)], "edges": []}
    api = APIClient()
    api.force_authenticate(user)
    run_id = api.post("/api/v1/runs", {"workflow": parent, "inputs": {}}, format="json").json()["run_id"]
    paused = wait_until(lambda: NodeRun.objects.filter(run__parent_link__parent_run_id=run_id, node_id="plan",
                                                       status="waiting", wait_reason="budget").first(),
                        timeout=30, what="a child paused on the parent's budget")
    child_id = str(paused.run_id)

    with chromium_page("web-budget-failure.png") as (page, problems):
        log_in(page, web, "browser", f"/runs/{child_id}/")
        page.locator('svg.dag [data-node="plan"]').click()
        panel = page.locator("#node-panel")
        expect(panel).to_contain_text(f"counts against run {run_id[:8]}, whose budget ($2, 500000 tokens)")
        expect(page.get_by_label("new cost ceiling in USD")).to_have_value("4")  # twice that run's, not $0
        page.get_by_label("new cost ceiling in USD").fill("10")
        page.get_by_role("button", name="Raise that budget and resume").click()
        expect(page.locator("#run-status")).to_have_attribute("data-status", "completed")

    from tests.conftest import wait_for_run

    assert wait_for_run(run_id).status == "completed"
    assert Run.objects.get(pk=run_id).budget["max_cost_usd"] == 10
    assert Run.objects.get(pk=child_id).budget == {Run.WITHIN: run_id}  # the child's own: untouched
    assert problems == []


@pytest.mark.browser
def test_a_node_waiting_on_its_own_budget_says_so_and_offers_no_raise(web: str, fake_llm) -> None:
    """Two agents whose budget (their definition's) fits one call's worst case and not two: while
    one call is in flight the other node waits on it. Its page said the run's budget could not cover
    the call and offered to raise the run's, which changes nothing for it; it names the node's own
    budget and what the calls in flight hold now, offers no raise, and the run completes once they end."""
    import threading

    from playwright.sync_api import expect
    from rest_framework.test import APIClient

    from tests.agents.flows import agent, finish, start
    from tests.engine.flow import wait_until

    user = User.objects.create_user("browser", password=PASSWORD)
    api = APIClient()
    api.force_authenticate(user)

    def two(budget: dict) -> str:
        return start(api, [agent("a", budget=budget, max_tokens=1000), agent("b", budget=budget, max_tokens=1000)])

    probe = finish(two({"max_tokens": 1}))  # a call's worst case, as its refusal names it
    worst = max(nr.error["next_call"]["tokens"] for nr in NodeRun.objects.filter(run=probe)
                if nr.error and "next_call" in nr.error)
    answered = threading.Event()
    fake_llm.reset([{"content": "first", "until": answered}, {"content": "second"}])
    run_id = two({"max_tokens": worst + worst // 2})
    waiting = wait_until(lambda: NodeRun.objects.filter(run_id=run_id, status="waiting", wait_reason="budget").first(),
                         timeout=30, what="a node waiting on its own budget")

    with chromium_page("web-node-budget-failure.png") as (page, problems):
        log_in(page, web, "browser", f"/runs/{run_id}/")
        page.locator(f'svg.dag [data-node="{waiting.node_id}"]').click()
        panel = page.locator("#node-panel")
        expect(panel).to_contain_text(f"this node's own budget ({worst + worst // 2} tokens) cannot cover")
        expect(panel).to_contain_text("raising the run's does not change it")
        expect(panel.get_by_role("button", name=re.compile("Raise"))).to_have_count(0)
        answered.set()
        expect(page.locator("#run-status")).to_have_attribute("data-status", "completed")
    assert problems == []


@pytest.mark.browser
def test_the_runs_a_filter_chooses_are_deleted_from_the_runs_list(web: str) -> None:
    """An owner at the storage bound freed room one run at a time from the run page; the list's
    filters choose many, and its button deletes the caller's finished ones they choose."""
    from playwright.sync_api import expect

    from tests.api.test_lists import a_run

    user = User.objects.create_user("browser", password=PASSWORD)
    failed = [a_run(user, tag="billing", status="failed") for _ in range(3)]
    kept = [a_run(user, tag="billing"), a_run(user, tag="reports", status="failed"),
            a_run(user, tag="drafts", status="running")]

    with chromium_page("web-runs-delete-failure.png") as (page, problems):
        log_in(page, web, "browser", "/runs/")
        page.goto(f"{web}/runs/?workflow=billing&status=failed")
        expect(page.locator("#runs-table tbody tr")).to_have_count(3)
        button = page.get_by_role("button", name="Delete these finished runs of yours (every page)")
        button.click()
        page.get_by_role("button", name=re.compile("^Confirm: delete 3 runs, with")).click()  # counted first
        expect(page.locator("#delete-matching-status")).to_have_text("3 deleted.")
        expect(page.locator("p.empty")).to_contain_text("No runs")  # the page read again
        page.goto(f"{web}/runs/?workflow=drafts")  # a run still going: nothing to delete, said, nothing to confirm
        expect(page.locator("#runs-table tbody tr")).to_have_count(1)
        button.click()
        expect(page.locator("#delete-matching-status")).to_have_text(
            "Nothing to delete: no finished run of yours matches.")
        expect(button).to_have_text("Delete these finished runs of yours (every page)")
        page.goto(f"{web}/runs/?q=x")  # a text search chooses no runs to delete: no button
        expect(page.locator("#delete-matching")).to_have_count(0)
    assert not Run.objects.filter(pk__in=[r.pk for r in failed]).exists()
    assert Run.objects.filter(pk__in=[r.pk for r in kept]).count() == 3
    assert problems == []


def gate_for_two() -> tuple[str, int, str]:
    """A run waiting at a gate the page's user and bob must both approve: its id, the approval's and
    bob's API token."""
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    from approvals.models import Approval
    from tests.approvals.runs import refund_flow
    from tests.conftest import wait_for_run

    user = User.objects.create_user("browser", password=PASSWORD)
    bob = User.objects.create_user("bob", password="bob-pass-1")
    api = APIClient()
    api.force_authenticate(user)
    definition = refund_flow({"approvers": ["browser", "bob"], "required_approvals": 2})
    run_id = api.post("/api/v1/runs", {"workflow": definition, "inputs": {"amount": 7, "customer": "Ada"}},
                      format="json").json()["run_id"]
    wait_for_run(run_id, statuses={"waiting_for_approval"})
    return run_id, Approval.objects.get(run_id=run_id).pk, Token.objects.create(user=bob).key


def bob_approves(web: str, approval_id: int, token: str) -> None:
    """bob's vote through the API, as a colleague's from elsewhere."""
    import httpx

    voted = httpx.post(f"{web}/api/v1/approvals/{approval_id}/decide", json={"approve": True},
                       headers={"Authorization": f"Token {token}"})
    assert voted.status_code == 200, voted.text


@pytest.mark.browser
def test_a_colleagues_vote_updates_the_count_and_keeps_what_is_being_typed(web: str) -> None:
    """A gate two people must approve: while one types a comment, the other approves through the
    API; the page shows the new count live and what is typed stays, focus included."""
    from playwright.sync_api import expect

    run_id, approval_id, bobs = gate_for_two()

    with chromium_page("web-votes-failure.png") as (page, problems):
        log_in(page, web, "browser", f"/runs/{run_id}/")
        votes = page.locator("#node-panel").get_by_text(re.compile(r"of 2 approvals so far"))
        expect(votes).to_have_text("0 of 2 approvals so far")
        comment = page.get_by_label("Comment (optional)")
        comment.click()
        page.keyboard.type("fine by")

        bob_approves(web, approval_id, bobs)

        expect(votes).to_have_text("1 of 2 approvals so far")
        expect(comment).to_be_focused()
        page.keyboard.type(" me")
        expect(comment).to_have_value("fine by me")
        page.get_by_role("button", name="Approve").click()
        expect(page.locator("#run-status")).to_have_attribute("data-status", "completed")

    from approvals.models import Approval

    decisions = {d.user.username: d.comment for d in Approval.objects.get(pk=approval_id).decisions.all()}
    assert decisions == {"bob": "", "browser": "fine by me"}
    assert problems == []


@pytest.mark.browser
def test_a_focused_chip_of_a_node_running_now_keeps_focus_when_an_event_redraws_the_page(web: str) -> None:
    """Someone tabbed to the chip of the waiting node; a colleague's vote redraws the page; the
    chip still has focus, so the Enter pressed next selects its node."""
    from playwright.sync_api import expect

    run_id, approval_id, bobs = gate_for_two()

    with chromium_page("web-now-chip-failure.png") as (page, problems):
        log_in(page, web, "browser", f"/runs/{run_id}/")
        votes = page.locator("#node-panel").get_by_text(re.compile(r"of 2 approvals so far"))
        expect(votes).to_have_text("0 of 2 approvals so far")
        chip = page.locator("#now").get_by_role("button", name="review")
        chip.focus()
        expect(chip).to_be_focused()

        bob_approves(web, approval_id, bobs)

        expect(votes).to_have_text("1 of 2 approvals so far")  # the page has redrawn since
        expect(chip).to_be_focused()
        page.keyboard.press("Enter")
        expect(page.locator("#node-panel")).to_be_focused()

    assert problems == []


@pytest.mark.browser
def test_a_new_budget_pause_keeps_the_ceiling_being_typed(web: str, fake_llm, settings) -> None:
    """The owner is typing a new ceiling on the page when the node pauses again (the budget was
    raised elsewhere, not far enough): the message names the new ceiling, the suggestion nobody
    touched follows it, and what is typed stays, focus included."""
    import httpx
    from playwright.sync_api import WebSocketRoute, expect
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    from tests.agents.flows import agent
    from tests.conftest import PRICEY_MODEL, TEST_PRICES, wait_for_run
    from tests.engine.flow import wait_until
    from workflows.models import NodeRun

    settings.AOB_LLM_PRICES = TEST_PRICES
    user = User.objects.create_user("browser", password=PASSWORD)
    token = Token.objects.create(user=user).key
    fake_llm.reset([{"content": "Done."}])
    api = APIClient()
    api.force_authenticate(user)
    # up to 2000 tokens at $1990 a million: $3.98, past the run's $2
    run_id = api.post("/api/v1/runs", {"workflow": {"nodes": [agent(model=PRICEY_MODEL, max_tokens=2000)], "edges": []},
                                       "inputs": {}}, format="json").json()["run_id"]
    wait_until(lambda: NodeRun.objects.filter(run_id=run_id, node_id="plan", status="waiting",
                                              wait_reason="budget").exists(),
               timeout=30, what="the node paused on the run's budget")
    headers = {"Authorization": f"Token {token}"}

    def pauses() -> int:
        events = httpx.get(f"{web}/api/v1/runs/{run_id}/events", headers=headers).json()
        return sum(e["type"] == "node_paused" for e in events)

    with chromium_page("web-budget-kept-failure.png") as (page, problems):
        # While the network is down the page's socket stays open but reaches nothing (as behind a
        # stalled proxy), so the page sees the node only as paused, before and after.
        sockets: list[WebSocketRoute] = []
        network = {"up": True}

        def through(socket: WebSocketRoute) -> None:
            if network["up"]:
                socket.connect_to_server()
            sockets.append(socket)

        page.route_web_socket(re.compile(r"/ws/runs/"), through)
        log_in(page, web, "browser", f"/runs/{run_id}/")
        panel = page.locator("#node-panel")
        expect(panel).to_contain_text("Paused: the run's budget ($2, 500000 tokens)")
        usd = page.get_by_label("new cost ceiling in USD")
        tokens = page.get_by_label("new token ceiling")
        expect(usd).to_have_value("4")
        expect(tokens).to_have_value("1000000")
        usd.fill("2")

        network["up"] = False
        page.locator("#node-h").evaluate("h => { h.dataset.drawn = 'before'; }")
        sockets[-1].close()
        expect(page.locator("#node-h")).not_to_have_attribute("data-drawn", "before")  # back, on the dead line
        raised = httpx.post(f"{web}/api/v1/runs/{run_id}/budget", json={"max_cost_usd": 3, "max_tokens": 600000},
                            headers=headers)
        assert raised.status_code == 200, raised.text
        wait_until(lambda: pauses() == 2, timeout=30, what="the node paused again, on $3")
        network["up"] = True
        sockets[-1].close()  # the page reconnects and is sent what it missed

        expect(panel).to_contain_text("Paused: the run's budget ($3, 600000 tokens)")
        expect(tokens).to_have_value("1200000")  # untouched: follows the new ceiling
        expect(usd).to_have_value("2")
        expect(usd).to_be_focused()
        page.keyboard.type("5")
        expect(usd).to_have_value("25")
        page.get_by_role("button", name="Raise budget and resume").click()
        expect(page.locator("#run-status")).to_have_attribute("data-status", "completed")

    assert wait_for_run(run_id).budget["max_cost_usd"] == 25
    assert problems == []


@pytest.mark.browser
def test_the_ceiling_being_typed_survives_the_node_running_between_two_budget_pauses(web: str, fake_llm,
                                                                                       settings) -> None:
    """Live: the owner is typing a new ceiling when the budget is raised through the API by too
    little; the page draws the node running its one call, then paused again on the new ceiling, and
    the form comes back as it was left: what is typed, and focus."""
    import threading

    import httpx
    from playwright.sync_api import expect
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    from tests.agents.flows import agent
    from tests.conftest import PRICEY_MODEL, TEST_PRICES, wait_for_run
    from tests.engine.flow import wait_until
    from workflows.models import NodeRun

    settings.AOB_LLM_PRICES = TEST_PRICES
    user = User.objects.create_user("browser", password=PASSWORD)
    token = Token.objects.create(user=user).key
    # Each call reserves up to 2000 tokens at $1990 a million ($3.98): past the run's $2, within $5.
    # The first costs $2.985 (1500 tokens), so the next call does not fit in $5 either.
    answer = threading.Event()
    fake_llm.reset([{"tool_calls": [("search_tools", {"query": "http"})], "until": answer,
                     "usage": {"prompt_tokens": 100, "completion_tokens": 1500, "total_tokens": 1600}},
                    {"content": "Done."}])
    api = APIClient()
    api.force_authenticate(user)
    run_id = api.post("/api/v1/runs", {"workflow": {"nodes": [agent(model=PRICEY_MODEL, max_tokens=2000)], "edges": []},
                                       "inputs": {}}, format="json").json()["run_id"]
    wait_until(lambda: NodeRun.objects.filter(run_id=run_id, node_id="plan", status="waiting",
                                              wait_reason="budget").exists(),
               timeout=30, what="the node paused on the run's budget")

    try:
        with chromium_page("web-budget-live-failure.png") as (page, problems):
            log_in(page, web, "browser", f"/runs/{run_id}/")
            panel = page.locator("#node-panel")
            plan = page.locator('svg.dag [data-node="plan"]')
            expect(panel).to_contain_text("Paused: the run's budget ($2, 500000 tokens)")
            usd = page.get_by_label("new cost ceiling in USD")
            tokens = page.get_by_label("new token ceiling")
            expect(usd).to_have_value("4")
            usd.fill("2")
            expect(usd).to_be_focused()

            raised = httpx.post(f"{web}/api/v1/runs/{run_id}/budget", json={"max_cost_usd": 5, "max_tokens": 600000},
                                headers={"Authorization": f"Token {token}"})
            assert raised.status_code == 200, raised.text
            expect(plan).to_have_attribute("data-status", "running")  # drawn live, its call held
            expect(usd).to_be_hidden()
            answer.set()

            expect(plan).to_have_attribute("data-status", "waiting")
            expect(panel).to_contain_text("Paused: the run's budget ($5, 600000 tokens)")
            expect(tokens).to_have_value("1200000")  # untouched: follows the new ceiling
            expect(usd).to_have_value("2")
            expect(usd).to_be_focused()
            page.keyboard.type("5")
            expect(usd).to_have_value("25")
            page.get_by_role("button", name="Raise budget and resume").click()
            expect(page.locator("#run-status")).to_have_attribute("data-status", "completed")
            expect(usd).to_have_count(0)  # the node completed: its form is gone
    finally:
        answer.set()

    run = wait_for_run(run_id)
    assert run.budget["max_cost_usd"] == 25 and len(fake_llm.requests) == 2
    assert problems == []


@pytest.mark.browser
def test_a_run_s_inputs_past_the_details_budget_are_a_link_in_the_run_page(web: str) -> None:
    """The run page polls details: inputs past its byte budget (AOB_DETAILS_MAX_BYTES, 1 MiB) come
    as a marker, and the header shows their size linking to where they are read whole."""
    from playwright.sync_api import expect

    from tests.conftest import set_inputs, stored_run

    user = User.objects.create_user("inputs", password=PASSWORD)
    run = stored_run(user)
    set_inputs(run, {"pad": "x" * (settings.AOB_DETAILS_MAX_BYTES + 1)})
    # inputs are anyone's JSON (a hook's payload): ones shaped like the marker are shown as text
    look_alike = stored_run(user)
    set_inputs(look_alike, {"truncated": True, "bytes": 1, "href": "javascript:alert(1)"})
    # and a node field past the budget, so details are truncated for that run too
    NodeRun.objects.create(run=look_alike, node_id="a", node_type="transform", status="completed", attempts=1,
                           input={}, output={"pad": "o" * (settings.AOB_DETAILS_MAX_BYTES + 1)})

    with chromium_page("web-run-inputs-failure.png") as (page, problems):
        log_in(page, web, "inputs", f"/runs/{run.pk}/")
        link = page.locator("#run-meta a", has_text="bytes)")
        expect(link).to_have_attribute("href", f"/api/v1/runs/{run.pk}/inputs")
        expect(page.locator("#run-meta")).not_to_contain_text("xxxx")
        whole = page.request.get(f"{web}/api/v1/runs/{run.pk}/inputs").json()["inputs"]["pad"]
        page.goto(f"{web}/runs/{look_alike.pk}/")
        expect(page.locator("#run-meta")).to_contain_text('"href":"javascript:alert(1)"')
        expect(page.locator("#run-meta a")).to_have_count(0)
    assert len(whole) == settings.AOB_DETAILS_MAX_BYTES + 1
    assert problems == []


@pytest.mark.browser
def test_a_run_s_output_computed_after_it_completes_appears_on_its_page(web: str) -> None:
    """A worker computes ``metadata.output`` once the run completed; the page, which showed it as
    being computed, draws it when its ``output_computed`` event arrives."""
    from playwright.sync_api import expect

    user = User.objects.create_user("greeter", password=PASSWORD)
    workflow_save(owner=user, tag="greet", definition=json.loads((ROOT / "examples/greet.json").read_text()))

    with chromium_page("web-run-output-failure.png") as (page, problems):
        run_from_its_page(page, web, "greeter", "greet", '{"name": "Ada"}')
        expect(page.locator("#result-output")).to_contain_text("hello Ada!")
        page.get_by_role("tab", name="Events").click()
        expect(page.locator("#events")).to_contain_text("output_computed")
    assert problems == []


@pytest.mark.browser
def test_a_gate_nobody_can_decide_says_so_on_its_run_page(web: str) -> None:
    """The owner, not an approver, opens a run waiting at a gate whose approver names no one: the
    node's panel says why no vote will come and what ends the wait, instead of "waiting for an
    approver"; its event says it too. The panel is drawn from the run's details before the
    socket's replay brings that event (held here until then, as a slow socket would be): the note
    is drawn again when the event comes."""
    from playwright.sync_api import WebSocketRoute, expect
    from rest_framework.authtoken.models import Token

    from tests.approvals.runs import approval_of, refund_flow, submit

    user = User.objects.create_user("lonely", password=PASSWORD)
    Token.objects.create(user=user)
    run_id = submit(user, refund_flow({"approvers": ["nobody-at-all"]}))
    approval_of(run_id)

    with chromium_page("web-run-nobody-failure.png") as (page, problems):
        held: list[WebSocketRoute] = []  # the first socket stays open and silent; the next go through

        def slow_then_through(socket: WebSocketRoute) -> None:
            if held:
                socket.connect_to_server()
            else:
                held.append(socket)

        page.route_web_socket(re.compile(r"/ws/runs/"), slow_then_through)
        log_in(page, web, "lonely", f"/runs/{run_id}/")
        page.locator('svg.dag [data-node="review"]').click()
        # no event yet: the approval's own answer already says so
        expect(page.locator("#node-panel")).to_contain_text("Nobody can decide this gate now")
        held[0].close()  # the page reconnects and its replay brings the gate's event
        expect(page.locator("#node-panel")).to_contain_text("nobody can decide approval")
        expect(page.locator("#node-panel")).to_contain_text("only cancelling the run ends it")
        expect(page.locator("#events")).to_contain_text("nobody can decide")
    assert problems == []


@pytest.mark.browser
def test_the_owner_deletes_a_finished_run_from_its_page(web: str) -> None:
    """What an owner's runs keep is bounded (AOB_OWNER_STORAGE_BYTES): the run page deletes a finished
    run of theirs (``POST /runs/{id}/delete``) after a second press, then shows the runs list; an
    unfinished one offers Cancel instead."""
    from playwright.sync_api import expect

    from tests.conftest import stored_run

    user = User.objects.create_user("deleter", password=PASSWORD)
    running, finished = stored_run(user), stored_run(user)
    Run.objects.filter(pk=finished.pk).update(status="completed")

    with chromium_page("web-run-delete-failure.png") as (page, problems):
        log_in(page, web, "deleter", f"/runs/{running.pk}/")
        expect(page.locator("#cancel-btn")).to_be_visible()
        expect(page.locator("#delete-btn")).to_be_hidden()
        page.goto(f"{web}/runs/{finished.pk}/")
        delete = page.get_by_role("button", name="Delete run")
        delete.click()
        expect(page.get_by_role("button", name="Confirm: delete this run")).to_be_visible()  # one press arms it
        page.get_by_role("button", name="Confirm: delete this run").click()
        page.wait_for_url(f"{web}/runs/")
    assert not Run.objects.filter(pk=finished.pk).exists() and Run.objects.filter(pk=running.pk).exists()
    assert problems == []


@pytest.mark.browser
def test_a_gate_asking_me_while_my_inbox_s_socket_connects_reaches_my_inbox(web: str) -> None:
    """The inbox read its list at page load and again only on a nudge or on its socket's second
    open: a gate asking its user between that read and the server joining the socket's groups (a
    slow handshake: a busy socket server, a proxy) sent a nudge nobody heard, and the page said
    "Nothing to decide" for good, live (a review's find). It reads again at every open, the first
    too. Here the handshake is held until the gate waits."""
    import time

    import httpx
    from playwright.sync_api import expect
    from rest_framework.authtoken.models import Token

    from tests.approvals.runs import refund_flow

    User.objects.create_user("browser", password=PASSWORD)
    alice = User.objects.create_user("alice", password="alice-pass-1")
    auth = {"Authorization": f"Token {Token.objects.create(user=alice).key}"}
    asked: list[str] = []

    def slow_handshake(ws) -> None:
        time.sleep(2)  # the handshake is slow: the page's first read of its list is done meanwhile
        started = httpx.post(f"{web}/api/v1/runs", headers=auth, json={
            "workflow": refund_flow({"approvers": ["browser"]}), "inputs": {"amount": 7, "customer": "Ada"}})
        run_id = started.json()["run_id"]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if httpx.get(f"{web}/api/v1/runs/{run_id}", headers=auth).json()["status"] == "waiting_for_approval":
                asked.append(run_id)
                break
            time.sleep(0.1)
        ws.connect_to_server()  # the socket reaches the server, joins its groups, and opens

    with chromium_page("inbox-first-open.png") as (page, problems):
        log_in(page, web, "browser", "/runs/")
        page.route_web_socket("**/ws/events/", slow_handshake)
        page.goto(f"{web}/approvals/")
        expect(page.locator("#inbox")).to_contain_text("Refund", timeout=15_000)
        assert asked, "the gate never waited"
        assert not problems, problems
