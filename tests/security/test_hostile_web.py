"""Hostile requests to the web tier, on real workers: each is answered within a few seconds with a
4xx naming the path and the rule, a refused request stores nothing, and a canary run of another
user started at the same moment completes.

Cases: approval forms that would make the web process fetch a URL or a file, backtrack for ever
or evaluate exponentially (refused at save; and harmless at decision time when an older stored
definition holds them); JSON Patches of a few dozen ``copy`` operations (design time and run
patches); a literal http URL aimed at the metadata service; unknown query-parameter values.
(Rate limits: test_fair_limits.py; bodies announced in gigabytes: test_body_limit.py; /metrics:
test_operations.py.)
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from approvals.models import Approval, Decision
from tests.approvals.runs import decide, parked, refund_flow
from tests.conftest import client_for, wait_for_run
from workflows.models import Artifact, Run, RunPatch, Workflow, WorkflowVersion

API = "/api/v1"
PROMPT_S = 5.0  # "within a few seconds", with room for a loaded 2-core machine
CANARY = {"nodes": [{"id": "a", "type": "transform", "config": {"expression": "{'alive': true}"}},
                    {"id": "b", "type": "transform", "config": {"expression": "{'still': nodes.a.alive}"}}],
          "edges": [{"from": "a", "to": "b"}]}
EVIL_PATTERN = "^(a+)+$"  # exponential for a backtracking engine on "aaa…a!"; linear in RE2
EVIL_SUBJECT = "a" * 64 + "!"


def stored(owner: Any) -> dict[str, Any]:
    """What a request of ``owner`` could have stored (the canary, already run once, adds no artifact)."""
    return {"workflows": Workflow.objects.filter(owner=owner).count(),
            "versions": WorkflowVersion.objects.filter(workflow__owner=owner).count(),
            "runs": Run.objects.filter(owner=owner).count(), "patches": RunPatch.objects.filter(run__owner=owner).count(),
            "decisions": Decision.objects.filter(approval__run__owner=owner).count(),
            "artifacts": Artifact.objects.count()}


@contextmanager
def canary_alongside(owner: Any) -> Iterator[None]:
    """Start another user's run, let the hostile request happen, then see the run complete."""
    started = client_for(owner).post(f"{API}/runs", {"workflow": CANARY}, format="json")
    assert started.status_code == 201, started.json()
    yield
    run = wait_for_run(started.json()["run_id"], timeout=30)
    assert run.status == "completed", run.error


def promptly(call: Callable[[], Any]) -> Any:
    started = time.monotonic()
    response = call()
    elapsed = time.monotonic() - started
    assert elapsed < PROMPT_S, f"answered after {elapsed:.1f}s"
    return response


