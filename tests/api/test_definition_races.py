"""Races and costs of workflow definitions the API did not bound: a start racing its tag's delete,
two deletes of one tag (each a 500 before, now the tag's 404), and a definition's CEL sources
compiled together within ``AOB_MAX_DEFINITION_CEL_BYTES``. Each failed on the code before (a
red-team helper's findings)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.api.factories import API, fetch_then_store, post_workflow
from tests.conftest import client_for
from tests.support.races import asked_while_held
from workflows.models import Run, Workflow


def test_a_start_racing_a_delete_of_its_workflow_is_not_a_500(transactional_db, user):
    """POST /workflows/{tag}/execute reads the tag, then inserts the run naming it. A delete of the
    tag committed in between (its transaction had already nulled the runs it knew of) leaves the
    new run's foreign key pointing at nothing: PostgreSQL refuses the insert (ForeignKeyViolation)
    and the API answers 500. It should answer the tag's 404 (or start the run with no tag, as the
    delete does to the runs it had)."""
    assert post_workflow(client_for(user), "doomed", fetch_then_store()).status_code == 201
    answers = _asked_behind_a_delete(user, "doomed", lambda client: client.post(
        f"{API}/workflows/doomed/execute", {"inputs": {}}, format="json"))
    assert not Workflow.objects.filter(tag="doomed").exists()
    assert answers, "the start never answered"
    response = answers[0]
    assert response.status_code in (201, 404, 409), (response.status_code, response.content[:500])
    assert response["Content-Type"].startswith("application/json")
    if response.status_code == 201:  # started: then as a run of no tag, as the delete leaves the others
        assert Run.objects.get(pk=response.json()["run_id"]).workflow_id is None


def _costly_expression(salt: int, size: int = 3900) -> str:
    """A valid CEL expression just under ``AOB_CEL_MAX_SOURCE_BYTES`` (4096), within the macro and
    nesting bounds, distinct per ``salt`` (so the per-process compile cache never answers it)."""
    parts = [f"[1, 2, 3].all(x, [4, 5].exists(y, x + y > {salt}))"]
    k = 0
    while len(" && ".join(parts)) < size:
        parts.append(f"(inputs.a{k}.b.c + {salt} * {k} > 3 || inputs.d{k}[\"k\"] == 'zz{salt}')")
        k += 1
    return " && ".join(parts)


def test_a_workflow_s_cel_expressions_share_one_compile_budget(api, settings):
    """Every CEL source is bounded alone (4 KiB, 8 macros, 2 deep), but not all of a definition's
    together: 245 distinct expressions of 3.9 KiB fit in one 1 MiB body and are each compiled twice
    by the Rust binding (plus the Python lexer's passes), about 5-6 s of one web thread per request
    on this machine (3.5 s of it inside ``cel.compile``), where 1,000 ordinary nodes take 0.1 s.
    ``POST /workflows/validate`` is counted by no limit (the editor's validate-as-you-type), so one
    user looping it keeps web processes busy for everyone; a save costs the same, 25 a minute.
    As the forms' evaluations share one budget (``AOB_FORM_EVAL_BUDGET``), a definition's
    expressions should share one: such a definition refused naming a ``cel.*`` rule, before it
    is compiled whole; an ordinary large workflow still valid."""
    heavy = {"nodes": [{"id": f"n{i}", "type": "transform", "config": {"expression": _costly_expression(i)}}
                       for i in range(245)], "edges": []}
    ordinary = {"nodes": [{"id": f"n{i}", "type": "transform",
                           "config": {"expression": f"nodes.n{max(i - 1, 0)}.value + {i}"}} for i in range(1000)],
                "edges": []}
    assert all(len(n["config"]["expression"].encode()) <= settings.AOB_CEL_MAX_SOURCE_BYTES for n in heavy["nodes"])

    validated = api.post(f"{API}/workflows/validate", {"workflow": heavy}, format="json")
    saved = post_workflow(api, "heavy", heavy)

    assert validated.status_code == 200, validated.content[:300]
    rules = {e["rule"] for e in validated.json()["errors"]}
    assert validated.json()["valid"] is False and any(r.startswith("cel.") for r in rules), (
        "245 expressions of 3.9 KiB, each compiled in the web request: nothing bounds their sum", rules)
    assert saved.status_code == 400, (saved.status_code, saved.content[:300])
    assert not Workflow.objects.filter(tag="heavy").exists()
    assert api.post(f"{API}/workflows/validate", {"workflow": ordinary}, format="json").json()["valid"] is True


def _asked_behind_a_delete(user: Any, tag: str, ask: Callable[[Any], Any]) -> list[Any]:
    """``ask``'s answer (as ``user``) to a request made while a delete of ``tag`` holds its lock,
    waiting on it until the delete commits; a 500 is an answer here, not the test's exception."""
    from workflows.services.definitions import workflow_delete

    def asking() -> Any:
        client = client_for(user)
        client.raise_request_exception = False
        return ask(client)

    return asked_while_held(lambda: workflow_delete(workflow=Workflow.objects.get(tag=tag)), asking)[1]


def test_a_delete_that_waited_on_another_delete_of_the_tag_is_a_404_not_a_500(transactional_db, user):
    """Two deletes of one tag at once (a double click, the CLI and a page): the second finds the tag
    (the first has not committed), then waits for its row lock in ``workflow_delete``; the first
    commits and the second's ``select_for_update().get(pk=...)`` raises ``Workflow.DoesNotExist``,
    which the API answers as a 500. It should be the tag's 404 (or a 204: it is gone either way)."""
    assert post_workflow(client_for(user), "twice", fetch_then_store()).status_code == 201
    answers = _asked_behind_a_delete(user, "twice", lambda client: client.delete(f"{API}/workflows/twice"))
    assert answers, "the second delete never answered"
    assert answers[0].status_code in (204, 404), (answers[0].status_code, answers[0].content[:300])
    assert answers[0].status_code == 204 or answers[0]["Content-Type"].startswith("application/json")


def test_a_start_of_a_tag_that_met_its_save_runs_the_version_the_save_left(transactional_db, user):
    """``POST /runs {"tag": …}`` and ``POST /workflows/{tag}/execute`` read the tag's current
    version, then met a save of the tag at the run's insert and started, after the save answered,
    the version it replaced (as a webhook's delivery did). The tag is held and read in the run's
    transaction (``workflow_version_for_start``): the start runs what the save left."""
    from workflows.services.definitions import workflow_save

    first = {"nodes": [{"id": "old", "type": "transform", "config": {"expression": "'old'"}}], "edges": []}
    for n, (path, body) in enumerate(((f"{API}/runs", {"tag": "fixed", "inputs": {}}),
                                      (f"{API}/workflows/fixed/execute", {"inputs": {}}))):
        workflow_save(owner=user, tag="fixed", definition=first)
        fixed = {"nodes": [{"id": "new", "type": "transform", "config": {"expression": f"'new {n}'"}}], "edges": []}
        _, answers = asked_while_held(lambda fixed=fixed: workflow_save(owner=user, tag="fixed", definition=fixed),
                                      lambda path=path, body=body: client_for(user).post(path, body, format="json"))
        assert answers and answers[0].status_code == 201, (answers[0].status_code, answers[0].content[:300])
        run = Run.objects.get(pk=answers[0].json()["run_id"])
        assert run.base_artifact_id == Workflow.objects.get(tag="fixed").current_version.artifact_id, path
