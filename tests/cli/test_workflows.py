"""workflow create / show / list / versions / validate / patch / delete, against the live API."""

from __future__ import annotations


def greet() -> dict:
    return {"nodes": [
        {"id": "a", "type": "transform", "config": {"expression": "{'greeting': 'hello ' + inputs.name}"}},
        {"id": "b", "type": "transform", "config": {"template": {"text": "${$nodes.a.greeting}!"}}},
    ], "edges": [{"from": "a", "to": "b"}]}


def test_workflow_lifecycle(as_alice, write_json):
    created = as_alice("-o", "json", "workflow", "create", "greet", write_json("greet.json", greet()), "-d", "first")
    assert created.code == 0, created.err
    saved = created.json()  # --output json: the API's answer as it is
    assert {k: saved[k] for k in ("tag", "version", "created", "nodes_count", "edges_count")} == {
        "tag": "greet", "version": 0, "created": True, "nodes_count": 2, "edges_count": 1}

    shown = as_alice("workflow", "show", "greet")
    assert shown.out.startswith(f"greet  version 0  {saved['artifact_id']}\n") and "inputs.name" in shown.out
    listed = as_alice("-o", "json", "workflow", "list").json()
    assert [(w["tag"], w["version"]) for w in listed["results"]] == [("greet", 0)]

    ops = write_json("ops.json", [{"op": "replace", "path": "/nodes/1/config/template/text",
                                   "value": "${$nodes.a.greeting}?"}])
    patched = as_alice("workflow", "patch", "greet", ops, "--description", "ask")
    assert patched.code == 0, patched.err
    assert patched.out.startswith("patched greet: version 1 (sha256:")
    versions = as_alice("-o", "json", "workflow", "versions", "greet").json()
    assert [(v["seq"], v["description"]) for v in versions] == [(0, "first"), (1, "ask")]
    assert as_alice("-o", "json", "workflow", "show", "greet", "--version", "0").json()["definition"] == greet()

    deleted = as_alice("workflow", "delete", "greet", "--yes")
    assert deleted.code == 0 and deleted.out.strip() == "deleted greet"
    gone = as_alice("run", "start", "greet")
    assert gone.code == 1 and gone.err.strip() == "error: workflow 'greet' not found"


def test_validate_and_create_report_the_apis_problems(as_alice, write_json):
    valid = as_alice("workflow", "validate", write_json("ok.json", greet()))
    assert valid.code == 0 and valid.out.strip().endswith("ok.json: valid")

    broken = greet()
    broken["edges"] = [{"from": "a", "to": "ghost"}]
    path = write_json("broken.json", broken)
    invalid = as_alice("workflow", "validate", path)
    assert invalid.code == 1
    assert invalid.err.splitlines()[0].endswith("broken.json: invalid")
    assert "  /edges/0/to: " in invalid.err and "(edge_node_exists)" in invalid.err
    report = as_alice("--output", "json", "workflow", "validate", path)
    assert report.code == 1 and report.json()["valid"] is False

    refused = as_alice("workflow", "create", "broken", path)
    assert refused.code == 1
    assert refused.err.startswith("error: workflow definition is invalid: /edges/0/to:")


def test_a_file_from_workflow_show_is_saved_only_over_the_version_it_was_shown_at(as_alice, write_json):
    assert as_alice("workflow", "create", "greet", write_json("greet.json", greet())).code == 0
    shown = as_alice("-o", "json", "workflow", "show", "greet").json()
    mine, theirs = dict(shown), greet()
    mine["definition"] = {**greet(), "metadata": {"name": "mine"}}
    theirs["metadata"] = {"name": "theirs"}
    assert as_alice("workflow", "create", "greet", write_json("theirs.json", theirs)).code == 0  # someone else

    refused = as_alice("workflow", "create", "greet", write_json("mine.json", mine))

    assert refused.code == 1
    assert refused.err.startswith("error: workflow 'greet' is at version 1; this edit was based on version 0")
    assert "hint: `aob workflow show greet`" in refused.err and "Traceback" not in refused.err
    assert as_alice("-o", "json", "workflow", "show", "greet").json()["definition"] == theirs
    forced = as_alice("workflow", "create", "greet", write_json("mine.json", mine), "--force")
    assert forced.code == 0 and forced.out.startswith("saved greet version 2"), forced.err

    older = as_alice("-o", "json", "workflow", "show", "greet", "--version", "0").json()  # its "seq" says which
    older["definition"] = {**greet(), "metadata": {"name": "from version 0"}}
    stale = as_alice("workflow", "create", "greet", write_json("older.json", older))
    assert stale.code == 1 and stale.err.startswith("error: workflow 'greet' is at version 2; this edit was "
                                                    "based on version 0"), stale.err