def refused_workflow(response: Any, path: str, rule: str, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.content[:500]
    body = response.json()
    assert body["error"] == "invalid_workflow", body
    first = body["details"]["errors"][0]
    assert (first["path"], first["rule"]) == (path, rule), body
    return first


def hitl_workflow(form: dict[str, Any]) -> dict[str, Any]:
    return refund_flow({"form": form})


@pytest.fixture
def bob(make_user: Any) -> Any:
    return make_user("bob")


@pytest.fixture
def canary_owner(engine: Any, make_user: Any) -> Any:
    """Another tenant, whose canary has run once already (its artifacts exist, by content)."""
    owner = make_user("canary")
    with canary_alongside(owner):
        pass
    return owner


# --- approval forms --------------------------------------------------------------------------------

FORM_PATH = "/nodes/1/config/form"
SAVE_REFUSALS = {
    "remote $ref": ({"type": "object", "properties": {"x": {"$ref": "{remote}/schema.json"}}},
                    "/properties/x/$ref", "form.remote_ref"),
    "file $ref": ({"$ref": "file:///etc/passwd"}, "/$ref", "form.remote_ref"),
    "$id rebasing local refs": ({"$id": "{remote}/base/", "$ref": "#/$defs/x", "$defs": {"x": True}}, "/$id",
                                "form.keyword"),
    "$dynamicRef": ({"$dynamicRef": "{remote}/dyn#meta"}, "/$dynamicRef", "form.keyword"),
    "backreference": ({"type": "string", "pattern": "^(a|b)\\1$"}, "/pattern", "form.pattern"),
    "lookahead in patternProperties": ({"patternProperties": {"^(?=a)": True}}, "/patternProperties",
                                       "form.pattern"),
    "self reference": ({"$ref": "#"}, "", "form.budget"),
    "exponential references": ({"$defs": {**{f"d{i}": {"allOf": [{"$ref": f"#/$defs/d{i + 1}"}] * 2}
                                             for i in range(40)}, "d40": True}, "$ref": "#/$defs/d0"}, "",
                               "form.budget"),
    "dangling reference": ({"$ref": "#/$defs/missing"}, "/$ref", "form.ref_unresolved"),
    # the library finds what was evaluated by an unmetered walk of its own, and with Python's re
    "unevaluatedProperties beside patternProperties": ({"patternProperties": {"^a": True},
                                                        "unevaluatedProperties": False},
                                                       "/unevaluatedProperties", "form.keyword"),
    # read by the library percent-decoded: it named no schema there, and the save was a 500
    "a reference the library reads otherwise": ({"$defs": {"a%25": {"type": "string"}}, "$ref": "#/$defs/a%25"},
                                                "/$ref", "form.ref_unresolved"),
    # a value the meta-schema never judged, made a schema by a reference into it
    "a reference into a default": ({"type": "object", "$ref": "#/default", "default": {"minLength": 1}},
                                   "/$ref", "form.ref_unresolved"),
    # an index Python will not convert (past 4,300 digits, or a superscript "digit"): a 500 before
    "reference through a huge index": ({"allOf": [True], "$ref": "#/allOf/" + "9" * 5000}, "/$ref",
                                       "form.ref_unresolved"),
    "reference through a superscript index": ({"allOf": [True], "$ref": "#/allOf/\u00b2"}, "/$ref",
                                              "form.ref_unresolved"),
}


def gates_with_form(form: dict[str, Any], n: int) -> dict[str, Any]:
    return {"nodes": [{"id": f"gate{i}", "type": "hitl", "config": {"message": "Go?", "form": form}}
                      for i in range(n)], "edges": []}


def test_a_workflow_s_forms_share_one_evaluation_budget_at_save(api: Any, settings: Any) -> None:
    """Each form had a budget of its own: 900 forms that each used most of theirs took 71 s to save."""
    heavy = {"$defs": {**{f"d{i}": {"allOf": [{"$ref": f"#/$defs/d{i + 1}"}] * 2} for i in range(9)},
                       "d9": {"type": "object"}}, "$ref": "#/$defs/d0"}  # about 2,000 steps on {}
    plain = {"type": "object", "properties": {"reason": {"type": "string", "maxLength": 200}}}

    alone = api.post(f"{API}/workflows/validate", {"workflow": gates_with_form(heavy, 1)}, format="json")
    # a node whose config has a pattern of its own beside them: the forms' spent budget made it a 500
    spent = gates_with_form(heavy, 30)
    spent["nodes"].append({"id": "child", "type": "workflow", "config": {"tag": "other"}})
    many = api.post(f"{API}/workflows/validate", {"workflow": spent}, format="json")
    ordinary = api.post(f"{API}/workflows/validate", {"workflow": gates_with_form(plain, 200)}, format="json")

    assert alone.status_code == 200 and alone.json()["valid"] is True, alone.json()
    assert many.status_code == 200 and many.json()["valid"] is False
    refused = [e for e in many.json()["errors"] if e["rule"] == "form.budget"]
    assert refused and refused[-1]["path"] == "/nodes/29/config/form"
    assert f"within {settings.AOB_FORM_EVAL_BUDGET} steps, shared by the workflow's forms" in refused[0]["message"]
    assert ordinary.json()["valid"] is True, ordinary.json()  # ordinary forms are far from it


def gate_with_patterns(patterns: list[str]) -> dict[str, Any]:
    form = {"type": "object", "properties": {f"f{k}": {"type": "string", "pattern": p} for k, p in enumerate(patterns)}}
    return {"nodes": [{"id": "gate", "type": "hitl", "config": {"form": form}}], "edges": []}


NAME = r"^[\p{L} .'-]{1,100}$"  # an RE2 program of 120,001 instructions


def test_a_form_s_ordinary_name_pattern_is_valid_at_save_and_at_its_decision(api: Any) -> None:
    """Compiled within CEL's 1 MiB, ``^[\\p{L} .'-]{1,100}$`` was refused ``form.pattern`` at save
    and at every decision of a form stored before, which RE2's default 8 MiB had accepted. A form's
    patterns compile within ``FORM_REGEX_MAX_MEM``; with an e-mail and a phone pattern and another
    name's beside it, the form stays within the default budget."""
    from workflows.definition import forms

    properties = {"first": NAME, "last": r"^[\p{L}\p{M} .'-]{1,60}$", "email": r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
                  "work": r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$", "phone": r"^\+?[0-9 ()-]{7,20}$"}
    form = {"type": "object", "properties": {k: {"type": "string", "pattern": p} for k, p in properties.items()}}
    workflow = {"nodes": [{"id": "gate", "type": "hitl", "config": {"form": form}}], "edges": []}

    saved = api.post(f"{API}/workflows/validate", {"workflow": workflow}, format="json")
    answer = {"first": "José O'Neil", "last": "Müller", "email": "a@b.example", "work": "a@b.example",
              "phone": "+1 (555) 123-4567"}

    assert saved.status_code == 200 and saved.json()["valid"] is True, saved.json()
    assert forms.form_data_failure(form, answer) is None
    refused = forms.form_data_failure(form, {**answer, "first": "R2-D2"})
    assert refused is not None and (refused.path, refused.rule) == ("/first", "form.pattern"), refused


def test_a_decision_searches_one_string_with_one_pattern_once(monkeypatch: Any) -> None:
    """A ``pattern`` step is charged as a DFA reads its string (``forms._COSTS``), and RE2 may read
    a large program's by its NFA: ``\\p{L}{1,100}x`` (119,704 instructions) over 20,000 CJK
    characters took 0.25 s, and one ``$ref`` to it 40 times in an ``allOf`` searched the string 40
    times, a decision of 9.8 s within the default budget. Each pattern searches a string once."""
    import re2

    from workflows.definition import forms

    text = "".join(chr(0x4E00 + i % 2000) for i in range(20000))
    searched: list[int] = []
    search = re2._Regexp.search

    def counted(self: Any, string: Any, *args: Any, **kwargs: Any) -> Any:  # RE2's, not ours
        searched.append(len(string))
        return search(self, string, *args, **kwargs)

    monkeypatch.setattr(re2._Regexp, "search", counted)
    form = {"type": "object", "properties": {"v": {"allOf": [{"$ref": "#/$defs/n"}] * 40}},
            "$defs": {"n": {"type": "string", "pattern": r"\p{L}{1,100}x"}}}

    problem = forms.form_data_failure(form, {"v": text})

    assert problem is not None and (problem.path, problem.rule) == ("/v", "form.pattern"), problem
    assert searched == [len(text)], len(searched)


def test_a_form_s_costly_patterns_are_refused_within_re2_s_default_memory(api: Any) -> None:
    """A form's patterns were compiled with RE2's default 8 MiB, 512 kept, and nothing weighed a
    compile: ``\\p{L}{300}1`` (11 bytes) took 0.35 s and kept 5 MB, one validation of 100 such 16 s
    and 344 MB. Each is weighed (``expressions.regex``): that one's program more than the whole
    budget, a program past 8 MiB is refused naming the pattern, and many costly ones by the budget."""
    one = api.post(f"{API}/workflows/validate", {"workflow": gate_with_patterns([r"\p{L}{1000}1"])}, format="json")
    costly = [r"\p{L}{300}" + str(k) for k in range(100)]
    many = api.post(f"{API}/workflows/validate", {"workflow": gate_with_patterns(costly)}, format="json")
    ordinary = [r"^[A-Z]{2}-\d{4}$" + "x" * k for k in range(24)]
    fine = api.post(f"{API}/workflows/validate", {"workflow": gate_with_patterns(ordinary)}, format="json")

    assert one.status_code == 200 and one.json()["valid"] is False, one.json()
    [error] = one.json()["errors"]
    assert (error["path"], error["rule"]) == ("/nodes/0/config/form/properties/f0/pattern", "form.pattern")
    assert "would need more than 8192 KiB" in error["message"]
    assert many.status_code == 200 and many.json()["valid"] is False
    [refused] = many.json()["errors"]
    assert refused["rule"] == "form.budget" and "an RE2 program of 3588" in refused["message"], refused
    assert fine.json()["valid"] is True, fine.json()


def test_compiled_patterns_kept_are_bounded_by_the_memory_re2_may_give_them() -> None:
    """A form's program may take 8 MiB: 64 of them kept would be 512 MiB (and ``re2.compile``'s own
    128, 1 GiB). Kept ones are weighed at the ``max_mem`` they were compiled under."""
    from workflows.definition import expressions, forms

    for k in range(12):
        forms.compile_pattern(f"^[a-z]{{1,8}}-{uuid.uuid4().hex}-{k}$")
    forms.compile_pattern(NAME)

    kept = [key for key in expressions._regexes if key[0] == expressions.FORM_REGEX_MAX_MEM]
    assert len(kept) == expressions.REGEX_CACHE_BYTES // expressions.FORM_REGEX_MAX_MEM
    assert expressions._regexes_held <= expressions.REGEX_CACHE_BYTES
    assert list(expressions._regexes)[-1] == (expressions.FORM_REGEX_MAX_MEM, NAME)  # the last one kept


def test_stored_forms_the_current_rules_refuse_are_listed(api: Any, settings: Any) -> None:
    """A stored form is not judged again at save: after an upgrade that weighs its patterns, one
    that no longer fits ``AOB_FORM_EVAL_BUDGET`` fails its node's runs and decisions. The operator
    lists them (``manage.py aob_check_forms``), each as its node's run judges it."""
    import io

    from django.core.management import call_command

    heavy, light = r"\p{L}{50}" + uuid.uuid4().hex[:8], r"^[A-Z]{2}-\d{4}$"
    for tag, pattern in (("heavy", heavy), ("light", light)):
        saved = api.post(f"{API}/workflows", {"tag_name": tag, "workflow": gate_with_patterns([pattern])}, format="json")
        assert saved.status_code == 201, saved.json()
    settings.AOB_FORM_EVAL_BUDGET = 3_200  # as a stricter rule would: \p{L}{50} weighs ~9,000 steps
    out = io.StringIO()

    call_command("aob_check_forms", stdout=out)

    lines = out.getvalue().splitlines()
    assert [line for line in lines if line.startswith("workflow ")] == [
        line for line in lines if "/heavy@" in line and " node gate: form.budget at /config/form: " in line], lines
    assert len(lines) == 2 and lines[-1] == "1 form(s) refused", lines


def test_a_version_a_workflow_node_or_a_schedule_pins_is_listed_when_its_form_is_refused(
        api: Any, user: Any, settings: Any) -> None:
    """``aob_check_forms`` read each tag's current version only: a version a parent's ``workflow``
    node pins (``version: 0``), which every run of the parent starts, or a schedule pins, was never
    judged, and after the deploy every such run failed at its child's gate."""
    import io

    from django.core.management import call_command

    from triggers.models import Schedule
    from workflows.services.definitions import workflow_save

    heavy, light = r"\p{L}{50}" + uuid.uuid4().hex[:8], r"^[A-Z]{2}-\d{4}$"
    child, timed = f"child-{uuid.uuid4().hex[:8]}", f"timed-{uuid.uuid4().hex[:8]}"
    pinned = {tag: workflow_save(owner=user, tag=tag, definition=gate_with_patterns([heavy + tag])).version.seq
              for tag in (child, timed)}  # the heavy form, then a current version that is fine
    for tag in (child, timed):
        workflow_save(owner=user, tag=tag, definition=gate_with_patterns([light]))
    workflow_save(owner=user, tag=f"parent-{uuid.uuid4().hex[:8]}", definition={
        "nodes": [{"id": "sub", "type": "workflow", "config": {"tag": child, "version": pinned[child]}}], "edges": []})
    Schedule.objects.create(owner=user, workflow=Workflow.objects.get(owner=user, tag=timed), cron="0 0 1 1 *",
                            version=pinned[timed], enabled=False)
    settings.AOB_FORM_EVAL_BUDGET = 3_200  # as a stricter rule would: \p{L}{50} weighs ~9,000 steps
    out = io.StringIO()

    call_command("aob_check_forms", stdout=out)

    lines = out.getvalue().splitlines()
    for tag in (child, timed):
        assert [line for line in lines if f"/{tag}@" in line] == [
            line for line in lines if f"/{tag}@{pinned[tag]} node gate: form.budget at /config/form: " in line], lines
        assert any(f"/{tag}@" in line for line in lines), lines
    assert lines[-1] == "2 form(s) refused", lines


def test_a_form_s_pattern_is_not_compiled_past_what_its_budget_has_left(api: Any, settings: Any) -> None:
    """Compiling a pattern is weighed before it starts (``COMPILE_NS``, at ``forms.STEP_NS`` a step),
    at save as at decision time: a budget that could not cover it refuses it uncompiled."""
    from workflows.definition import expressions

    pattern = f"^{uuid.uuid4().hex}$"  # compiled by no one before
    settings.AOB_FORM_EVAL_BUDGET = 2_000

    response = api.post(f"{API}/workflows/validate", {"workflow": gate_with_patterns([pattern])}, format="json")

    [error] = response.json()["errors"]
    assert (error["path"], error["rule"]) == ("/nodes/0/config/form", "form.budget"), error
    assert "compiling the pattern" in error["message"] and "2000 steps" in error["message"]
    assert (expressions.FORM_REGEX_MAX_MEM, pattern) not in expressions._regexes


def test_a_form_s_patterns_weigh_the_same_whether_this_process_compiled_them_before_or_not(api: Any,
                                                                                           settings: Any) -> None:
    """A pattern's compile was charged its measured time, and only when it missed the process's
    cache (64 patterns, shared with every user's CEL ``matches``): the same definition was refused
    on its first save and valid on its second. Each use weighs its bytes and its RE2 program
    (``expressions.regex``): ``\\p{L}{50}`` (59,804 instructions) and 8 letters past 3,200 steps both times."""
    pattern = r"\p{L}{50}" + uuid.uuid4().hex[:8]  # compiled by no one before; admitted (3,192 steps)
    settings.AOB_FORM_EVAL_BUDGET = 3_200
    workflow = gate_with_patterns([pattern])

    first = api.post(f"{API}/workflows/validate", {"workflow": workflow}, format="json").json()
    second = api.post(f"{API}/workflows/validate", {"workflow": workflow}, format="json").json()

    assert first == second, (first, second)
    assert first["valid"] is False and first["errors"][0]["rule"] == "form.budget", first
    assert "59812 instructions" in first["errors"][0]["message"], first


def test_the_budget_that_saves_a_form_decides_it_after_its_patterns_left_the_cache(settings: Any) -> None:
    """Saved while its patterns were in the cache (charged nothing), decided after other users'
    patterns evicted them or in another process (charged the compile): valid at save, ``form.budget``
    at the decision. Its patterns weigh the same at both."""
    from workflows.definition import forms

    pattern = r"\p{L}{50}" + uuid.uuid4().hex[:8]
    form = gate_with_patterns([pattern])["nodes"][0]["config"]["form"]
    forms.compile_pattern(pattern)  # e.g. an earlier save attempt, or a CEL matches of the same text
    low, high = 1, 50_000  # the smallest budget that saves it
    while low < high:
        settings.AOB_FORM_EVAL_BUDGET = (low + high) // 2
        if forms.form_problems(form):
            low = settings.AOB_FORM_EVAL_BUDGET + 1
        else:
            high = settings.AOB_FORM_EVAL_BUDGET
    for k in range(200):  # other forms' patterns compiled in this process since (past its 64 and re2's 128)
        forms.compile_pattern(f"^other-{uuid.uuid4().hex}-{k}$")
    settings.AOB_FORM_EVAL_BUDGET = high + 100  # and room for the answer's own few steps

    problem = forms.form_data_failure(form, {"f0": "x"})

    assert problem is not None and problem.rule == "form.pattern", problem  # evaluated: "x" does not match


def with_remote(value: Any, base: str) -> Any:
    if isinstance(value, dict):
        return {k: with_remote(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [with_remote(v, base) for v in value]
    return value.replace("{remote}", base) if isinstance(value, str) else value


@pytest.mark.parametrize("case", list(SAVE_REFUSALS))
def test_a_dangerous_form_is_refused_at_save_and_nothing_is_fetched(engine, api, user, remote, canary_owner,
                                                                      case):
    form, path, rule = SAVE_REFUSALS[case]
    definition = hitl_workflow(with_remote(form, remote.base))
    before = stored(user)
    with canary_alongside(canary_owner):
        saved = promptly(lambda: api.post(f"{API}/workflows", {"tag_name": "refund", "workflow": definition},
                                          format="json"))
        started = promptly(lambda: api.post(f"{API}/runs", {"workflow": definition}, format="json"))
    for response in (saved, started):
        problem = refused_workflow(response, FORM_PATH + path, rule)
        assert problem["message"].startswith("hitl config: form: ")
    assert stored(user) == before
    assert remote.requests == []  # the schema library fetched nothing


def test_a_pattern_is_run_by_a_linear_time_engine(engine, user, bob, canary_owner):
    form = {"type": "object", "required": ["code"], "properties": {"code": {"type": "string", "pattern": EVIL_PATTERN}}}
    run_id, approval = parked(user, {"form": form, "approvers": ["bob"]})
    with canary_alongside(canary_owner):
        response = promptly(lambda: decide(bob, approval, data={"code": EVIL_SUBJECT}))
    assert response.status_code == 400
    assert response.json()["details"] == {"field": "data", "path": "/data/code", "rule": "form.pattern"}
    assert promptly(lambda: decide(bob, approval, data={"code": "aaaa"})).status_code == 200
    assert wait_for_run(run_id).status == "completed"


def _deep(levels: int) -> dict[str, Any]:
    node: dict[str, Any] = {}
    for _ in range(levels):
        node = {"a": node}
    return node


DEEP = _deep(400)
CHAIN = {"$defs": {**{f"d{i}": {"dependentSchemas": {"a": {"$ref": f"#/$defs/d{i + 1}"}, "b": {"$ref": f"#/$defs/d{i + 1}"}}}
                      for i in range(18)}, "d18": True},
         "$ref": "#/$defs/d0", "unevaluatedProperties": False}
OLD_FORMS = {  # what an older stored definition may hold, written past today's save check
    "backtracking pattern": ({"properties": {"code": {"pattern": EVIL_PATTERN}}}, {"code": EVIL_SUBJECT},
                             "/data/code", "form.pattern"),
    "backreference": ({"properties": {"code": {"pattern": "^(a+)+\\1$"}}}, {"code": EVIL_SUBJECT}, "/data",
                      "form.pattern"),
    "remote $ref": ({"properties": {"code": {"$ref": "{remote}/schema.json"}}}, {"code": "x"}, "/data",
                    "form.remote_ref"),
    "file $ref": ({"$ref": "file:///etc/passwd"}, {}, "/data", "form.remote_ref"),
    "exponential references": (SAVE_REFUSALS["exponential references"][0], {}, "/data", "form.budget"),
    "self reference": ({"$ref": "#"}, {}, "/data", "form.budget"),
    # each passes today's save check; one keyword's step walked its whole value (a red team's finds:
    # 34 s of a web thread for a 2 KB decision, 700 MB for a 90-byte one, and a minute of Python's re)
    # one lookup in a set per item, not 30,000 comparisons: the one item outside it is named
    "an enum compared with every item": ({"type": "array", "items": {"enum": [0] * 30_000 + [1]}}, [1] * 999 + [2],
                                         "/data/999", "form.enum"),
    "every missing name of every item": ({"type": "array", "items": {"required": [f"n{i}" for i in range(8000)]}},
                                         [{}] * 30, "/data", "form.budget"),
    "a deep pointer per item": ({"$defs": {"x": DEEP}, "type": "array", "items": {"$ref": "#/$defs/x" + "/a" * 400}},
                                [0] * 20_000, "/data", "form.budget"),
    "patterns tried by additionalProperties": ({"type": "object", "patternProperties": {EVIL_PATTERN: {}},
                                                "additionalProperties": False}, {EVIL_SUBJECT: 1}, "/data",
                                               "form.additionalProperties"),
    "unevaluatedProperties beside patternProperties": ({"patternProperties": {EVIL_PATTERN: {}},
                                                        "unevaluatedProperties": False}, {EVIL_SUBJECT: 1}, "/data",
                                                       "form.keyword"),
    "an enum that is not a list": ({"properties": {"code": {"enum": 3}}}, {"code": 3}, "/data", "form.keyword"),
    # the library's own walk for unevaluatedProperties, through dependentSchemas: 18 levels of two, 12 s
    "unevaluatedProperties over a chain of dependentSchemas": (CHAIN, {"a": 1, "b": 2}, "/data", "form.budget"),
    # 4,000 patterns, each compiled again on every item past the compiler's cache: 0.16 s an item
    "thousands of patterns per item": ({"type": "array", "items": {
        "type": "object", "patternProperties": {f"^p{i}x": {} for i in range(4000)}, "additionalProperties": False}},
        [{}] * 100, "/data", "form.budget"),
}


def test_a_false_subschema_names_the_field_it_refuses(engine, user, bob):
    """The library reports a ``false`` subschema's error with no rule (``form.None``) at the path of
    the object above it, and charged it again at every level: 100 line items went past the budget."""
    form = {"type": "object", "properties": {"lines": {"type": "array", "items": {
        "type": "object", "properties": {"sku": {"type": "string"}, "legacy": False}}}}}
    run_id, approval = parked(user, {"form": form, "approvers": ["bob"]})
    lines = [{"sku": f"S{i}", "legacy": 1} for i in range(100)]

    assert decide(bob, approval, data={"lines": lines}).json()["details"] == {
        "field": "data", "path": "/data/lines/0/legacy", "rule": "form.false"}
    assert decide(bob, approval, data={"lines": [{"sku": "S1"}]}).status_code == 200
    assert wait_for_run(run_id).status == "completed"


def test_an_ordinary_large_form_is_decided_within_the_default_budget(engine, user, bob):
    """400 line items of an ordinary order form (a 250-country list among them) need about 10,000
    steps: the budget bounds hostile forms, never this one."""
    line = {"type": "object", "required": ["sku", "qty", "country"], "additionalProperties": False,
            "properties": {"sku": {"type": "string", "maxLength": 40}, "qty": {"type": "integer", "minimum": 1},
                           "country": {"enum": [f"C{i:03d}" for i in range(250)]},
                           "note": {"type": "string", "maxLength": 200}}}
    form = {"type": "object", "required": ["lines"], "properties": {"lines": {"type": "array", "items": line}}}
    run_id, approval = parked(user, {"form": form, "approvers": ["bob"]})
    lines = [{"sku": f"S{i}", "qty": 2, "country": "C100", "note": "ok"} for i in range(400)]

    assert decide(bob, approval, data={"lines": [*lines[:-1], {**lines[-1], "country": "XX"}]}).json()[
        "details"] == {"field": "data", "path": "/data/lines/399/country", "rule": "form.enum"}
    assert promptly(lambda: decide(bob, approval, data={"lines": lines})).status_code == 200
    assert wait_for_run(run_id).status == "completed"


@pytest.mark.parametrize("case", list(OLD_FORMS))
def test_an_old_stored_form_cannot_freeze_or_fetch_at_decision(engine, user, bob, remote, canary_owner, case):
    form, data, path, rule = OLD_FORMS[case]
    run_id, approval = parked(user, {"approvers": ["bob"]})
    Approval.objects.filter(pk=approval.pk).update(form=with_remote(form, remote.base))
    with canary_alongside(canary_owner):
        response = promptly(lambda: decide(bob, approval, data=data))
    assert response.status_code == 400, response.json()
    assert response.json()["error"] == "invalid_form_data"
    assert (response.json()["details"]["path"], response.json()["details"]["rule"]) == (path, rule)
    assert not Decision.objects.filter(approval=approval).exists()
    assert remote.requests == []
    assert decide(bob, approval, approve=False).status_code == 200  # a person can still reject it
    assert wait_for_run(run_id).status == "completed"  # by the reject edge


# --- documents that grow ---------------------------------------------------------------------------

def doubling(count: int = 40) -> list[dict[str, Any]]:
    ops = [{"op": "add", "path": "/metadata/blob", "value": {"x": ["a" * 16]}}]
    for i in range(count):  # each copy holds everything so far: 2^count times the first value
        ops.append({"op": "copy", "from": "/metadata/blob", "path": f"/metadata/blob/c{i}"})
    return ops


def test_a_config_wrong_in_every_element_is_judged_by_its_first_problems(engine, api, user, canary_owner):
    """Each node's config errors were all built, though a report keeps 100: a loop's ``break_path``
    of 450,000 numbers in a 0.9 MB body held a web thread 8 s (a red team's find)."""
    from workflows.definition.validation import MAX_PROBLEMS

    definition = {"nodes": [{"id": "h", "type": "loop", "config": {"max_iterations": 1, "loop_back_to": "h",
                                                                   "break_path": [1] * 450_000}}], "edges": []}
    body = json.dumps({"workflow": definition}, separators=(",", ":"))
    with canary_alongside(canary_owner):
        response = promptly(lambda: api.post(f"{API}/workflows/validate", body, content_type="application/json"))
    report = response.json()
    assert response.status_code == 200 and report["valid"] is False, report
    assert len(report["errors"]) == MAX_PROBLEMS + 1 and report["errors"][-1]["rule"] == "max_problems"
    assert report["errors"][0]["path"].startswith("/nodes/0/config/break_path")


def test_an_exponential_design_time_patch_is_refused_fast(engine, api, user, canary_owner):
    assert api.post(f"{API}/workflows", {"tag_name": "grow", "workflow": {**CANARY, "metadata": {}}},
                    format="json").status_code == 201
    before = stored(user)
    with canary_alongside(canary_owner):
        response = promptly(lambda: api.patch(f"{API}/workflows/grow/patch", {"operations": doubling()},
                                              format="json"))
    assert response.status_code == 413, response.content[:300]
    body = response.json()
    assert body["error"] == "document_too_large"
    assert body["details"]["rule"] == "max_bytes" and body["details"]["path"].startswith("/operations/")
    assert stored(user) == before


def test_an_exponential_run_patch_is_refused_fast(engine, api, user, canary_owner):
    _, approval = parked(user, {})
    run = Run.objects.get(pk=approval.run_id)
    before = stored(user)
    operations = [{"op": "add", "path": "/metadata", "value": {}}, *doubling()]
    with canary_alongside(canary_owner):
        response = promptly(lambda: api.post(f"{API}/runs/{run.pk}/patches", {"operations": operations},
                                             format="json"))
    assert response.status_code == 413, response.content[:300]
    assert response.json()["details"]["rule"] == "max_bytes"
    assert stored(user) == before
    assert Run.objects.get(pk=run.pk).current_artifact_id == run.current_artifact_id


def deepening(copies: int = 12) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = [{"op": "add", "path": "/metadata/x", "value": {"a": {}}}]
    depth = 1
    for _ in range(copies):  # the chain copied into its own leaf: twice as deep each time
        ops.append({"op": "copy", "from": "/metadata/x", "path": "/metadata/x" + "/a" * depth + "/a"})
        depth = 2 * depth + 1
    return ops


def stacking(adds: int = 20, each: int = 55) -> list[dict[str, Any]]:
    """No copy: each ``add`` puts a 55-deep chain (within a body's 64) at the last one's leaf."""
    chain: Any = {}
    for _ in range(each - 1):
        chain = {"a": chain}
    ops, at = [{"op": "add", "path": "/metadata/x", "value": chain}], "/metadata/x"
    for _ in range(adds):
        at += "/a" * (each - 1) + "/b"
        ops.append({"op": "add", "path": at, "value": chain})
    return ops


@pytest.mark.parametrize(("operations", "refused"),
                         [(deepening(), 5), ([*stacking(), {"op": "remove", "path": "/metadata/x"}], 1),
                          ([*stacking(), {"op": "test", "path": "/metadata/x", "value": 1}], 1)],
                         ids=["copies", "adds then remove", "adds then test"])
def test_a_patch_nesting_the_document_past_its_depth_is_refused_at_the_operation(engine, api, user, operations,
                                                                                   refused):
    """A dozen ``copy`` operations (17 KB), each of a chain into its own leaf, nested the document
    8,000 deep before ``validate`` judged it; copying or measuring it then recursed past Python's
    limit: a 500, at design time, on a person's run patch and an agent's (a red team's find). The
    operation that would pass ``AOB_MAX_JSON_DEPTH`` is refused, naming itself and the rule."""
    assert api.post(f"{API}/workflows", {"tag_name": "deep", "workflow": {**CANARY, "metadata": {}}},
                    format="json").status_code == 201
    design = api.patch(f"{API}/workflows/deep/patch", {"operations": operations}, format="json")
    _, approval = parked(user, {})
    run = api.post(f"{API}/runs/{approval.run_id}/patches",
                   {"operations": [{"op": "add", "path": "/metadata", "value": {}}, *operations]}, format="json")

    for response, op in ((design, refused), (run, refused + 1)):  # the run's patch adds /metadata first
        assert response.status_code == 400, response.content[:300]
        details = response.json()["details"]
        assert details["rule"] == "max_depth" and details["op"] == op and details["limit"] == 64, details
    assert design.json()["details"]["path"] == f"/operations/{refused}"


def test_moves_of_a_large_value_walk_it_only_when_deeper_and_count_what_they_walk(engine, api, user):
    """The depth check walked the whole value of every ``move``, which moves were not charged for: 40
    moves of 600 KB back and forth held the web process 20 s, a run's row as long on a run patch (a
    review's find). A move no deeper than it was walks nothing; one deeper is charged as a copy is
    (its bytes against ``AOB_MAX_DEFINITION_BYTES``), so moving it down and up again is refused."""
    # 150 KB of a template, 50,000 containers: its 20 moves down copy 3 MB, its 40 level ones would 6 MB,
    # each past the 1 MiB limit several times over
    big = [[] for _ in range(50_000)]
    definition = {"nodes": [{"id": "t", "type": "transform", "config": {"template": big}}], "edges": []}
    assert api.post(f"{API}/workflows", {"tag_name": "wide", "workflow": definition}, format="json").status_code == 201
    level = [{"op": "move", "from": "/nodes/0/config/template", "path": "/nodes/0/config/t2"},
             {"op": "move", "from": "/nodes/0/config/t2", "path": "/nodes/0/config/template"}] * 20
    down_and_up = [{"op": "add", "path": "/nodes/0/config/deep", "value": {}},
                   *[{"op": "move", "from": "/nodes/0/config/template", "path": "/nodes/0/config/deep/t"},
                     {"op": "move", "from": "/nodes/0/config/deep/t", "path": "/nodes/0/config/template"}] * 20]

    assert api.patch(f"{API}/workflows/wide/patch", {"operations": level}, format="json").status_code == 200
    refused = api.patch(f"{API}/workflows/wide/patch", {"operations": down_and_up}, format="json")

    assert refused.status_code == 413, refused.content[:300]
    details = refused.json()["details"]
    assert details["rule"] == "max_bytes" and details["copied"] > details["limit"], details


# --- literal URLs and query parameters -------------------------------------------------------------

def test_a_metadata_address_is_refused_at_save_with_the_ssrf_reason(engine, api, user, canary_owner):
    metadata = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
    definition = {"nodes": [{"id": "steal", "type": "http", "config": {"url": metadata}}], "edges": []}
    before = stored(user)
    with canary_alongside(canary_owner):
        answers = [promptly(lambda: api.post(f"{API}/workflows", {"tag_name": "steal", "workflow": definition},
                                             format="json")),
                   promptly(lambda: api.post(f"{API}/runs", {"workflow": definition}, format="json"))]
    for response in answers:
        problem = refused_workflow(response, "/nodes/0/config/url", "ssrf")
        assert problem["reason"] == "cloud-metadata" and problem["url"] == metadata and problem["node_id"] == "steal"
        assert "blocked address 169.254.169.254: cloud-metadata" in response.json()["message"]
    assert stored(user) == before
    editor = api.post(f"{API}/workflows/validate", {"workflow": definition}, format="json").json()
    assert not editor["valid"] and editor["errors"][0]["reason"] == "cloud-metadata"
    # a URL known only at run time is judged then (the connect-time check is the authority)
    templated = {"nodes": [{"id": "later", "type": "http", "config": {"url": "$inputs.url"}}], "edges": []}
    assert api.post(f"{API}/workflows", {"tag_name": "later", "workflow": templated}, format="json").status_code == 201


QUERIES = [
    ("/runs?status=bogus", "status", "completed"),
    ("/approvals?status=bogus", "status", "pending"),
    ("/workflows?scope=everyone", "scope", "global"),
    ("/workflows?materialize=maybe", "materialize", "true"),
    ("/workflows/hello?materialize=maybe", "materialize", "true"),
    ("/runs?limit=ten", "limit", None),
    ("/approvals?offset=last", "offset", None),
    ("/workflows/hello/runs?limit=all", "limit", None),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("query", "name", "one_allowed"), QUERIES, ids=[q for q, _, _ in QUERIES])
def test_an_unknown_query_value_is_a_400_naming_the_parameter(api, query, name, one_allowed):
    assert api.post(f"{API}/workflows", {"tag_name": "hello", "workflow": CANARY}, format="json").status_code == 201
    response = api.get(API + query)
    assert response.status_code == 400, response.content[:300]
    body = response.json()
    assert body["error"] == "validation_error" and body["details"]["field"] == name
    assert body["message"].startswith(name)
    if one_allowed:
        assert one_allowed in body["details"]["allowed"] and one_allowed in body["message"]
    else:
        assert body["details"]["rule"] == "integer"


def test_a_form_completed_from_the_inputs_is_judged_again_when_the_node_runs(engine, user, canary_owner):
    form = {"type": "object", "properties": {"code": {"type": "string", "pattern": "$inputs.pattern"}}}
    definition = hitl_workflow(form)
    with canary_alongside(canary_owner):
        started = client_for(user).post(f"{API}/runs", {"workflow": definition, "inputs": {
            "amount": 1, "customer": "x", "pattern": "^(a+)+\\1$"}}, format="json")
        assert started.status_code == 201, started.json()
        run = wait_for_run(started.json()["run_id"], timeout=30)
    assert run.status == "failed"
    review = run.node_runs.get(node_id="review")
    assert review.error["error_type"] == "InvalidForm", review.error
    assert (review.error["rule"], review.error["path"]) == ("form.pattern", "/config/form/properties/code/pattern")
    assert not Approval.objects.filter(run=run).exists()


def test_a_form_that_grows_past_its_bound_through_a_reference_fails_its_node(engine, api, user):
    """A reference in a form resolved to as much as 16 MiB, stored on the approval and answered in
    every inbox listing it."""
    form = {"type": "object", "properties": {"note": {"type": "string", "default": "$inputs.pad"}}}
    started = client_for(user).post(f"{API}/runs", {"workflow": hitl_workflow(form), "inputs": {
        "amount": 1, "customer": "x", "pad": "p" * 70_000}}, format="json")
    assert started.status_code == 201, started.json()
    run = wait_for_run(started.json()["run_id"], timeout=30)

    assert run.status == "failed"
    review = run.node_runs.get(node_id="review")
    assert (review.error["error_type"], review.error["rule"]) == ("InvalidForm", "form.max_bytes"), review.error
    assert not Approval.objects.filter(run=run).exists()
    literal = {"type": "object", "properties": {"note": {"type": "string", "default": "p" * 70_000}}}
    refused_workflow(api.post(f"{API}/workflows", {"tag_name": "big", "workflow": hitl_workflow(literal)},
                              format="json"), FORM_PATH, "form.max_bytes")


def test_an_approver_s_data_past_its_bound_is_refused_and_the_gate_still_decides(engine, user):
    run_id, approval = parked(user)

    refused = decide(user, approval, data={"note": "d" * 70_000})
    accepted = decide(user, approval, data={"note": "fine"})

    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_form_data"
    assert (refused.json()["details"]["field"], refused.json()["details"]["rule"]) == ("data", "max_bytes")
    assert accepted.status_code == 200 and wait_for_run(run_id).status == "completed"
