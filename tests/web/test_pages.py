"""The web pages as Django renders them: login, who sees what, the page data the scripts start
from, static files served by the app itself, and the approvals list's ?run filter."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from approvals.models import Approval
from tests.conftest import client_for, wait_for_run
from workflows.definition.validation import validate
from workflows.services.definitions import workflow_save
from workflows.services.runs import run_start
from workflows.web import views as web_views

EXAMPLES = Path(settings.BASE_DIR) / "examples"


def example(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / f"{name}.json").read_text())


@pytest.fixture
def browser(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def page_data(response: Any) -> dict[str, Any]:
    match = re.search(r'<script id="page-data" type="application/json">(.*?)</script>', response.content.decode())
    assert match, "the page carries its data for the scripts"
    return json.loads(match.group(1))


@pytest.mark.parametrize("path", ["/", "/workflows/new/", "/workflows/x/", "/runs/", "/approvals/",
                                  "/runs/00000000-0000-0000-0000-000000000000/"])
def test_pages_need_a_login(db: Any, path: str) -> None:
    response = Client().get(path)
    assert response.status_code == 302
    assert response["Location"] == f"/login/?next={path}"


def test_login_and_logout(user: Any) -> None:
    client = Client()
    assert client.get("/login/").status_code == 200
    wrong = client.post("/login/", {"username": "alice", "password": "nope"})
    assert wrong.status_code == 200 and b"Wrong username or password" in wrong.content
    right = client.post("/login/", {"username": "alice", "password": "s3cret-pass!"})
    assert right.status_code == 302 and right["Location"] == "/"
    assert client.get("/").status_code == 200
    out = client.post("/logout/")
    assert out.status_code == 302 and out["Location"] == "/login/"
    assert client.get("/").status_code == 302


@pytest.mark.parametrize("next_page", ["/login/", "/login/?next=/login/"])
def test_a_login_link_whose_next_is_the_login_page_leads_home_not_to_a_500(user: Any, next_page: str) -> None:
    """The login page sends a signed-in user on to its ``next``; a ``next`` that is the login page
    itself was Django's "redirection loop" ValueError: a 500 for a signed-in user following a link
    anyone can send, and for one who signs in through it."""
    client = Client(raise_request_exception=False)
    client.force_login(user)

    response = client.get("/login/", {"next": next_page}, follow=True)

    assert response.status_code == 200, response.content[:200]
    assert response.redirect_chain[-1][0] == "/"
    signed_in = Client(raise_request_exception=False)
    response = signed_in.post(f"/login/?next={next_page}", {"username": "alice", "password": "s3cret-pass!"},
                              follow=True)
    assert response.status_code == 200 and response.redirect_chain[-1][0] == "/"


def test_workflow_list_shows_my_workflows_only(browser: Client, user: Any, make_user: Any) -> None:
    workflow_save(owner=user, tag="mine", definition=example("hello-chain"), description="")
    workflow_save(owner=make_user("bob"), tag="theirs", definition=example("hello-chain"), description="")
    html = browser.get("/").content.decode()
    assert 'href="/workflows/mine/"' in html and "Hello chain" in html
    assert "theirs" not in html
    assert browser.get("/workflows/theirs/").status_code == 404


def test_the_workflows_page_pages_by_tag_and_keeps_the_search(browser: Client, user: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(web_views, "WORKFLOWS_PAGE_SIZE", 2)
    for tag in ("echo", "delta", "charlie", "bravo", "alpha", "other"):
        workflow_save(owner=user, tag=tag, definition={**example("hello-chain"), "metadata": {
            "name": tag.title(), "description": "a page" if tag != "other" else ""}})
    pages, query = [], "?q=page"
    while query and len(pages) < 5:
        response = browser.get("/" + query)
        assert response.status_code == 200
        pages.append([w["tag"] for w in response.context["workflows"]])
        query = response.context["next_query"]
        assert not query or "q=page" in query
    assert pages == [["alpha", "bravo"], ["charlie", "delta"], ["echo"]]
    assert 'rel="prev"' in response.content.decode()
    assert browser.get("/?cursor=nonsense").context["problem"].startswith("cursor:")


@pytest.mark.parametrize(("path", "querystring"), [("/runs/", "o=0&p=garbage"), ("/runs/", "p=99999-01-01"),
                                                   ("/runs/", "r=1&p=%00"), ("/", "r=1&p=%00")])
def test_a_hand_made_cursor_is_a_problem_on_the_page(browser: Client, user: Any, path: str, querystring: str) -> None:
    cursor = base64.b64encode(querystring.encode()).decode()

    response = browser.get(path, {"cursor": cursor})

    assert response.status_code == 200
    assert response.context["problem"].startswith("cursor:")


def test_every_page_links_to_flower_and_the_api_docs(browser: Client, settings: Any) -> None:
    settings.AOB_FLOWER_URL = "http://flower.example:5555/"
    html = browser.get("/runs/").content.decode()
    assert 'href="http://flower.example:5555/"' in html
    assert 'href="/api/v1/docs/"' in html


def test_workflow_page_says_what_to_set_when_no_llm_is_configured(browser: Client, user: Any, settings: Any) -> None:
    workflow_save(owner=user, tag="agentic", definition=example("agent-patch"), description="")
    settings.OPENAI_API_KEY = settings.OPENAI_BASE_URL = ""
    response = browser.get("/workflows/agentic/")
    data = page_data(response)
    assert data["llm_configured"] is False
    assert data["definition"]["nodes"][0]["type"] == "agent"
    html = response.content.decode()
    assert "OPENAI_API_KEY" in html and "OPENAI_BASE_URL" in html
    settings.OPENAI_BASE_URL = "http://127.0.0.1:9/v1"
    assert page_data(browser.get("/workflows/agentic/"))["llm_configured"] is True


def test_new_workflow_page(browser: Client) -> None:
    data = page_data(browser.get("/workflows/new/?tag=fresh"))
    assert data["tag"] == "fresh" and data["is_new"] is True
    assert validate(data["definition"]).valid  # a starter that saves as it is


def test_run_page_for_owner_and_404_for_others(browser: Client, user: Any, make_user: Any) -> None:
    run = run_start(owner=user, definition=example("hello-chain"), inputs={"name": "Ada"})
    data = page_data(browser.get(f"/runs/{run.pk}/"))
    assert data["run_id"] == str(run.pk) and data["is_owner"] is True
    html = browser.get("/runs/").content.decode()
    assert f'data-run="{run.pk}"' in html
    other = Client()
    other.force_login(make_user("bob"))
    assert other.get(f"/runs/{run.pk}/").status_code == 404
    assert f'data-run="{run.pk}"' not in other.get("/runs/").content.decode()


def test_runs_list_filters_by_status(browser: Client, user: Any) -> None:
    run = run_start(owner=user, definition=example("hello-chain"), inputs={"name": "Ada"})
    assert f'data-run="{run.pk}"' in browser.get(f"/runs/?status={run.status}").content.decode()
    assert f'data-run="{run.pk}"' not in browser.get("/runs/?status=cancelled").content.decode()
    assert browser.get("/runs/?status=bogus").status_code == 200


def test_static_files_are_served_by_the_app(db: Any) -> None:
    client = Client()
    script = client.get("/static/aob/run.js")
    assert script.status_code == 200
    assert script["Content-Type"].startswith("text/javascript")
    assert b"new LiveSocket" in script.content and b"setInterval" not in script.content
    again = client.get("/static/aob/run.js", HTTP_IF_MODIFIED_SINCE=script["Last-Modified"])
    assert again.status_code == 304
    assert client.get("/static/admin/css/base.css").status_code == 200
    for path in ["/static/../aob_project/settings.py", "/static/aob/../../../web/views.py", "/static/nope.js",
                 "/static//etc/passwd"]:
        assert client.get(path).status_code == 404, path


def test_no_script_polls(db: Any) -> None:
    scripts = list((Path(settings.BASE_DIR) / "workflows/static/aob").glob("*.js"))
    assert scripts, "no script found: the check below would pass on nothing"
    for script in scripts:
        assert "setInterval" not in script.read_text(), script.name


def test_approvals_list_filters_by_run(engine: Any, user: Any, make_user: Any) -> None:
    first = run_start(owner=user, definition=example("approval"), inputs={"amount": 1, "customer": "A"})
    second = run_start(owner=user, definition=example("approval"), inputs={"amount": 2, "customer": "B"})
    for run in (first, second):
        wait_for_run(run.pk, statuses={"waiting_for_approval"})
    api = client_for(user)
    listed = api.get(f"/api/v1/approvals?status=pending&run={first.pk}").json()["results"]
    assert [a["run_id"] for a in listed] == [str(first.pk)]
    assert listed[0]["id"] == Approval.objects.get(run=first).pk
    everything = api.get(f"/api/v1/approvals?run={second.pk}").json()["results"]
    assert [a["run_id"] for a in everything] == [str(second.pk)]
    bob = client_for(make_user("bob"))
    assert bob.get(f"/api/v1/approvals?run={first.pk}").status_code == 404
    assert api.get("/api/v1/approvals?run=not-a-uuid").status_code == 404


@pytest.mark.parametrize("path", ["/workflows/new/", "/workflows/greet/", "/workflows/greet/triggers/", "/secrets/"])
def test_a_scripted_form_cannot_be_sent_before_its_script_takes_it_over(browser: Client, user: Any, path: str) -> None:
    """Every submit button of a form the page's script sends starts disabled (``api.js`` ``takeOver``
    enables it): clicked before the script loaded, the browser sent the form itself, a reload that
    lost what was typed (seen in the triggers page's browser test under load)."""
    workflow_save(owner=user, tag="greet", definition={"nodes": [{"id": "a", "type": "transform",
                                                                 "config": {"expression": "1"}}], "edges": []})
    html = browser.get(path).content.decode()

    buttons = re.findall(r"<button[^>]*type=\"submit\"[^>]*>", html.split("<main", 1)[-1])
    assert buttons, html[:500]
    assert all("disabled" in b and "data-scripted" in b for b in buttons), buttons


def test_the_runs_list_offers_a_delete_only_for_filters_a_delete_takes(browser: Client, user: Any) -> None:
    """A list of running runs offered "Delete these finished runs of yours", whose request the API
    refused (a delete takes finished statuses only): the page and the API read one rule."""
    run_start(owner=user, definition=example("hello-chain"), inputs={"name": "Ada"})
    assert 'id="delete-filters"' not in browser.get("/runs/?status=running").content.decode()
    assert 'id="delete-filters"' not in browser.get("/runs/?status=queued").content.decode()
    from workflows.models import Run

    Run.objects.filter(owner=user).update(status="completed")
    assert 'id="delete-filters"' in browser.get("/runs/?status=completed").content.decode()
