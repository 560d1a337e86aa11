"""The visual builder in a real browser (Playwright on Debian's Chromium, never a browser
download), against uvicorn and the session's real workers: a three-node workflow built with the
builder only (drag from the palette, connect ports, a condition on an edge, a config form), saved,
run, its timeline and output seen; the JSON view and the builder stay equal after edits in either;
the runs list filters by workflow and date. Screenshots go to test-artifacts/."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import User

from tests.web.browsing import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, PASSWORD, WAIT_MS
from workflows.models import Run, Workflow
from workflows.services.definitions import workflow_save

pytestmark = pytest.mark.browser


def browser_page(p: Any, problems: list[str]) -> Any:
    browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    page.set_default_timeout(WAIT_MS)
    page.on("console", lambda m: problems.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    return browser, page


def log_in(page: Any, web: str, username: str) -> None:
    page.goto(f"{web}/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{web}/")


def centre(page: Any, selector: str) -> tuple[float, float]:
    """The element's centre. The canvas is redrawn as validation answers arrive, and an element
    replaced between finding it and measuring it has no box: find it again."""
    for _ in range(20):
        box = page.locator(selector).bounding_box()
        if box is not None:
            return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    raise AssertionError(f"{selector} has no box")


def connect(page: Any, source: str, target: str) -> None:
    """Drag from the source node's port to the target node."""
    x, y = centre(page, f'svg.builder-canvas [data-port="{source}"]')
    tx, ty = centre(page, f'svg.builder-canvas [data-node="{target}"] .box')
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move((x + tx) / 2, (y + ty) / 2, steps=4)
    page.mouse.move(tx, ty, steps=4)
    page.mouse.up()


def json_view(page: Any) -> dict[str, Any]:
    return json.loads(page.locator("#definition").input_value())


def builder_view(page: Any) -> dict[str, Any]:
    """What the canvas draws: node ids and types, edges with their full labels."""
    return page.evaluate("""() => ({
        nodes: [...document.querySelectorAll('svg.builder-canvas [data-node]')].map(
            (g) => [g.dataset.node, g.dataset.type]).sort(),
        edges: [...document.querySelectorAll('svg.builder-canvas [data-edge]')].map((g) => {
            const label = document.querySelector(`[data-edge-label="${g.dataset.edge}"]`);
            return [g.querySelector('title').textContent.split(' when ')[0], label ? label.textContent : ''];
        }).sort(),
    })""")


def as_drawn(definition: dict[str, Any]) -> dict[str, Any]:
    return {"nodes": sorted([n["id"], n["type"]] for n in definition["nodes"]),
            "edges": sorted([f"{e['from']} → {e['to']}", e.get("condition", "")] for e in definition.get("edges", []))}


