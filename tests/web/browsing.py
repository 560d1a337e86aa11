"""Debian's Chromium through Playwright for the browser tests: one page with the tests' settings,
its console errors and page errors collected, a screenshot when the test fails, and the login."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.conf import settings
from playwright.sync_api import expect

ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
PASSWORD = "browser-pass-1"
# What a page's actions wait for, and its assertions (Playwright's ``expect`` waits 5 s unless told):
# on a loaded two-core machine the API docs' renderer alone took longer than 5 s.
WAIT_MS = 20_000
expect.set_options(timeout=WAIT_MS)  # for every browser test: each imports this module


@contextmanager
def chromium_page(failure_screenshot: str) -> Iterator[tuple[Any, list[str]]]:
    """A page of a headless Chromium, and the list its console and page errors are added to. No
    ORM calls inside: Playwright's sync API runs an event loop in this thread."""
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1366, "height": 860})
        page.set_default_timeout(WAIT_MS)
        page.on("console", lambda m: problems.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        try:
            yield page, problems
        except Exception:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / failure_screenshot), full_page=True)
            raise
        finally:
            browser.close()


def log_in(page: Any, web: str, username: str, then: str) -> None:
    """Log in through the login page and land on ``then``."""
    page.goto(f"{web}/login/?next={then}")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{web}{then}")


def run_from_its_page(page: Any, web: str, username: str, tag: str, inputs: str) -> str:
    """Log in, start a run of ``tag`` with the workflow page's Run button, and land on the run's page."""
    log_in(page, web, username, f"/workflows/{tag}/")
    page.get_by_label("Inputs (JSON object)").fill(inputs)
    page.get_by_role("button", name="Run", exact=True).click()
    page.wait_for_url(f"{web}/runs/*/")
    return page.url
