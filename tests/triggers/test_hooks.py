"""Signed webhooks through the HTTP API, runs on the real workers."""

from __future__ import annotations

import gzip
import io
import json
import time
import uuid
from datetime import datetime

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from tests.conftest import client_for, wait_for_run
from triggers.exceptions import NotHookOwner
from triggers.models import Hook, HookDelivery
from triggers.services.hooks import hook_create, hook_delete, signature_for
from workflows.models import Run
from workflows.services.definitions import workflow_save

ECHO = {"nodes": [{"id": "echo", "type": "transform", "config": {"expression": "inputs"}}], "edges": []}
UNAUTHORIZED = {"error": "unauthorized", "message": "the request could not be authenticated", "details": {}}


def make_hook(api: APIClient, user, **extra) -> dict:
    workflow_save(owner=user, tag="on-push", definition=ECHO)
    response = api.post("/api/v1/hooks", {"tag": "on-push", **extra}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def deliver(hook: dict, body: dict | bytes, *, secret: str | None = None, timestamp: int | str | None = None,
            delivery: str | None = None, signature: str | None = None, **headers):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    ts = str(int(time.time()) if timestamp is None else timestamp)
    sig = signature or "sha256=" + signature_for(secret or hook["secret"], ts, raw)
    return APIClient().post(f"/api/v1/hooks/{hook['id']}", raw, content_type="application/json",
                            HTTP_X_AOB_TIMESTAMP=ts, HTTP_X_AOB_SIGNATURE=sig,
                            HTTP_X_AOB_DELIVERY=delivery or str(uuid.uuid4()), **headers)


@pytest.mark.django_db
def test_a_workflow_its_hook_and_schedule_start_is_deleted_only_when_asked_with_them(api, user):
    """A hook's URL and secret live in a system outside: a workflow's delete once took its hooks
    (and schedules) along unasked, and that system got 404s from then on."""
    from triggers.models import Schedule

    hook = make_hook(api, user, name="ci")
    schedule = api.post("/api/v1/schedules", {"tag": "on-push", "cron": "0 3 * * *", "name": "nightly"},
                        format="json").json()

    refused = api.delete("/api/v1/workflows/on-push")
    assert refused.status_code == 409 and refused.json()["error"] == "workflow_in_use", refused.json()
    details = refused.json()["details"]
    assert (details["field"], details["rule"]) == ("force", "in_use")
    assert details["used_by"] == [{"kind": "hook", "id": hook["id"], "name": "ci"},
                                  {"kind": "schedule", "id": schedule["id"], "name": "nightly"}]
    assert f"hook {hook['id']} (ci)" in refused.json()["message"] and "force=true" in refused.json()["message"]
    assert api.get("/api/v1/workflows/on-push").status_code == 200
    assert Hook.objects.filter(pk=hook["id"]).exists() and Schedule.objects.filter(pk=schedule["id"]).exists()

    assert api.delete("/api/v1/workflows/on-push?force=true").status_code == 204
    assert api.get("/api/v1/workflows/on-push").status_code == 404
    assert not Hook.objects.exists() and not Schedule.objects.exists()


def test_a_signed_webhook_starts_a_run_with_the_body_as_inputs(engine, api, user):
    hook = make_hook(api, user)

    response = deliver(hook, {"ref": "main", "commits": 3})

    assert response.status_code == 202, response.json()
    run = wait_for_run(response.json()["run_id"])
    assert run.status == "completed" and run.owner == user and run.tag == "on-push"
    assert run.inputs == {"ref": "main", "commits": 3}
    assert run.node_runs.get(node_id="echo").output == {"ref": "main", "commits": 3}


@pytest.mark.django_db
@pytest.mark.parametrize("tamper", ["bad_signature", "other_secret", "stale_timestamp", "future_timestamp",
                                    "no_signature", "body_changed", "unknown_hook", "disabled_hook",
                                    "huge_timestamp", "huge_timestamp_unknown_hook", "arabic_digits_timestamp"])
def test_a_bad_signature_a_stale_timestamp_or_an_unknown_hook_starts_nothing_and_says_not_why(api, user, tamper):
    hook = make_hook(api, user)
    body = {"ref": "main"}
    raw = json.dumps(body).encode()
    now = int(time.time())
    kwargs: dict = {}
    if tamper == "bad_signature":
        kwargs["signature"] = "sha256=" + "0" * 64
    elif tamper == "other_secret":
        kwargs["secret"] = "whsec_not-the-hooks-secret"
    elif tamper == "stale_timestamp":
        kwargs["timestamp"] = now - 301  # signed correctly, but more than 5 minutes old
    elif tamper == "future_timestamp":
        # past the 5 minutes however long the request takes to be checked (at now + 301 a check a
        # second later, now being the second rounded down, found it within: one fresh clone's run)
        kwargs["timestamp"] = now + 330
    elif tamper == "no_signature":
        kwargs["signature"] = "sha256="
    elif tamper.startswith("huge_timestamp"):
        kwargs["timestamp"] = "1" + "0" * 400  # int() read it, and the float subtraction raised: a 500
        if tamper.endswith("unknown_hook"):  # anyone's, with no hook of theirs
            hook = {**hook, "id": "hk_doesnotexist"}
    elif tamper == "arabic_digits_timestamp":
        kwargs["timestamp"] = "".join(chr(0x0660 + int(d)) for d in str(now))  # int() reads these too
    elif tamper == "unknown_hook":
        hook = {**hook, "id": "hk_doesnotexist"}
    elif tamper == "disabled_hook":
        assert api.patch(f"/api/v1/hooks/{hook['id']}", {"enabled": False}, format="json").status_code == 200
    if tamper == "body_changed":
        ts = str(now)
        signature = "sha256=" + signature_for(hook["secret"], ts, raw)
        response = deliver(hook, {"ref": "evil"}, timestamp=now, signature=signature)
    else:
        response = deliver(hook, body, **kwargs)

    assert response.status_code == 401
    assert response.json() == UNAUTHORIZED
    assert not Run.objects.exists()
    assert not HookDelivery.objects.exists()


@pytest.mark.django_db
def test_a_replayed_delivery_starts_nothing_new(api, user):
    hook = make_hook(api, user)
    first = deliver(hook, {"n": 1}, delivery="delivery-1")
    assert first.status_code == 202

    same_id = deliver(hook, {"n": 1}, delivery="delivery-1", timestamp=int(time.time()) + 1)  # the sender's retry
    ts, raw = int(time.time()), json.dumps({"n": 2}).encode()
    captured = deliver(hook, raw, delivery="delivery-2", timestamp=ts)
    replayed = deliver(hook, raw, delivery="delivery-3", timestamp=ts,  # a captured request with a new id
                       signature="sha256=" + signature_for(hook["secret"], str(ts), raw))

    assert same_id.status_code == 200 and same_id.json() == {"run_id": first.json()["run_id"], "duplicate": True}
    assert captured.status_code == 202
    assert replayed.status_code == 200 and replayed.json()["run_id"] == captured.json()["run_id"]
    assert Run.objects.count() == 2
    assert HookDelivery.objects.count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize(("raw", "rule"), [
    (b'{"title": "a\\u0000b"}', "nul_character"),  # attacker text inside a third party's payload
    (b'{"n": NaN}', "invalid_number"),
    (b"[" * 100_000 + b"]" * 100_000, "max_depth"),
    (b'{"n": 1' + b"0" * 30 + b"}", "integer_out_of_range"),
    (b"{not json", "malformed_json"),
    (b'{"ref": "main", "ref": "release"}', "duplicate_key"),  # which one the sender meant is not known
])
def test_a_signed_delivery_the_api_would_refuse_is_refused_alike_and_starts_nothing(api, user, raw, rule):
    """The body goes through the API's strict parser: a 400 naming the rule, never a 500 from the
    database or the recursion limit, and nothing recorded, so the sender may send it again fixed."""
    hook = make_hook(api, user)
    response = deliver(hook, raw)
    assert response.status_code == 400, response.content[:300]
    assert response.json()["details"] == {"field": "body", "rule": rule}
    assert not Run.objects.exists() and not HookDelivery.objects.exists()


@pytest.mark.django_db
def test_a_compressed_delivery_is_a_415_naming_its_coding_and_starts_nothing(api, user):
    """A sender that gzips its body was told the body "is not UTF-8"; it is told what to change."""
    hook = make_hook(api, user)
    response = deliver(hook, gzip.compress(b'{"ref": "main"}'), HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 415, response.content[:300]
    assert response.json()["details"]["rule"] == "content_encoding"
    assert response.json()["details"]["field"] == "Content-Encoding" and "'gzip'" in response.json()["message"]
    assert not Run.objects.exists() and not HookDelivery.objects.exists()
    assert deliver(hook, {"ref": "main"}, HTTP_CONTENT_ENCODING="identity").status_code == 202


@pytest.mark.django_db
def test_a_mapping_shapes_the_inputs(api, user):
    cel = make_hook(api, user, mapping={"cel": "{'branch': body.ref, 'count': size(body.commits)}"})
    template = api.post("/api/v1/hooks", {"tag": "on-push", "mapping": {"template": {"who": "$inputs.pusher.name"}}},
                        format="json").json()

    by_cel = deliver(cel, {"ref": "main", "commits": [1, 2]})
    by_template = deliver(template, {"pusher": {"name": "ana"}})

    assert Run.objects.get(pk=by_cel.json()["run_id"]).inputs == {"branch": "main", "count": 2}
    assert Run.objects.get(pk=by_template.json()["run_id"]).inputs == {"who": "ana"}


@pytest.mark.django_db
@pytest.mark.parametrize("template", [5, None, "text", [1, 2], "$inputs.a and more"])
def test_a_template_that_can_make_no_object_is_refused_at_save_naming_it(api, user, template):
    """Saved, such a hook refused every delivery naming `inputs`, which its sender never wrote."""
    make_hook(api, user)  # the workflow it would start
    response = api.post("/api/v1/hooks", {"tag": "on-push", "mapping": {"template": template}}, format="json")

    assert response.status_code == 400, response.content[:300]
    assert response.json()["details"] == {"field": "mapping.template", "rule": "type"}


@pytest.mark.django_db
def test_the_template_the_refusal_advises_maps_an_object_body_and_a_list_body_is_read_under_body(api, user):
    """The refusal of a template advised ``{"order": "$inputs.body.id"}`` and ``"$inputs.body"``,
    but for a JSON object body (every sender's usual one) ``$inputs`` is the body itself: a hook
    written as advised made ``{"order": null}``, or no object at all, from every delivery. The
    advice now reads the body as the template does; only a body that is no object is under ``body``."""
    make_hook(api, user)  # the workflow "on-push"
    message = api.post("/api/v1/hooks", {"tag": "on-push", "mapping": {"template": 5}}, format="json").json()["message"]
    assert '{"order": "$inputs.id"}' in message and '"$inputs.order"' in message, message
    advised = api.post("/api/v1/hooks", {"tag": "on-push", "mapping": {"template": {"order": "$inputs.id"}}},
                       format="json").json()
    whole = api.post("/api/v1/hooks", {"tag": "on-push", "mapping": {"template": "$inputs.order"}},
                     format="json").json()
    listed = api.post("/api/v1/hooks", {"tag": "on-push", "mapping": {"template": {"items": "$inputs.body"}}},
                      format="json").json()

    by_advice, by_whole, by_list = (deliver(advised, {"id": 7}), deliver(whole, {"order": {"id": 7}}),
                                    deliver(listed, b"[1, 2]"))

    assert Run.objects.get(pk=by_advice.json()["run_id"]).inputs == {"order": 7}
    assert Run.objects.get(pk=by_whole.json()["run_id"]).inputs == {"id": 7}
    assert Run.objects.get(pk=by_list.json()["run_id"]).inputs == {"items": [1, 2]}
    made_none = deliver(whole, {"id": 7})  # no "order" in it: told what $inputs is
    assert made_none.status_code == 400 and '{"body": <the body>}' in made_none.json()["message"], made_none.json()


@pytest.mark.django_db
def test_a_whole_reference_template_that_makes_no_object_names_the_mapping_at_delivery(api, user):
    hook = make_hook(api, user, mapping={"template": "$inputs.commits"})

    assert deliver(hook, {"commits": {"n": 2}}).status_code == 202
    response = deliver(hook, {"commits": [1, 2]})

    assert response.status_code == 400 and response.json()["error"] == "invalid_inputs"
    assert response.json()["details"] == {"field": "mapping.template", "rule": "type"}
    assert "mapping.template made a list" in response.json()["message"]


@pytest.mark.django_db
@pytest.mark.parametrize(("cel", "rule", "path"), [
    ("{'x': 0.0/0.0}", "invalid_number", "/x"),
    ("{'x': [1.0/0.0]}", "invalid_number", "/x/0"),
    ("{'x': '\\x00'}", "nul_character", "/x"),
    ("{'x\\x00': 1}", "nul_character", "/"),
    ("{'x': 18446744073709551615u}", "integer_out_of_range", "/x"),
])
def test_a_mapping_that_makes_inputs_json_cannot_hold_fails_by_the_body_s_rule_and_starts_nothing(api, user, cel,
                                                                                                  rule, path):
    """A CEL mapping can make what no body may carry (NaN, NUL, a 65-bit integer): the delivery is a
    failed mapping naming the rule and where, not a 500 from the canonical JSON or PostgreSQL, and
    nothing is recorded, so the sender's retry goes through once the owner fixes the mapping."""
    hook = make_hook(api, user, mapping={"cel": cel})

    response = deliver(hook, {"a": 1})

    assert response.status_code == 400, response.content[:300]
    assert response.json()["error"] == "mapping_failed"
    assert response.json()["details"] == {"field": "mapping.cel", "rule": rule, "path": path}
    assert not Run.objects.exists() and not HookDelivery.objects.exists()


@pytest.mark.django_db
def test_a_template_mapping_with_an_index_of_thousands_of_digits_reads_nothing(api, user):
    """The index is only past the end of the list (Python's int() refuses past 4300 digits)."""
    hook = make_hook(api, user, mapping={"template": {"x": "$inputs.a." + "9" * 5000, "y": "$inputs.a.0"}})

    response = deliver(hook, {"a": [1]})

    assert response.status_code == 202, response.content[:300]
    assert Run.objects.get(pk=response.json()["run_id"]).inputs == {"x": None, "y": 1}


@pytest.mark.django_db
def test_the_hook_secret_is_shown_once(api, user):
    hook = make_hook(api, user)

    listed = api.get("/api/v1/hooks").json()
    one = api.get(f"/api/v1/hooks/{hook['id']}").json()

    assert hook["secret"].startswith("whsec_")
    assert "secret" not in listed[0] and "secret" not in one
    assert hook["secret"] not in json.dumps(listed) + json.dumps(one)


@pytest.fixture(params=["bob", "root"])
def stranger(request, make_user):
    """Another user: a plain one, and a superuser."""
    staff = request.param == "root"
    return make_user(request.param, is_staff=staff, is_superuser=staff)


@pytest.mark.django_db
def test_only_the_owner_deletes_a_hook_and_its_deliveries_go_with_it(user, stranger):
    hook, _ = hook_create(owner=user, workflow=workflow_save(owner=user, tag="on-push", definition=ECHO).workflow)
    HookDelivery.objects.create(hook=hook, delivery_id="d1", signature="0" * 64)

    with pytest.raises(NotHookOwner) as exc:
        hook_delete(hook=hook, user=stranger)

    assert (exc.value.status, exc.value.code, exc.value.message, exc.value.extra) == (
        403, "not_hook_owner", "only the hook's owner may delete it", {"hook_id": hook.pk, "rule": "hook_owner"})
    assert Hook.objects.filter(pk=hook.pk).exists() and HookDelivery.objects.filter(hook_id=hook.pk).exists()

    hook_delete(hook=hook, user=user)

    assert not Hook.objects.filter(pk=hook.pk).exists() and not HookDelivery.objects.filter(hook_id=hook.pk).exists()


@pytest.mark.django_db
def test_the_api_deletes_a_hook_for_its_owner_and_answers_anyone_else_as_if_it_did_not_exist(api, user, make_user):
    hook = make_hook(api, user)

    response = client_for(make_user("bob")).delete(f"/api/v1/hooks/{hook['id']}")

    assert response.status_code == 404 and response.json()["error"] == "not_found"
    assert Hook.objects.filter(pk=hook["id"]).exists()
    assert api.delete(f"/api/v1/hooks/{hook['id']}").status_code == 204
    assert not Hook.objects.filter(pk=hook["id"]).exists()
    assert deliver(hook, {"ref": "main"}).json() == UNAUTHORIZED


@pytest.mark.django_db
def test_inputs_a_hook_s_mapping_builds_past_their_bound_start_nothing_and_say_why(api, user, settings):
    """A mapping can build far more than the body it reads (18 MB from 0.9 MB measured): the run's
    inputs are bounded where every start goes through, not by the request's body cap."""
    settings.AOB_MAX_RUN_INPUTS_BYTES = 4096
    hook = make_hook(api, user, mapping={"template": {"a": "$inputs.text", "b": "$inputs.text"}})

    refused = deliver(hook, {"text": "t" * 3000})
    fits = deliver(hook, {"text": "t" * 1000})

    assert refused.status_code == 400, refused.json()
    assert refused.json()["error"] == "invalid_inputs"
    assert refused.json()["details"] == {"field": "inputs", "rule": "max_bytes", "limit": 4096, "size": 6015}
    assert fits.status_code == 202 and Run.objects.count() == 1


@pytest.mark.django_db
def test_an_owner_s_hooks_and_their_mappings_are_bounded_as_they_are_listed_with_them(api, user, make_user,
                                                                                      settings):
    settings.AOB_MAX_HOOKS_PER_OWNER = 2
    workflow_save(owner=user, tag="on-push", definition=ECHO)
    big = {"template": {"pad": "m" * 70_000}}

    too_big = api.post("/api/v1/hooks", {"tag": "on-push", "mapping": big}, format="json")
    made = [api.post("/api/v1/hooks", {"tag": "on-push"}, format="json") for _ in range(3)]
    grown = api.patch(f"/api/v1/hooks/{made[0].json()['id']}", {"mapping": big}, format="json")

    assert too_big.status_code == 400 and too_big.json()["details"] == {"field": "mapping", "rule": "max_bytes",
                                                                         "limit": 65536, "size": 70_023}
    assert [r.status_code for r in made] == [201, 201, 400]
    assert made[-1].json()["details"] == {"field": "hooks", "rule": "max_hooks", "limit": 2}
    assert grown.status_code == 400 and grown.json()["details"]["rule"] == "max_bytes"
    other = make_user("other")  # the cap is each owner's
    workflow_save(owner=other, tag="on-push", definition=ECHO)
    assert client_for(other).post("/api/v1/hooks", {"tag": "on-push"}, format="json").status_code == 201


@pytest.mark.django_db
@pytest.mark.parametrize("trigger", ["hook", "schedule"])
def test_a_trigger_runs_its_owner_s_own_workflow_whoever_makes_it(user, make_user, trigger):
    """The API finds the workflow by tag among the caller's own; ``hook_create`` itself took any
    workflow, so a caller other than the API (a script, a later admin action) made a hook running
    another's version as its owner. Schedules held the rule in their service: one rule now."""
    from aob_project.exceptions import ValidationFailed
    from triggers.models import Hook, Schedule
    from triggers.services.hooks import hook_create
    from triggers.services.schedules import schedule_create
    from workflows.models import Workflow

    other = make_user("other")
    workflow_save(owner=other, tag="theirs", definition=ECHO)
    theirs = Workflow.objects.get(owner=other, tag="theirs")
    make = {"hook": lambda owner: hook_create(owner=owner, workflow=theirs),
            "schedule": lambda owner: schedule_create(owner=owner, workflow=theirs, cron="0 9 * * *")}[trigger]

    with pytest.raises(ValidationFailed) as refused:
        make(user)
    make(other)  # the control: its owner makes it

    assert refused.value.extra == {"field": "workflow", "rule": "workflow_owner"}
    assert [t.owner_id for t in (Hook if trigger == "hook" else Schedule).objects.all()] == [other.pk]


@pytest.mark.ratelimit
@pytest.mark.django_db
def test_a_flood_of_deliveries_past_the_owner_s_run_limit_is_refused_before_its_mapping_is_evaluated(api, user,
                                                                                                       settings):
    """A hook's mapping is evaluated in the web request of each delivery; the owner's run limit was
    checked only after it, when the run started, so deliveries whose mapping failed (or were
    refused after it) each cost an evaluation without limit."""
    settings.AOB_RATE_USER_RUNS_PER_MIN = 2
    hook = make_hook(api, user, mapping={"cel": "{'n': body.missing}"})

    # new deliveries (a repeat of the same bytes counts against its address instead: the test below)
    answers = [deliver(hook, {"x": n}) for n in range(3)]

    assert [a.status_code for a in answers] == [400, 400, 429]
    assert [a.json()["error"] for a in answers] == ["mapping_failed", "mapping_failed", "user_rate_limit_exceeded"]
    assert not Run.objects.exists() and not HookDelivery.objects.exists()


@pytest.mark.django_db
def test_a_hook_s_mapping_has_its_own_short_deadline_in_the_request(api, user):
    """A mapping projects the body; it had the whole AOB_CEL_TIMEOUT_MS (1 s) of a web process on
    every delivery."""
    hook = make_hook(api, user, mapping={"cel": "{'ok': body.xs.all(a, body.xs.all(b, a + b >= 0))}"})

    response = deliver(hook, {"xs": list(range(3000))})  # some seconds without a deadline

    assert response.status_code == 400, response.json()
    assert response.json()["error"] == "mapping_failed"
    assert "evaluation stopped at its time limit (100 ms, AOB_HOOK_MAPPING_TIMEOUT_MS" in response.json()["message"]
    assert response.json()["details"] == {"field": "mapping.cel", "rule": "cel.timeout"}  # it said cel_evaluation
    assert not Run.objects.exists()


@pytest.mark.django_db
def test_a_hook_s_mapping_is_bounded_as_every_expression_is_and_told_by_the_bound_s_rule(api, user, settings):
    """A mapping was cut at 4,096 characters of its own, whatever ``AOB_CEL_MAX_SOURCE_BYTES`` said,
    and every compile error was ``cel_syntax``, a bound met included."""
    workflow_save(owner=user, tag="on-push", definition=ECHO)
    long_source = "{'n': " + " + ".join(["1"] * 2100) + "}"  # 8,405 bytes
    settings.AOB_CEL_MAX_SOURCE_BYTES = 4096

    refused = api.post("/api/v1/hooks", {"tag": "on-push", "mapping": {"cel": long_source}}, format="json")
    settings.AOB_CEL_MAX_SOURCE_BYTES = 16384
    made = api.post("/api/v1/hooks", {"tag": "on-push", "mapping": {"cel": long_source}}, format="json")
    typo = api.post("/api/v1/hooks", {"tag": "on-push", "mapping": {"cel": "{'n': "}}, format="json")

    assert refused.status_code == 400, refused.json()
    assert refused.json()["details"] == {"field": "mapping.cel", "rule": "cel.max_source_bytes"}
    assert made.status_code == 201, made.json()
    assert typo.json()["details"] == {"field": "mapping.cel", "rule": "cel_syntax"}


@pytest.mark.django_db
def test_a_deactivated_owners_hook_starts_no_run_and_the_sender_is_told_why(api, user):
    """Correctly signed (the sender holds the secret): refused with the reason, nothing stored, so a
    delivery sent again after the owner is back starts its run."""
    hook = make_hook(api, user)
    user.is_active = False
    user.save(update_fields=["is_active"])

    response = deliver(hook, {"ref": "main"}, delivery="d-1")

    assert response.status_code == 403, response.json()
    assert response.json()["error"] == "owner_inactive"
    assert not Run.objects.exists() and not HookDelivery.objects.exists()


@pytest.mark.ratelimit
@pytest.mark.django_db
def test_replays_of_a_captured_delivery_do_not_spend_the_owners_delivery_limit(api, user, settings):
    """Each replay of one signed request passed its checks and was counted against the owner's
    delivery limit before it was known as a repeat: one observer, from one address under the
    anonymous limit, kept the owner's real deliveries refused (429) while the timestamp was fresh."""
    limit = settings.AOB_RATE_USER_RUNS_PER_MIN
    assert settings.AOB_RATE_ANON_PER_MIN > limit  # one address is enough
    hook = make_hook(api, user)
    ts = int(time.time())
    first = deliver(hook, {"ref": "main"}, timestamp=ts, delivery="captured")
    assert first.status_code == 202
    replays = [deliver(hook, {"ref": "main"}, timestamp=ts, delivery=f"captured-{i % 2}") for i in range(limit)]
    assert {r.status_code for r in replays} == {200}
    assert {r.json()["run_id"] for r in replays} == {first.json()["run_id"]}
    assert Run.objects.count() == 1

    real = deliver(hook, {"ref": "release"}, delivery="the-owners-next-real-delivery")
    assert real.status_code == 202, real.json()


@pytest.mark.django_db
@pytest.mark.parametrize("delivery_id", ["a\x00b", "line\nbreak", "x" * 201])
def test_an_authenticated_delivery_with_a_bad_delivery_id_is_a_400_naming_the_header(api, user, delivery_id):
    """The delivery id is a header the signature does not cover: a NUL in it reached the insert (a
    500 behind a proxy that passes it; uvicorn refuses it before)."""
    hook = make_hook(api, user)
    ts = str(int(time.time()))
    client = APIClient()
    client.raise_request_exception = False
    response = client.post(f"/api/v1/hooks/{hook['id']}", b"{}", content_type="application/json",
                           HTTP_X_AOB_TIMESTAMP=ts, HTTP_X_AOB_DELIVERY=delivery_id,
                           HTTP_X_AOB_SIGNATURE="sha256=" + signature_for(hook["secret"], ts, b"{}"))
    assert response.status_code == 400, response.content[:200]
    assert response.json()["details"] == {"field": "X-AOB-Delivery", "rule": "delivery_id"}
    assert not HookDelivery.objects.exists() and not Run.objects.exists()


@pytest.mark.ratelimit
@pytest.mark.django_db
def test_signed_deliveries_from_a_shared_sender_do_not_spend_its_address_s_anonymous_limit(api, user, make_user,
                                                                                          settings):
    """A sender (GitHub, Stripe, a CI service) delivers every tenant's hooks from a few addresses.
    A signed delivery is authenticated, and counted against its owner's delivery limit: counted as
    an anonymous request of its address too, one tenant's busy hook (or one a stranger points a
    GitHub repository at) refused every other tenant's deliveries from that sender with 429, and
    GitHub does not send a failed delivery again. Requests that prove nothing still count."""
    settings.AOB_RATE_ANON_PER_MIN = 3
    busy = make_hook(api, user)
    bob = make_user("bob")
    workflow_save(owner=bob, tag="on-push", definition=ECHO)
    quiet = client_for(bob).post("/api/v1/hooks", {"tag": "on-push"}, format="json").json()

    busy_answers = [deliver(busy, {"n": n}) for n in range(settings.AOB_RATE_ANON_PER_MIN + 1)]
    bobs = deliver(quiet, {"ref": "main"})

    assert [a.status_code for a in busy_answers] == [202] * (settings.AOB_RATE_ANON_PER_MIN + 1)
    assert bobs.status_code == 202, bobs.json()
    forged = [deliver(quiet, {"ref": "evil"}, signature="sha256=" + "0" * 64)
              for _ in range(settings.AOB_RATE_ANON_PER_MIN + 1)]
    assert [f.status_code for f in forged] == [401] * settings.AOB_RATE_ANON_PER_MIN + [429]
    assert forged[-1].json()["error"] == "anonymous_rate_limit_exceeded"
    assert Run.objects.filter(owner=bob).count() == 1


@pytest.mark.ratelimit
@pytest.mark.django_db
def test_deliveries_to_one_tenant_s_paused_hook_do_not_refuse_other_tenants_from_the_same_sender(
        api, user, make_user, settings):
    """A tenant pauses a busy hook (``enabled`` false) while its sender keeps delivering: each signed
    delivery to it is the 401 of a disabled hook, and was counted as an anonymous request of the
    sender's address, so past AOB_RATE_ANON_PER_MIN every other tenant's deliveries from that
    sender were refused 429. A new signed delivery proves itself though the hook is paused."""
    settings.AOB_RATE_ANON_PER_MIN = 3
    busy = make_hook(api, user)
    assert api.patch(f"/api/v1/hooks/{busy['id']}", {"enabled": False}, format="json").status_code == 200
    bob = make_user("bob")
    workflow_save(owner=bob, tag="on-push", definition=ECHO)
    quiet = client_for(bob).post("/api/v1/hooks", {"tag": "on-push"}, format="json").json()

    paused = [deliver(busy, {"n": n}) for n in range(settings.AOB_RATE_ANON_PER_MIN + 1)]  # signed, real events
    bobs = deliver(quiet, {"ref": "main"})

    assert [(a.status_code, a.json()) for a in paused] == [(401, UNAUTHORIZED)] * (settings.AOB_RATE_ANON_PER_MIN + 1)
    assert bobs.status_code == 202, bobs.json()
    assert Run.objects.filter(owner=bob).count() == 1 and not Run.objects.filter(owner=user).exists()


@pytest.mark.django_db
def test_a_template_mapping_that_copies_the_body_past_the_bound_is_a_failed_mapping_naming_it(api, user, settings):
    """A template that copies the body many times is stopped while it resolves, at
    AOB_MAX_RESOLVED_CONFIG_BYTES: the sender got a 400 ``ConfigTooLarge`` about a node's
    "resolved config", with no field or rule, though no node was involved: the hook's mapping was."""
    settings.AOB_MAX_RESOLVED_CONFIG_BYTES = 64 * 1024
    hook = make_hook(api, user, mapping={"template": {f"copy{i}": "$inputs.text" for i in range(10)}})

    response = deliver(hook, {"text": "t" * 10_000})

    assert response.status_code == 400, response.json()
    assert response.json()["error"] == "mapping_failed", response.json()
    assert response.json()["details"] == {"field": "mapping.template", "rule": "max_bytes", "limit": 64 * 1024}
    assert "AOB_MAX_RESOLVED_CONFIG_BYTES" in response.json()["message"]
    assert not Run.objects.exists() and not HookDelivery.objects.exists()


# The delivery's row refused as it is when its hook was deleted during the delivery (its foreign
# key, checked at the insert): SQLSTATE 23503, an integrity error that is not a repeat.
HOOK_GONE = """
CREATE FUNCTION aob_test_hook_gone() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'insert on table "triggers_hookdelivery" violates foreign key constraint'
        USING ERRCODE = '23503';
END $$;
CREATE TRIGGER aob_test_hook_gone BEFORE INSERT ON triggers_hookdelivery
    FOR EACH ROW EXECUTE FUNCTION aob_test_hook_gone();
"""


@pytest.mark.django_db
def test_a_delivery_whose_hook_goes_while_it_is_accepted_is_refused_not_called_a_repeat(api, user):
    """Every integrity error on accepting a delivery was taken for a concurrent repeat: a hook (or
    its workflow) deleted in those milliseconds answered 200 ``duplicate`` naming no run, and the
    sender stopped retrying a delivery that had started nothing. It is refused as an unknown
    hook's delivery is."""
    from django.db import connection

    hook = make_hook(api, user)
    with connection.cursor() as cursor:
        cursor.execute(HOOK_GONE)

    response = deliver(hook, {"n": 1})

    assert (response.status_code, response.json()["error"]) == (401, "unauthorized"), response.json()
    assert not Run.objects.exists()


@pytest.mark.django_db
def test_a_hook_whose_secret_is_under_a_dropped_key_is_refused_as_unauthorized_never_a_500(api, user):
    """A signing secret left under a key dropped from AOB_SECRETS_KEYS before ``aob_rotate_secrets``
    answered every sender (anyone who knows the hook's id) a 500, which also told them the hook exists."""
    from cryptography.fernet import Fernet

    hook = make_hook(api, user)
    Hook.objects.filter(pk=hook["id"]).update(
        secret_ciphertext=Fernet(Fernet.generate_key()).encrypt(hook["secret"].encode()).decode())

    response = deliver(hook, {"ref": "main"})

    assert response.status_code == 401
    assert response.json() == UNAUTHORIZED
    assert not Run.objects.exists() and not HookDelivery.objects.exists()


def deliveries(api: APIClient, hook: dict, **query) -> dict:
    response = api.get(f"/api/v1/hooks/{hook['id']}/deliveries", query)
    assert response.status_code == 200, response.content[:300]
    return response.json()


@pytest.mark.django_db
def test_a_refused_signed_delivery_is_shown_to_the_owner_and_its_retry_still_starts_the_run(api, user, make_user):
    """A delivery that passed its signature and was refused after (a mapping that fails, inputs
    the workflow refuses, an inactive owner, a rate limit) told only its sender why: the owner saw
    nothing, as Svix, Stripe and GitHub show in a delivery log. Never its body; never anything
    unauthenticated; and not the delivery id, which the sender's retry needs."""
    hook = make_hook(api, user, mapping={"cel": "{'n': body.missing}"})

    refused = deliver(hook, {"card": "4242-token-in-the-body"}, delivery="d-1")
    forged = [deliver(hook, {"n": n}, signature="sha256=" + "0" * 64) for n in range(3)]  # writes nothing

    assert refused.status_code == 400 and refused.json()["error"] == "mapping_failed", refused.json()
    assert {f.status_code for f in forged} == {401}
    page = deliveries(api, hook)
    assert page["count"] == 1 and page["next"] is None
    [entry] = page["results"]
    assert (entry["delivery_id"], entry["outcome"], entry["run_id"]) == ("d-1", "refused", None)
    assert entry["error"] == {"code": "mapping_failed", "status": 400, "message": refused.json()["message"],
                              "details": refused.json()["details"]}
    assert entry["received_at"]
    assert "4242-token-in-the-body" not in json.dumps(page)
    assert client_for(make_user("bob")).get(f"/api/v1/hooks/{hook['id']}/deliveries").status_code == 404

    fixed = api.patch(f"/api/v1/hooks/{hook['id']}", {"mapping": {"cel": "{'n': 1}"}}, format="json")
    assert fixed.status_code == 200
    retry = deliver(hook, {"card": "4242-token-in-the-body"}, delivery="d-1")

    assert retry.status_code == 202, retry.json()
    listed = deliveries(api, hook)["results"]
    assert [(e["delivery_id"], e["outcome"], e["run_id"], e["error"] and e["error"]["code"]) for e in listed] == [
        ("d-1", "accepted", retry.json()["run_id"], None), ("d-1", "refused", None, "mapping_failed")]


@pytest.mark.django_db
def test_a_hook_keeps_only_its_latest_refused_deliveries_and_lists_them_a_page_at_a_time(api, user, settings):
    """A sender that holds the secret can be refused without end (inputs the workflow refuses, an
    owner away): each hook keeps its latest AOB_HOOK_REFUSALS_KEPT refusals, older ones go."""
    settings.AOB_HOOK_REFUSALS_KEPT = 3
    hook = make_hook(api, user)
    answers = [deliver(hook, [n], delivery=f"r-{n}") for n in range(4)]  # not an object: invalid_inputs
    User.objects.filter(pk=user.pk).update(is_active=False)  # the owner away (their token kept, to read later)
    answers.append(deliver(hook, {"n": 4}, delivery="r-4"))
    User.objects.filter(pk=user.pk).update(is_active=True)

    assert [a.status_code for a in answers] == [400] * 4 + [403]
    page = deliveries(api, hook, limit=2)
    assert page["count"] == 3
    assert [(e["delivery_id"], e["error"]["code"]) for e in page["results"]] == [("r-4", "owner_inactive"),
                                                                                ("r-3", "invalid_inputs")]
    rest = api.get(page["next"]).json()
    assert [e["delivery_id"] for e in rest["results"]] == ["r-2"] and rest["next"] is None
    assert page["results"][0]["error"]["status"] == 403
    bad = api.get(f"/api/v1/hooks/{hook['id']}/deliveries", {"limit": "ten"})
    assert bad.status_code == 400 and bad.json()["details"]["field"] == "limit"


@pytest.mark.ratelimit
@pytest.mark.django_db
def test_a_delivery_refused_by_the_owner_s_rate_limit_is_shown_to_the_owner(api, user, settings):
    settings.AOB_RATE_USER_RUNS_PER_MIN = 1
    hook = make_hook(api, user)

    answers = [deliver(hook, {"n": n}, delivery=f"d-{n}") for n in range(2)]

    assert [a.status_code for a in answers] == [202, 429]
    listed = deliveries(api, hook)["results"]
    assert [(e["delivery_id"], e["outcome"], e["error"] and e["error"]["code"]) for e in listed] == [
        ("d-1", "refused", "user_rate_limit_exceeded"), ("d-0", "accepted", None)]
    assert listed[0]["error"]["status"] == 429


def rotate(api: APIClient, hook: dict, **body):
    return api.post(f"/api/v1/hooks/{hook['id']}/rotate", body or None, format="json")


def until(answer: dict) -> float:
    return datetime.fromisoformat(answer["previous_secret_expires_at"].replace("Z", "+00:00")).timestamp()


@pytest.mark.django_db
def test_a_rotated_secret_s_predecessor_still_signs_for_the_grace_period(api, user, settings):
    """Rotating cut the old secret off at once: a sender's retries in flight, signed before the
    rotation, got 401s until it was given the new one. Stripe and Svix keep the previous secret
    valid for a while (Stripe up to 24 hours, as the user chooses)."""
    assert settings.AOB_HOOK_SECRET_GRACE_S == 24 * 3600
    hook = make_hook(api, user)
    before = time.time()

    rotated = rotate(api, hook)

    assert rotated.status_code == 200, rotated.json()
    new = rotated.json()["secret"]
    assert new != hook["secret"]
    assert before + 86_400 - 1 <= until(rotated.json()) <= time.time() + 86_400 + 1
    assert deliver(hook, {"n": 1}, secret=hook["secret"]).status_code == 202  # a retry signed before
    assert deliver(hook, {"n": 2}, secret=new).status_code == 202
    shown = json.dumps(api.get(f"/api/v1/hooks/{hook['id']}").json()) + json.dumps(api.get("/api/v1/hooks").json())
    assert hook["secret"] not in shown and new not in shown
    assert api.get(f"/api/v1/hooks/{hook['id']}").json()["previous_secret_expires_at"] == (
        rotated.json()["previous_secret_expires_at"])

    again = rotate(api, hook).json()  # only the secret just replaced signs still

    assert deliver(hook, {"n": 3}, secret=hook["secret"]).json() == UNAUTHORIZED
    assert deliver(hook, {"n": 4}, secret=new).status_code == 202
    assert deliver(hook, {"n": 5}, secret=again["secret"]).status_code == 202


@pytest.mark.django_db
def test_a_rotation_may_shorten_the_grace_to_nothing_but_not_past_the_operator_s_ceiling(api, user, settings):
    settings.AOB_HOOK_SECRET_GRACE_S = 3600
    hook = make_hook(api, user)

    too_long = rotate(api, hook, grace_s=3601)
    negative = rotate(api, hook, grace_s=-1)

    assert too_long.status_code == 400, too_long.json()
    assert too_long.json()["details"] == {"field": "grace_s", "rule": "max_grace", "limit": 3600}
    assert "AOB_HOOK_SECRET_GRACE_S" in too_long.json()["message"]
    assert negative.status_code == 400 and negative.json()["details"]["field"] == "grace_s"
    assert deliver(hook, {"n": 0}).status_code == 202  # neither rotated anything

    cut = rotate(api, hook, grace_s=0)  # compromised: cut it now

    assert cut.status_code == 200 and cut.json()["previous_secret_expires_at"] is None
    assert deliver(hook, {"n": 1}, secret=hook["secret"]).json() == UNAUTHORIZED
    assert deliver(hook, {"n": 2}, secret=cut.json()["secret"]).status_code == 202


@pytest.mark.django_db
def test_the_previous_secret_stops_signing_when_its_grace_ends(api, user):
    hook = make_hook(api, user)
    rotated = rotate(api, hook, grace_s=2)
    assert rotated.status_code == 200, rotated.json()
    assert deliver(hook, {"n": 1}, secret=hook["secret"], delivery="late").status_code == 202

    deadline = time.monotonic() + 15
    answer = deliver(hook, {"n": 1}, secret=hook["secret"], delivery="late")
    while answer.status_code == 200 and time.monotonic() < deadline:  # the same delivery, a repeat until then
        time.sleep(0.2)
        answer = deliver(hook, {"n": 1}, secret=hook["secret"], delivery="late")

    assert answer.json() == UNAUTHORIZED
    assert time.time() >= until(rotated.json())
    assert deliver(hook, {"n": 2}, secret=rotated.json()["secret"]).status_code == 202


@pytest.mark.django_db
def test_an_operator_ceiling_of_zero_makes_every_rotation_cut_the_old_secret_at_once(api, user, settings):
    settings.AOB_HOOK_SECRET_GRACE_S = 0
    hook = make_hook(api, user)

    rotated = rotate(api, hook)

    assert rotated.status_code == 200 and rotated.json()["previous_secret_expires_at"] is None
    assert deliver(hook, {"n": 1}, secret=hook["secret"]).json() == UNAUTHORIZED


@pytest.mark.django_db
def test_the_previous_secret_is_stored_encrypted_and_re_encrypted_by_aob_rotate_secrets(api, user, settings):
    """A key rotation (a new key first, ``aob_rotate_secrets``, the old key dropped) must carry the
    previous signing secret over too, or it stops signing with the old key."""
    from cryptography.fernet import Fernet
    from django.conf import settings as django_settings
    from django.core.management import call_command

    from aob_project.development import derived_vault_key
    from vault import crypto

    hook = make_hook(api, user)
    new = rotate(api, hook).json()["secret"]
    row = json.dumps(list(Hook.objects.filter(pk=hook["id"]).values()), default=str)
    assert hook["secret"] not in row and new not in row
    key = Fernet.generate_key().decode()
    configured = settings.AOB_SECRETS_KEYS
    current = list(configured) or [derived_vault_key(django_settings.SECRET_KEY).decode()]
    try:
        settings.AOB_SECRETS_KEYS = [key, *current]
        crypto.fernet.cache_clear()
        call_command("aob_rotate_secrets", stdout=io.StringIO(), force=True)  # this process only
        settings.AOB_SECRETS_KEYS = [key]  # the old key dropped
        crypto.fernet.cache_clear()

        assert deliver(hook, {"n": 1}, secret=new).status_code == 202
        assert deliver(hook, {"n": 2}, secret=hook["secret"]).status_code == 202
    finally:
        settings.AOB_SECRETS_KEYS = configured
        crypto.fernet.cache_clear()


@pytest.mark.ratelimit
@pytest.mark.django_db
@pytest.mark.parametrize("replayed_id", ["a-new-id-each-time", "x" * 201])
def test_replays_of_a_captured_delivery_count_against_their_address_s_anonymous_limit(api, user, settings,
                                                                                     replayed_id):
    """A delivery that proves itself is taken out of its address's anonymous count, and a repeat is
    answered before the owner's delivery limit is counted; so a replay of one captured request
    (a new delivery id each time: answered 200, the first run; or one too long: a 400 and a refusal
    written for the owner) was counted by no limit at all: 4 replays from one address under an
    anonymous limit of 3 were all answered, each a hook lookup, two decryptions and two HMACs of
    the body (the second kind a write too), for as long as the timestamp was fresh. A replay proves
    only that someone once saw the request: it stays anonymous. New deliveries still do not count."""
    from triggers.models import HookRefusal

    settings.AOB_RATE_ANON_PER_MIN = 3
    limit = settings.AOB_RATE_ANON_PER_MIN
    hook = make_hook(api, user)
    ts = int(time.time())
    new = [deliver(hook, {"n": n}, timestamp=ts, delivery=f"real-{n}") for n in range(limit + 1)]
    assert [a.status_code for a in new] == [202] * (limit + 1)  # the control: proven, uncounted

    replays = [deliver(hook, {"n": 0}, timestamp=ts,
                       delivery=f"{replayed_id}-{i}" if len(replayed_id) < 200 else replayed_id)
               for i in range(limit + 1)]

    answered = 200 if len(replayed_id) < 200 else 400
    assert [r.status_code for r in replays] == [answered] * limit + [429], [r.json() for r in replays]
    assert replays[-1].json()["error"] == "anonymous_rate_limit_exceeded"
    assert Run.objects.count() == limit + 1
    assert HookRefusal.objects.count() == (limit if answered == 400 else 0)


@pytest.mark.ratelimit
@pytest.mark.django_db
def test_replays_of_a_captured_refused_delivery_do_not_spend_the_owners_delivery_limit(api, user, settings):
    """A repeat of an accepted delivery is answered before the owner's delivery limit is counted;
    a repeat of a refused one (its mapping failed on that body) was not recognised: each replay of
    the captured request was counted as a new delivery, so 3 replays from one address refused the
    owner's next real delivery with a 429 while the timestamp was fresh. A replay's signature proves
    only that someone once saw it: it counts against its address, not the owner, and a sender's
    retry once the owner has fixed the mapping still starts the run."""
    settings.AOB_RATE_USER_RUNS_PER_MIN = 3
    hook = make_hook(api, user, mapping={"cel": "{'ref': body.ref}"})
    ts = int(time.time())
    captured = deliver(hook, {"other": 1}, timestamp=ts, delivery="captured")
    assert captured.status_code == 400 and captured.json()["error"] == "mapping_failed", captured.json()

    replays = [deliver(hook, {"other": 1}, timestamp=ts, delivery=f"captured-{i}") for i in range(3)]
    assert [(r.status_code, r.json()["error"]) for r in replays] == [(401, "unauthorized")] * 3  # not its id

    real = deliver(hook, {"ref": "main"}, delivery="the-owners-next-real-delivery")
    assert real.status_code == 202, real.json()
    fixed = api.patch(f"/api/v1/hooks/{hook['id']}", {"mapping": {"cel": "{'ref': 'fixed'}"}}, format="json")
    assert fixed.status_code == 200
    retried = deliver(hook, {"other": 1}, timestamp=ts, delivery="captured")  # the same bytes, sent again
    assert retried.status_code == 202, retried.json()
    assert Run.objects.count() == 2


@pytest.mark.django_db
def test_a_replayed_refused_delivery_under_a_new_id_neither_runs_its_event_twice_nor_takes_a_later_id(api, user):
    """The delivery id is not signed. A refused delivery recorded none, so its captured bytes were
    judged again under any id: once the owner fixed the mapping, a replay under the id the sender
    would use next started event 41's run, the sender's own retry of 41 a second one, and the
    sender's real event 42 was answered 200 ``duplicate`` with 41's run. A signature is now bound
    to the delivery id it first came with: under another, it is a replay's 401."""
    hook = make_hook(api, user, mapping={"cel": "{'order': body.missing}"})  # the owner's mistake
    ts, raw = int(time.time()), json.dumps({"order": 7}).encode()
    captured_signature = "sha256=" + signature_for(hook["secret"], str(ts), raw)
    first = deliver(hook, raw, timestamp=ts, delivery="evt-41")  # the sender's event 41, seen by someone
    assert first.status_code == 400 and first.json()["error"] == "mapping_failed", first.json()
    fixed = api.patch(f"/api/v1/hooks/{hook['id']}", {"mapping": {"cel": "{'order': body.order}"}}, format="json")
    assert fixed.status_code == 200

    # within the tolerance, the captured bytes again, with an id the sender will use next
    replay = deliver(hook, raw, timestamp=ts, delivery="evt-42", signature=captured_signature)
    retry = deliver(hook, raw, timestamp=ts + 1, delivery="evt-41")  # the sender's retry, re-signed (as Stripe does)
    later = deliver(hook, {"order": 8}, delivery="evt-42")

    assert (replay.status_code, replay.json()) == (401, UNAUTHORIZED)
    assert retry.status_code == 202 and later.status_code == 202, (retry.json(), later.json())
    inputs = [r.inputs for r in Run.objects.filter(owner=user)]
    assert sorted(inputs, key=lambda i: i["order"]) == [{"order": 7}, {"order": 8}], inputs


@pytest.mark.django_db
def test_a_replayed_rate_limited_delivery_under_a_new_id_does_not_run_its_event_twice(api, user, settings):
    """The same with nothing for the owner to fix: a delivery the owner's limit refused (429, its
    sender to retry) was not remembered at all, so its captured bytes under a new id were a new
    delivery beside the sender's retry."""
    settings.AOB_RATE_USER_RUNS_PER_MIN = 1
    hook = make_hook(api, user)
    assert deliver(hook, {"order": 6}, delivery="evt-40").status_code == 202
    ts, raw = int(time.time()), json.dumps({"order": 7}).encode()
    captured_signature = "sha256=" + signature_for(hook["secret"], str(ts), raw)
    held = deliver(hook, raw, timestamp=ts, delivery="evt-41")
    assert held.status_code == 429, held.json()

    settings.AOB_RATE_USER_RUNS_PER_MIN = 10  # the window has room again (as a minute later)
    replay = deliver(hook, raw, timestamp=ts, delivery="evt-9000", signature=captured_signature)
    retry = deliver(hook, raw, timestamp=ts + 1, delivery="evt-41")  # the sender's retry, re-signed

    assert (replay.status_code, replay.json()) == (401, UNAUTHORIZED)
    assert retry.status_code == 202, retry.json()
    assert [r.inputs for r in Run.objects.filter(owner=user)].count({"order": 7}) == 1


@pytest.mark.django_db
@pytest.mark.parametrize(("cel", "body", "rule", "kind"), [
    ("{'queue': {'push': 'ci', 'pull_request': 'review'}[body.card]}", {"card": "4242-token-in-the-body"},
     "cel_evaluation", "KeyError"),
    ("{'wait': duration(body.card)}", {"card": "x-token-in-the-body"}, "cel_evaluation", "RuntimeError"),
    ("{'ok': 'x'.matches(body.card)}", {"card": "(4242-token-in-the-body"}, "cel.regex", None),
])
def test_a_mapping_error_recorded_for_the_owner_names_its_rule_and_never_quotes_the_body(api, user, cel, body,
                                                                                         rule, kind):
    """A refused delivery's record is "never the body" (``HookRefusal``), yet a mapping's error
    quoted CEL's text, which quotes what it read: a lookup table keyed by a body field, a
    ``duration()`` or a ``matches()`` pattern refused named the body's value to the owner's list."""
    from triggers.models import HookRefusal

    hook = make_hook(api, user, mapping={"cel": cel})

    refused = deliver(hook, body, delivery="d-1")

    assert refused.status_code == 400 and refused.json()["error"] == "mapping_failed", refused.json()
    assert refused.json()["details"] == {"field": "mapping.cel", "rule": rule}
    assert kind is None or kind in refused.json()["message"], refused.json()
    page = deliveries(api, hook)
    assert page["results"][0]["error"]["message"] == refused.json()["message"]
    assert "token-in-the-body" not in json.dumps(page), page["results"][0]["error"]
    assert "token-in-the-body" not in HookRefusal.objects.get().message


def bound_ids(hook: dict) -> list[bytes]:
    """The delivery ids the hook's signatures are bound to in Redis (``hooks._first_seen``)."""
    from aob_project import redis_client

    client = redis_client.shared()
    return [client.get(key) or b"" for key in client.scan_iter(f"aob:hook:{hook['id']}:signature-delivery:*")]


@pytest.mark.ratelimit
@pytest.mark.django_db
def test_signed_deliveries_to_a_paused_hook_count_against_a_delivery_limit(api, user, settings):
    """A new signed delivery to a paused hook proves itself (no anonymous request of its address),
    but a paused hook never reached a delivery limit: whoever holds the secret sent it any number of
    deliveries, each two HMACs, a query and a Redis key kept twice the tolerance and a minute, with no
    limit of any kind. It is counted against a limit of the hook's own, the size of the owner's."""
    settings.AOB_RATE_ANON_PER_MIN = 3
    settings.AOB_RATE_USER_RUNS_PER_MIN = 3
    hook = make_hook(api, user)
    assert api.patch(f"/api/v1/hooks/{hook['id']}", {"enabled": False}, format="json").status_code == 200

    answers = [deliver(hook, {"n": n}, delivery=f"evt-{n}-" + "x" * 150) for n in range(12)]

    assert [a.json() for a in answers[:3]] == [UNAUTHORIZED] * 3 and {a.status_code for a in answers[:3]} == {401}
    assert [(a.status_code, a.json()["error"]) for a in answers[3:]] == [(429, "user_rate_limit_exceeded")] * 9
    assert len(bound_ids(hook)) <= 2 * settings.AOB_RATE_USER_RUNS_PER_MIN, bound_ids(hook)
    assert not Run.objects.exists()


@pytest.mark.ratelimit
@pytest.mark.django_db
def test_a_paused_hook_s_refused_deliveries_do_not_refuse_the_owner_s_enabled_hook(api, user, settings):
    """An owner pauses a busy hook to stop it, and its sender sends on (GitHub, Stripe do): each
    delivery is a 401 that starts nothing, yet they were counted against the owner's delivery limit,
    which every enabled hook of the owner's shares, and the owner's live hook was refused 429 for the
    paused one's traffic. A paused hook's deliveries spend a limit of its own."""
    settings.AOB_RATE_USER_RUNS_PER_MIN = 3
    paused = make_hook(api, user)
    live = api.post("/api/v1/hooks", {"tag": "on-push"}, format="json").json()
    assert api.patch(f"/api/v1/hooks/{paused['id']}", {"enabled": False}, format="json").status_code == 200

    answers = [deliver(paused, {"n": n}) for n in range(4)]  # the paused hook's sender sends on
    lives = [deliver(live, {"n": f"live-{n}"}) for n in range(4)]

    assert [(a.status_code, a.json()) for a in answers[:3]] == [(401, UNAUTHORIZED)] * 3
    assert (answers[3].status_code, answers[3].json()["error"]) == (429, "user_rate_limit_exceeded")
    assert [a.status_code for a in lives] == [202] * 3 + [429], [a.json() for a in lives]
    assert sorted(r.inputs["n"] for r in Run.objects.filter(owner=user)) == ["live-0", "live-1", "live-2"]


@pytest.mark.django_db
def test_a_paused_hook_s_signed_delivery_binds_no_delivery_id_past_its_bound_in_redis(api, user):
    """The paused hook's branch bound a signature to its X-AOB-Delivery before any check of it (1 to
    MAX_DELIVERY_ID printable characters): one as large as the request head (64 KiB) was written to
    Redis for twice the tolerance and a minute per request. Such an id binds nothing, as on an
    enabled hook, where it is refused 400."""
    from triggers.services.hooks import MAX_DELIVERY_ID

    hook = make_hook(api, user)
    assert api.patch(f"/api/v1/hooks/{hook['id']}", {"enabled": False}, format="json").status_code == 200

    answer = deliver(hook, {"n": 1}, delivery="d" * 32_000)

    assert (answer.status_code, answer.json()) == (401, UNAUTHORIZED)
    assert all(len(value) <= MAX_DELIVERY_ID for value in bound_ids(hook)), [len(v) for v in bound_ids(hook)]
    assert bound_ids(hook) == []


@pytest.mark.ratelimit
@pytest.mark.django_db
def test_deliveries_refused_by_the_owner_s_limit_keep_no_more_in_redis_than_the_limit_lets_through(api, user,
                                                                                                   settings):
    """A delivery refused 429 by its owner's limit keeps its signature bound to its id (its bytes
    under the sender's next id are a replay), but each one did: a sender that holds the secret and
    sends on past its 429s grew Redis by a key per request. As many are kept per window as the limit
    lets through; past that, a refused one leaves nothing."""
    settings.AOB_RATE_USER_RUNS_PER_MIN = 2
    hook = make_hook(api, user)

    answers = [deliver(hook, {"n": n}, delivery=f"evt-{n}") for n in range(10)]

    assert [a.status_code for a in answers] == [202] * 2 + [429] * 8
    assert len(bound_ids(hook)) == 2 * settings.AOB_RATE_USER_RUNS_PER_MIN, bound_ids(hook)
    assert Run.objects.count() == 2