def test_create_and_patch_send_base_version(as_alice, write_json):
    assert as_alice("workflow", "create", "greet", write_json("greet.json", greet())).code == 0
    changed = {**greet(), "metadata": {"name": "v1"}}
    stale = as_alice("workflow", "create", "greet", write_json("v1.json", changed), "--base-version", "1")
    assert stale.code == 1 and "is at version 0" in stale.err
    ops = write_json("ops.json", [{"op": "add", "path": "/metadata", "value": {"name": "p"}}])
    assert as_alice("workflow", "patch", "greet", ops, "--base-version", "1").code == 1
    assert as_alice("workflow", "patch", "greet", ops, "--base-version", "0").code == 0
    assert as_alice("-o", "json", "workflow", "versions", "greet").json()[-1]["seq"] == 1


def test_delete_keeps_a_tag_its_schedule_starts_unless_forced(as_alice, write_json):
    assert as_alice("workflow", "create", "nightly", write_json("greet.json", greet())).code == 0
    assert as_alice("schedule", "add", "nightly", "0 3 * * *", "--name", "at three").code == 0

    refused = as_alice("workflow", "delete", "nightly", "--yes")
    assert refused.code == 1 and "is started by schedule" in refused.err and "(at three)" in refused.err, refused.err
    assert "`aob workflow delete TAG --force`" in refused.err and "Traceback" not in refused.err
    assert as_alice("workflow", "show", "nightly").code == 0

    forced = as_alice("workflow", "delete", "nightly", "--force", "--yes")
    assert forced.code == 0 and forced.out.strip() == "deleted nightly", forced.err
    assert as_alice("-o", "json", "schedule", "list").json() == []


def test_a_schedule_s_firings_are_listed_a_page_at_a_time_saying_how_many_more(as_alice, write_json):
    from datetime import UTC, datetime, timedelta

    from triggers.models import ScheduleFiring

    assert as_alice("workflow", "create", "nightly", write_json("greet.json", greet())).code == 0
    schedule_id = as_alice("-o", "json", "schedule", "add", "nightly", "0 3 * * *").json()["id"]
    first = datetime(2026, 1, 1, 3, 0, tzinfo=UTC)
    ScheduleFiring.objects.bulk_create([ScheduleFiring(schedule_id=schedule_id, fire_time=first + timedelta(days=d),
                                                       fired_at=first + timedelta(days=d), outcome="skipped")
                                        for d in range(3)])

    listed = as_alice("schedule", "firings", str(schedule_id), "--limit", "2").lines()
    assert [line.split()[0] for line in listed[1:3]] == ["2026-01-03", "2026-01-02"], listed
    assert listed[-1] == "(2 of 3; --offset 2 for more)"
    rest = as_alice("schedule", "firings", str(schedule_id), "--limit", "2", "--offset", "2").lines()
    assert len(rest) == 2 and rest[1].startswith("2026-01-01")


# 10,000 characters (the most a description may have) of 4 bytes: 40 KB a text, 30 of them past the
# 1 MiB an answer carries (AOB_DETAILS_MAX_BYTES)
LONG = "\U0001F600" * 10_000


def test_workflow_list_and_versions_say_where_to_read_a_text_too_long_to_list(as_alice, alice):
    """Past the answer's byte budget a list's text is a marker ({"truncated", "bytes", "href"}):
    ``workflow list`` sliced it as text and stopped with a TypeError (exit 1, "did not answer as
    the AOB API does"), ``workflow versions`` printed the dict."""
    from workflows.services.definitions import workflow_save

    for k in range(30):
        workflow_save(owner=alice, tag=f"wide-{k:02}", definition={
            "metadata": {"name": f"wf {k}", "description": LONG},
            "nodes": [{"id": "a", "type": "transform", "config": {"expression": "1"}}], "edges": []})
        workflow_save(owner=alice, tag="many", description=LONG, definition={
            "nodes": [{"id": "a", "type": "transform", "config": {"expression": str(k)}}], "edges": []})

    workflows = as_alice("workflow", "list")
    versions = as_alice("workflow", "versions", "many")

    assert workflows.code == 0, workflows.err[-2000:]
    rows = {line.split()[0]: line for line in workflows.lines()[1:]}
    assert LONG[:50] in rows["wide-00"]  # one that fit: its first 50 characters, as before
    assert rows["wide-29"].endswith("(too long to list: 40000 bytes, see /api/v1/workflows/wide-29?materialize=true)")
    assert versions.code == 0, versions.err[-2000:]
    rows = {line.split()[0]: line for line in versions.lines()[1:]}
    assert rows["0"].endswith(LONG)
    assert rows["29"].endswith("(too long to list: 40000 bytes, see /api/v1/workflows/many/versions/29)")