def test_build_a_three_node_workflow_with_the_builder_then_run_it(web: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    User.objects.create_user("builder", password=PASSWORD)
    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []
    with sync_playwright() as p:
        browser, page = browser_page(p, problems)
        try:
            log_in(page, web, "builder")
            page.goto(f"{web}/workflows/new/?tag=built")
            canvas = page.locator("svg.builder-canvas")
            expect(page.locator('svg.builder-canvas [data-node="start"]')).to_be_visible()
            page.locator('svg.builder-canvas [data-node="start"] .box').click()  # the starter node goes
            page.get_by_role("button", name="Delete node").click()
            expect(page.locator("svg.builder-canvas [data-node]")).to_have_count(0)

            palette = page.locator('.palette-item[data-type="transform"]')
            for x, y in ((120, 120), (420, 60), (420, 260)):
                palette.drag_to(canvas, target_position={"x": x, "y": y})
            expect(page.locator("svg.builder-canvas [data-node]")).to_have_count(3)

            # configs through the generated form
            for node_id, expression in (("transform_1", "{'ok': inputs.n > 0, 'n': inputs.n}"),
                                        ("transform_2", "nodes.transform_1.n * 2"),
                                        ("transform_3", "'not positive'")):
                page.locator(f'svg.builder-canvas [data-node="{node_id}"] .box').click()
                form = page.locator('fieldset.config-form[data-type="transform"]')
                form.get_by_label("expression").fill(expression)

            connect(page, "transform_1", "transform_2")
            connect(page, "transform_1", "transform_3")
            expect(page.locator("svg.builder-canvas [data-edge]")).to_have_count(2)
            page.locator('svg.builder-canvas [data-edge="0"] .hit').click(force=True)
            page.get_by_label("Condition (CEL)").fill("$.ok == true")
            expect(page.locator('[data-edge-label="0"]')).to_have_text("$.ok == true")  # the whole label

            expect(page.locator("#validation")).to_contain_text("Valid")
            assert builder_view(page) == as_drawn(json_view(page))
            page.get_by_role("button", name="Fit").click()
            page.screenshot(path=str(ARTIFACTS / "web-builder.png"), full_page=True)

            page.get_by_role("button", name="Save").click()
            page.wait_for_url(f"{web}/workflows/built/")
            page.get_by_label("Inputs (JSON object)").fill('{"n": 21}')
            page.get_by_role("button", name="Run", exact=True).click()
            page.wait_for_url(f"{web}/runs/*/")
            expect(page.locator("#run-status")).to_have_attribute("data-status", "completed")
            expect(page.locator("#result-output")).to_contain_text('"transform_2": 42')
            expect(page.locator("#result-duration")).not_to_have_text("–")
            page.get_by_role("tab", name="Timeline").click()
            rows = page.locator("table.tl tbody tr")
            expect(rows).to_have_count(3)
            expect(page.locator('table.tl tr[data-node="transform_2"] .tl-bar.run')).to_have_count(1)
            expect(page.locator('table.tl tr[data-node="transform_3"]')).to_have_attribute("data-status", "skipped")
            page.screenshot(path=str(ARTIFACTS / "web-run-timeline.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "web-builder-failure.png"), full_page=True)
            raise
        finally:
            browser.close()

    saved = Workflow.objects.get(tag="built").current_version.artifact.content
    assert sorted(n["id"] for n in saved["nodes"]) == ["transform_1", "transform_2", "transform_3"]
    assert {"from": "transform_1", "to": "transform_2", "condition": "$.ok == true"} in saved["edges"]
    run = Run.objects.get(tag="built")
    assert run.status == "completed"
    assert problems == []


def test_the_json_view_and_the_builder_stay_equal(web: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    user = User.objects.create_user("synced", password=PASSWORD)
    workflow_save(owner=user, tag="pair", definition={
        "nodes": [{"id": "a", "type": "transform", "config": {"expression": "1"}},
                  {"id": "b", "type": "transform", "config": {"expression": "2"}}],
        "edges": [{"from": "a", "to": "b", "condition": "output == 1 && true || false"}]})
    problems: list[str] = []
    with sync_playwright() as p:
        browser, page = browser_page(p, problems)
        try:
            log_in(page, web, "synced")
            page.goto(f"{web}/workflows/pair/")
            expect(page.locator("svg.builder-canvas [data-node]")).to_have_count(2)
            assert builder_view(page) == as_drawn(json_view(page))

            # an edit in the JSON view: a third node and an edge to it
            definition = json_view(page)
            definition["nodes"].append({"id": "c", "type": "hitl", "config": {"message": "ok?"}})
            definition["edges"].append({"from": "b", "to": "c"})
            page.locator(".cm-content").click()
            page.keyboard.press("Control+A")
            page.keyboard.press("Delete")
            page.locator(".cm-content").fill(json.dumps(definition, indent=2))
            expect(page.locator('svg.builder-canvas [data-node="c"]')).to_have_attribute("data-type", "hitl")
            assert builder_view(page) == as_drawn(json_view(page))

            # an edit in the builder: rename b, change its config, delete the edge into c
            page.locator('svg.builder-canvas [data-node="b"] .box').click()
            page.get_by_label("Id", exact=True).fill("double")
            page.get_by_label("Id", exact=True).press("Enter")
            page.locator('fieldset.config-form').get_by_label("expression").fill("nodes.a * 2")
            page.wait_for_function("() => document.querySelector('#definition').value.includes('nodes.a * 2')")
            after = json_view(page)
            assert {"from": "a", "to": "double", "condition": "output == 1 && true || false"} in after["edges"]
            assert {"from": "double", "to": "c"} in after["edges"]
            assert next(n for n in after["nodes"] if n["id"] == "double")["config"] == {"expression": "nodes.a * 2"}
            assert builder_view(page) == as_drawn(after)

            expect(page.locator("#validation")).to_contain_text("Valid")

            # completion from the schemas: the registry's types after "type", a type's config keys
            options = page.locator(".cm-tooltip-autocomplete li")
            for text, expected in (('{"nodes": [{"id": "x", "type": "tr', '"transform"'),
                                   ('{"nodes": [{"id": "x", "type": "http", "config": {"ur', '"url"'),
                                   ('{"nodes": [{"id": "x", "ty', '"type"')):
                page.locator(".cm-content").fill(text)
                expect(page.locator(".cm-content")).to_have_text(text)
                page.keyboard.press("Control+End")
                page.keyboard.press("Control+Space")
                expect(options.first, f"completions for {text!r}").to_be_visible()
                expect(page.locator(".cm-tooltip-autocomplete")).to_contain_text(expected)
                page.keyboard.press("Escape")
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "web-builder-sync-failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    assert problems == []


def test_the_pages_read_a_loops_jumps_as_the_engine_does(web: str) -> None:
    """The builder and the run page drew a loop's exits from one id alone; the engine follows a list
    of them too (``validation.loop_targets``), so a loop exiting to two nodes was drawn with none.
    The page's reading (``graph.js`` ``loopTargets``, ``LOOP_KEYS``) is held against the engine's."""
    from tests.web.browsing import chromium_page
    from workflows.definition.validation import LOOP_KEYS, loop_targets

    values = ["x", ["x", "y"], "", [], ["", 5, "y", "ghost"], None, 7, {"x": 1}, "ghost"]
    nodes = [{"id": i, "type": "transform", "config": {"expression": "1"}} for i in ("a", "x", "y")]
    loops = [{"id": f"l{k}", "type": "loop", "config": {"max_iterations": 2, **{key: values[(k + j) % len(values)]
                                                                               for j, key in enumerate(LOOP_KEYS)}}}
             for k in range(len(values))]
    definition = {"nodes": [*nodes, *loops], "edges": []}
    ids = {n["id"] for n in definition["nodes"]}
    engine = sorted([loop["id"], target, key] for loop in loops for key in LOOP_KEYS
                    for target in loop_targets(loop["config"][key]) if target in ids)

    with chromium_page("web-loop-jumps-failure.png") as (page, problems):
        page.goto(f"{web}/login/")
        drawn = page.evaluate("""async (definition) => {
            const { LOOP_KEYS, graphOf } = await import("/static/aob/graph.js");
            const keyOf = new Map(LOOP_KEYS.map(([key, label]) => [label, key]));
            return { keys: LOOP_KEYS.map(([key]) => key), edges: graphOf(definition).edges
                .filter((e) => e.kind === "implicit").map((e) => [e.from, e.to, keyOf.get(e.label)]) };
        }""", definition)

    assert drawn["keys"] == list(LOOP_KEYS)
    assert sorted(drawn["edges"]) == engine and ["l1", "y", "loop_back_to"] in engine  # a list is followed
    assert problems == []
