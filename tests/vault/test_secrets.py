"""A secret used by an http node and by an agent's openapi_action reaches the remote host, and
nowhere else: not the stored inputs and outputs, the events, the run details, the logs, the admin
or the LLM request."""

from __future__ import annotations

import html
import json
import logging
from urllib.parse import quote, unquote

import pytest
from django.test import Client

from agents.models import AgentTurn
from tests.agents.flows import agent, edge, finish, http, node, start, tool_messages
from tests.conftest import client_for
from tests.support.remote import Reply
from vault.models import Secret
from workflows.models import Artifact, Event, NodeRun

VALUE = "s3cr3t-Tok/en+42=="  # a slash, a plus and '=' so the URL-encoded forms differ from the value


def test_a_secret_reaches_the_remote_host_and_appears_nowhere_else(engine, api, user, remote, fake_llm, caplog):
    caplog.set_level(logging.DEBUG)
    assert api.put("/api/v1/secrets/API_TOKEN", {"value": VALUE}, format="json").status_code == 201
    call = {"api": "remote", "operation_id": "getItem", "parameters": {"item_id": "7"}}
    fake_llm.reset([{"tool_calls": [("openapi_action", call)]}, {"content": "done"}])
    nodes = [
        http("fetch", f"{remote.base}/echo/fetch", headers={"X-Api-Key": "$secrets.API_TOKEN",
                                                          "Authorization": "Bearer ${secrets.API_TOKEN}"},
             query={"key": "$secrets.API_TOKEN"}, method="POST", payload={"token": "$secrets.API_TOKEN", "n": 1}),
        agent("read", task="summarize what fetch returned", tools=["openapi_action"],
              auth={"remote": {"headers": {"X-Api-Key": "$secrets.API_TOKEN"}}}),
    ]
    run = finish(start(api, nodes, [edge("fetch", "read")]))
    assert run.status == "completed", run.error

    # it reached the remote host, where it was meant to go, as header, query and body
    fetched = remote.hits("/echo/fetch")[0]
    assert fetched["headers"]["X-Api-Key"] == VALUE
    assert fetched["headers"]["Authorization"] == f"Bearer {VALUE}"
    assert fetched["query"]["key"] == [VALUE]
    assert json.loads(fetched["body"]) == {"token": VALUE, "n": 1}
    assert remote.hits("/echo/items/7")[0]["headers"]["X-Api-Key"] == VALUE

    # what was kept names the secret, never its value; the echoed response is masked
    fetch = NodeRun.objects.get(run=run, node_id="fetch")
    assert fetch.input["headers"] == {"X-Api-Key": "$secrets.API_TOKEN", "Authorization": "Bearer ${secrets.API_TOKEN}"}
    assert fetch.output["body"]["headers"]["X-Api-Key"] == "[secret:API_TOKEN]"
    assert "[secret:API_TOKEN]" in fetch.output["url"]

    admin = Client()
    admin.force_login(type(user).objects.create_superuser("root", "root@example.com", "pw-root-123"))
    seen = {
        "node runs": json.dumps(list(NodeRun.objects.filter(run=run).values()), default=str),
        "events": json.dumps(list(Event.objects.filter(run=run).values()), default=str),
        "journal": json.dumps(list(AgentTurn.objects.values()), default=str),
        "run details": api.get(f"/api/v1/runs/{run.pk}/details").content.decode(),
        "secrets list": api.get("/api/v1/secrets").content.decode(),
        "LLM requests": json.dumps(fake_llm.requests),
        "worker log": engine["worker"].log.read_text(errors="replace"),
        "test log": caplog.text,
        "admin run page": admin.get(f"/admin/workflows/run/{run.pk}/change/").content.decode(),
        "admin node run page": admin.get(f"/admin/workflows/noderun/{fetch.pk}/change/").content.decode(),
        "admin secret page": admin.get(f"/admin/vault/secret/{Secret.objects.get().pk}/change/").content.decode(),
        "admin secret list": admin.get("/admin/vault/secret/").content.decode(),
    }
    assert "API_TOKEN" in seen["admin secret list"] and "API_TOKEN" in seen["secrets list"]
    for where, text in seen.items():
        for form in (VALUE, "s3cr3t-Tok%2Fen%2B42%3D%3D", "s3cr3t-Tok/en%2B42%3D%3D"):
            assert form not in text, f"the secret appears in the {where}"
    # the model saw the tool's answer, masked
    assert tool_messages(fake_llm.requests[1])[0]["body"]["headers"]["X-Api-Key"] == "[secret:API_TOKEN]"


def test_a_missing_secret_fails_the_node_naming_it(engine, api, remote):
    run = finish(start(api, [http("fetch", f"{remote.base}/echo/x", headers={"X-Api-Key": "$secrets.NOPE"})]))

    assert run.status == "failed"
    assert run.error["error_type"] == "SecretMissing" and run.error["secret"] == "NOPE"
    assert not remote.hits("/echo/x")


def test_input_or_upstream_text_never_names_a_secret(engine, api, user, remote):
    """Only the author's config can name a secret: a run input that says $secrets.X is sent as text."""
    api.put("/api/v1/secrets/API_TOKEN", {"value": VALUE}, format="json")
    nodes = [http("fetch", f"{remote.base}/echo/in", headers={"X-Probe": "${inputs.probe}"})]

    run = finish(start(api, nodes, inputs={"probe": "$secrets.API_TOKEN"}))

    assert run.status == "completed"
    assert remote.hits("/echo/in")[0]["headers"]["X-Probe"] == "$secrets.API_TOKEN"


@pytest.mark.django_db
def test_secrets_are_write_only_and_encrypted_at_rest(api, user):
    created = api.put("/api/v1/secrets/DB_PASSWORD", {"value": VALUE}, format="json")
    replaced = api.put("/api/v1/secrets/DB_PASSWORD", {"value": VALUE + "2"}, format="json")
    bad_name = api.put("/api/v1/secrets/1bad", {"value": VALUE}, format="json")
    short = api.put("/api/v1/secrets/SHORT", {"value": "abc"}, format="json")

    assert created.status_code == 201 and replaced.status_code == 200
    assert set(created.json()) == {"name", "created_at", "updated_at"}
    # not a secret's name: the rule named (it was a 404 "no such endpoint")
    assert bad_name.status_code == 400 and bad_name.json()["details"] == {"field": "name", "rule": "pattern"}
    for name in ("my-key", "a%20b", "%C3%89", "A" * 65):
        assert api.put(f"/api/v1/secrets/{name}", {"value": VALUE}, format="json").json()["details"]["field"] == "name"
    assert short.status_code == 400 and short.json()["details"]["field"] == "value"
    # a word (or spaces) that ordinary text holds: every output would be masked wherever it occurs
    for weak, rule in (("1234", "min_length"), ("http", "min_length"), ("2024-12", "min_length"), (" " * 8, "blank"),
                       ("\t\n" * 8, "blank"), ("password", "common"), ("12345678", "common"),
                       ("Password ", "common")):
        refused = api.put("/api/v1/secrets/WEAK", {"value": weak}, format="json")
        assert refused.status_code == 400 and refused.json()["details"]["rule"] == rule, refused.json()
    assert api.put("/api/v1/secrets/WEAK", {"value": "2024-12!"}, format="json").status_code == 201  # eight
    row = Secret.objects.get(owner=user, name="DB_PASSWORD")
    assert VALUE not in row.ciphertext and row.ciphertext.startswith("gAAAA")  # a Fernet token
    assert api.delete("/api/v1/secrets/DB_PASSWORD").status_code == 204
    assert api.delete("/api/v1/secrets/DB_PASSWORD").status_code == 404


@pytest.mark.django_db
def test_a_secret_named_with_a_final_line_break_is_refused(user):
    """No reference can name ``X\\n`` (the pattern's ``$`` let it through; the admin and the CLI
    call the service with any text)."""
    from vault.exceptions import SecretInvalid
    from vault.services import secret_set

    with pytest.raises(SecretInvalid) as refused:
        secret_set(owner=user, name="TOKEN\n", value=VALUE)
    assert refused.value.extra == {"field": "name", "rule": "pattern"}
    # the model's own validator is that pattern too (it was a copy ending in ``$``)
    from django.core.exceptions import ValidationError

    from vault.models import Secret

    with pytest.raises(ValidationError):
        Secret(owner=user, name="TOKEN\n", ciphertext="x").full_clean()
    Secret(owner=user, name="TOKEN", ciphertext="x").full_clean()


@pytest.mark.parametrize("name", ["a%00b", "%00", "1e5"])
def test_deleting_a_secret_by_a_name_outside_the_pattern_is_a_400_naming_the_rule(api, name):
    """The URL takes any name for its service to judge: deleting was judged by no rule, a NUL reached
    PostgreSQL (a 500) and any other name was a 404 naming none."""
    api.raise_request_exception = False
    response = api.delete(f"/api/v1/secrets/{name}")

    assert response.status_code == 400, response.content[:200]
    assert response.json()["details"] == {"field": "name", "rule": "pattern"}


@pytest.mark.django_db
def test_an_agent_may_not_add_a_node_that_sends_a_secret(user):
    from workflows.services.patches import PatchRejected
    from workflows.services.patches.policy import Proposer, RunState, judge

    before = {"nodes": [{"id": "plan", "type": "agent", "config": {"task": "t"}}], "edges": []}
    exfiltrate = [{"op": "add", "path": "/nodes/-", "value": {"id": "leak", "type": "http", "config": {
        "url": "https://example.com/collect", "headers": {"X": "$secrets.API_TOKEN"}}}},
        {"op": "add", "path": "/edges/-", "value": {"from": "plan", "to": "leak"}}]

    with pytest.raises(PatchRejected) as refused:
        judge(before=before, operations=exfiltrate, proposer=Proposer(agent=True, node_id="plan"),
              state=RunState(statuses={"plan": "running"}, started=frozenset({"plan"})))

    assert refused.value.extra["rule"] == "secret_reference"


@pytest.mark.django_db
def test_a_url_may_not_refer_to_a_secret(api):
    definition = {"nodes": [{"id": "f", "type": "http", "config": {"url": "https://example.com/?k=${secrets.K}"}}]}

    response = api.post("/api/v1/workflows", {"tag_name": "leaky", "workflow": definition}, format="json")

    assert response.status_code == 400
    assert response.json()["details"]["errors"][0]["rule"] == "secret_in_url"


@pytest.mark.django_db
def test_a_node_that_sends_a_secret_names_its_host_as_written(api):
    """Where a secret goes is its author's to say. A URL whose host a run input (a webhook's caller),
    an upstream output or an agent chooses, directly or by patching the node it reads (a node that
    refers to no secret, so out of ``secret_reference``'s sight), would send the token to anyone."""
    def save(url: str, name: str, **config: object) -> object:
        prep = {"id": "prep", "type": "transform", "config": {"expression": "{'url': 'https://api.example.com/v1'}"}}
        send = {"id": "send", "type": "http", "config": {"url": url, **config}}
        definition = {"nodes": [prep, send], "edges": [{"from": "prep", "to": "send"}]}
        return api.post("/api/v1/workflows", {"tag_name": name, "workflow": definition}, format="json")

    secret = {"headers": {"Authorization": "Bearer ${secrets.API_TOKEN}"}}
    aimed = ["$nodes.prep.url", "${nodes.prep.url}", "$inputs.callback", "${inputs.base}/v1/items",
             "https://${inputs.host}/v1", "https://api.example.com${inputs.path}", "https://api.example.com:${inputs.port}/",
             "https://api.example.com\\${inputs.path}"]
    for i, url in enumerate(aimed):
        for where in (secret, {"query": {"key": "$secrets.API_TOKEN"}}, {"payload": {"token": "$secrets.API_TOKEN"}}):
            response = save(url, f"aimed-{i}", **where)
            assert response.status_code == 400, (url, where)
            assert response.json()["details"]["errors"][0]["rule"] == "secret_destination", (url, where)

    # the host as written, then references: only the path, query or fragment vary
    for i, url in enumerate(["https://api.example.com/v1/${inputs.path}", "https://api.example.com?q=${inputs.q}",
                             "https://api.example.com:8443/$filter", "https://api.example.com/v1"]):
        assert save(url, f"fixed-{i}", **secret).status_code == 201, url
    # and a node that sends no secret may go where its references say
    assert save("$nodes.prep.url", "no-secret", headers={"X-Trace": "${inputs.trace}"}).status_code == 201


def test_an_agents_answer_or_a_run_input_cannot_move_a_keyed_request_out_of_its_authors_path(
        engine, api, fake_llm, remote):
    """The host as written is not enough: ``…/tenant-a/items/${nodes.plan.message}`` took an
    injected agent's ``../../../status/200`` as the rest of its path (the client removed the dot
    segments), and a run input's ``../../tenant-b/items/9?as=admin#`` replaced the author's path and
    dropped its ``/summary``; the owner's key went with each (red team 8). A value put into the path
    is one segment, into the query one value (``outbound.templated_url``), the rule an
    ``openapi_action``'s path parameter follows; a segment references make ``.``, ``..`` or empty
    fails the node, sending nothing."""
    assert api.put("/api/v1/secrets/API_TOKEN", {"value": VALUE}, format="json").status_code == 201
    keyed = {"X-Api-Key": "$secrets.API_TOKEN"}
    fake_llm.reset([{"content": "../../../status/200"}])
    climbs = finish(start(api, [agent("plan", task="answer with the item's id only"),
                                http("fetch", f"{remote.base}/echo/tenant-a/items/" + "${nodes.plan.message}",
                                     headers=keyed)], [edge("plan", "fetch")]))
    replaces = finish(start(api, [http("fetch", f"{remote.base}/echo/tenant-a/items/" + "${inputs.id}/summary?v="
                                       + "${inputs.v}", headers=keyed)],
                            inputs={"id": "../../tenant-b/items/9?as=admin#", "v": "1&as=admin"}))
    dots = [finish(start(api, [http("fetch", f"{remote.base}/echo/tenant-a/items/" + "${inputs.id}/summary",
                                    headers=keyed)], inputs={"id": value})) for value in ("..", ".", "")]
    # decided per segment as assembled: two references, or references round a dot, that make one
    # empty or dot segment between them (``//summary``, ``/./summary``) fail the same way
    dots += [finish(start(api, [http("fetch", f"{remote.base}/echo/tenant-a/items/" + segment + "/summary",
                                     headers=keyed)], inputs={"a": "", "b": ""}))
             for segment in ("${inputs.a}${inputs.b}", "${inputs.a}.${inputs.b}")]

    assert climbs.status == replaces.status == "completed", (climbs.error, replaces.error)
    sent = [(hit["path"], hit["query"]) for hit in remote.requests if hit["headers"].get("X-Api-Key") == VALUE]
    assert sent == [("/echo/tenant-a/items/..%2F..%2F..%2Fstatus%2F200", {}),
                    ("/echo/tenant-a/items/..%2F..%2Ftenant-b%2Fitems%2F9%3Fas%3Dadmin%23/summary",
                     {"v": ["1&as=admin"]})], sent
    for run in dots:
        assert run.status == "failed"
        error = node(run, "fetch").error
        assert (error["rule"], error["sent"]) == ("url_value", False), error


@pytest.mark.django_db
def test_an_owners_secrets_are_capped_so_their_whole_list_stays_bounded(api, user, make_user, settings):
    """Hooks and schedules are capped per owner as they are listed whole; secrets were not (one day
    at the write limit stored some 36,000, and ``GET /secrets`` answered them all at once)."""
    settings.AOB_MAX_SECRETS_PER_OWNER = 3
    for name in ("A_KEY", "B_KEY", "C_KEY"):
        assert api.put(f"/api/v1/secrets/{name}", {"value": "v" * 16}, format="json").status_code == 201
    refused = api.put("/api/v1/secrets/D_KEY", {"value": "v" * 16}, format="json")
    assert refused.status_code == 400
    assert refused.json()["details"] == {"field": "name", "rule": "max_secrets", "limit": 3}
    assert api.put("/api/v1/secrets/A_KEY", {"value": "w" * 16}, format="json").status_code == 200  # a new value
    assert [s["name"] for s in api.get("/api/v1/secrets").json()] == ["A_KEY", "B_KEY", "C_KEY"]
    other = client_for(make_user("bob"))  # the cap is each owner's
    assert other.put("/api/v1/secrets/D_KEY", {"value": "v" * 16}, format="json").status_code == 201
    api.delete("/api/v1/secrets/B_KEY")
    assert api.put("/api/v1/secrets/D_KEY", {"value": "v" * 16}, format="json").status_code == 201


@pytest.mark.django_db
def test_the_admin_sets_a_secret_through_the_service_and_its_rules(user, settings):
    """The admin wrote the ciphertext itself: no cap, and the service's rules unchecked there."""
    settings.AOB_MAX_SECRETS_PER_OWNER = 1
    admin = Client()
    admin.force_login(type(user).objects.create_superuser("root", "root@example.com", "pw-root-123"))
    made = admin.post("/admin/vault/secret/add/", {"owner": user.pk, "name": "FIRST", "value": "v" * 16})
    assert made.status_code == 302
    refused = admin.post("/admin/vault/secret/add/", {"owner": user.pk, "name": "SECOND", "value": "v" * 16},
                         follow=True)
    assert "An owner has at most 1 secrets (AOB_MAX_SECRETS_PER_OWNER)" in refused.content.decode()
    assert list(Secret.objects.values_list("name", flat=True)) == ["FIRST"]
    secret = Secret.objects.get()
    assert admin.post(f"/admin/vault/secret/{secret.pk}/change/", {"value": "w" * 16}).status_code == 302
    from vault.services import secret_values
    assert secret_values(owner_id=user.pk, names={"FIRST"}) == {"FIRST": "w" * 16}


def test_a_secret_echoed_back_as_a_number_is_masked(engine, api, remote):
    """A PIN or an account number sent in JSON text the author wrote comes back from a remote that
    parsed it as a number: kept as it came, the run's readers (approvers, later agents, the hosts
    those send to) read it, and its content-addressed artifact confirms a guessed PIN by hashing."""
    api.put("/api/v1/secrets/PIN", {"value": "48151623"}, format="json")
    nodes = [http("check", f"{remote.base}/echo/pin", method="POST", payload='{"pin": ${secrets.PIN}}')]

    run = finish(start(api, nodes))

    assert run.status == "completed", run.error
    assert json.loads(remote.hits("/echo/pin")[0]["body"]) == {"pin": 48151623}
    check = NodeRun.objects.get(run=run, node_id="check")
    assert check.output["body"]["json"] == {"pin": "[secret:PIN]"}
    kept = json.dumps([check.output, Artifact.objects.get(pk=check.output_artifact_id).content])
    assert "48151623" not in kept


def test_a_secret_a_remote_url_encodes_with_another_library_is_masked(engine, api, remote):
    """A remote that puts the token it was sent into a link (a ``next`` URL, a redirect's Location)
    encodes it as its own library does. Only the two forms Python's ``quote(safe="")`` and
    ``quote_plus`` make were masked: the others were kept, for the run's readers (approvers, the
    agents after it, their LLM provider) to read."""
    value = "Tok/en+42 ~*(x)=="
    api.put("/api/v1/secrets/LINK_TOKEN", {"value": value}, format="json")
    forms = {
        "python quote()": "Tok/en%2B42%20~%2A%28x%29%3D%3D",
        "javascript encodeURIComponent": "Tok%2Fen%2B42%20~*(x)%3D%3D",
        "java URLEncoder": "Tok%2Fen%2B42+%7E*%28x%29%3D%3D",
        "lowercase hex (.NET)": "Tok%2fen%2b42+~%2a%28x%29%3d%3d",
    }
    remote.script("links", [{name: f"https://api.example/next?token={form}" for name, form in forms.items()}])
    nodes = [http("list", f"{remote.base}/seq/links", headers={"X-Api-Key": "$secrets.LINK_TOKEN"})]

    run = finish(start(api, nodes))

    assert run.status == "completed", run.error
    links = NodeRun.objects.get(run=run, node_id="list").output["body"]
    assert links == {name: "https://api.example/next?token=[secret:LINK_TOKEN]" for name in forms}


def test_a_query_secret_a_login_redirect_encodes_again_in_its_next_url_is_masked(engine, api, remote, fake_llm):
    """An API behind Django's ``login_required`` (or Flask-Login) answers a request it does not take
    with ``302 /login?next=<the full path, URL-encoded>``: the key the node sent in its query, already
    URL-encoded there, is encoded once more (``%2B`` as ``%252B``). The client follows the same-origin
    redirect and the node's output keeps the final URL: the key, twice encoded, was kept as it came,
    for the run's readers (approvers, the agent after it, its LLM provider) to read with two unquotes
    (a red-team helper's find)."""
    value = "AbC+dEf/gh42=="  # a base64 API key: '+', '/' and '=' are escaped in a URL
    assert api.put("/api/v1/secrets/API_KEY", {"value": value}, format="json").status_code == 201
    sent_path = "/seq/data?api_key=" + quote(value, safe="")  # as httpx sends a query
    location = "/echo/login?next=" + quote(sent_path, safe="/")  # django.contrib.auth.views.redirect_to_login
    remote.script("data", [Reply(302, {}, (("Location", location),))])
    fake_llm.reset([{"content": "done"}])
    nodes = [http("fetch", f"{remote.base}/seq/data", query={"api_key": "$secrets.API_KEY"}),
             agent("read", task="summarize what fetch returned", tools=[])]

    run = finish(start(api, nodes, [edge("fetch", "read")]))

    assert run.status == "completed", run.error
    assert remote.hits("/seq/data")[0]["query"]["api_key"] == [value]  # it went where it was meant to
    assert remote.hits("/echo/login")  # and the redirect was followed
    fetch = NodeRun.objects.get(run=run, node_id="fetch")
    assert fetch.output["url"].endswith("/echo/login?next=/seq/data%3Fapi_key%3D[secret:API_KEY]")
    kept = {"output": json.dumps(fetch.output),
            "events": json.dumps(list(Event.objects.filter(run=run).values("data")), default=str),
            "LLM request": json.dumps(fake_llm.requests)}
    assert fake_llm.requests, "the agent after fetch asked its provider"
    leaked = [where for where, text in kept.items() if value in unquote(unquote(text))]
    assert leaked == [], f"the key, URL-encoded twice, is kept in: {leaked}"


def test_a_secret_a_remote_echoes_html_escaped_or_json_escaped_by_another_encoder_is_masked(engine, api, remote):
    """A login page that fills its form in again, or an error page quoting what it was sent, writes
    the secret HTML-escaped, or as another JSON encoder escapes it inside text it keeps: each was kept
    as it came, for the run's readers and the agents after it (a red-team helper's find)."""
    value = "Pa/ss&w0rd<Zq>+9\"'"
    assert api.put("/api/v1/secrets/LOGIN", {"value": value}, format="json").status_code == 201
    forms = {
        "html (Python, Django)": html.escape(value),
        "html (PHP 8.1)": html.escape(value).replace("&#x27;", "&#039;"),
        "html (older PHP, Java)": html.escape(value).replace("&#x27;", "'"),
        "html (Jinja, Go)": html.escape(value).replace("&quot;", "&#34;").replace("&#x27;", "&#39;"),
        "php json_encode": json.dumps(value)[1:-1].replace("/", "\\/"),
        "go encoding/json": json.dumps(value)[1:-1].replace("&", "\\u0026").replace("<", "\\u003c")
        .replace(">", "\\u003e"),
    }
    remote.script("login", [{name: f'<input name="password" value="{form}">' for name, form in forms.items()}])
    nodes = [http("login", f"{remote.base}/seq/login", method="POST", payload={"password": "$secrets.LOGIN"})]

    run = finish(start(api, nodes))

    assert run.status == "completed", run.error
    assert json.loads(remote.hits("/seq/login")[0]["body"]) == {"password": value}
    login = NodeRun.objects.get(run=run, node_id="login")
    assert login.output["body"] == {name: '<input name="password" value="[secret:LOGIN]">' for name in forms}
    assert Artifact.objects.get(pk=login.output_artifact_id).content["body"] == login.output["body"]


def test_a_digit_secret_a_remote_answers_as_a_number_without_its_leading_zeros_is_masked(engine, api, remote):
    """An account number sent as the text its author wrote and answered as the number a typed field
    read it as loses its leading zeros: the rest of it was kept. Only a number is read so, and only
    from six digits on: text keeps its figures, and shorter numbers their own (a node's duration_ms)."""
    api.put("/api/v1/secrets/ACCOUNT", {"value": "00481516"}, format="json")
    remote.script("account", [{"account": 481516, "balance": 12, "note": "ref 481516"}])
    nodes = [http("check", f"{remote.base}/seq/account", method="POST", payload={"account": "$secrets.ACCOUNT"})]

    run = finish(start(api, nodes))

    assert run.status == "completed", run.error
    body = NodeRun.objects.get(run=run, node_id="check").output["body"]
    assert body == {"account": "[secret:ACCOUNT]", "balance": 12, "note": "ref 481516"}


def test_a_secret_a_header_cannot_carry_fails_the_node_naming_the_header_never_the_value(engine, api, remote):
    """httpx sends header values as ASCII: a secret with an umlaut crashed the node with a
    UnicodeEncodeError that quoted a character of it and its position, in the node's error (the run
    page, its approvers) and the worker's log, and told nobody what to do."""
    value = "Köln-Token-42"
    api.put("/api/v1/secrets/PASSWORD", {"value": value}, format="json")
    nodes = [http("login", f"{remote.base}/echo/login", headers={"X-Password": "$secrets.PASSWORD"})]

    run = finish(start(api, nodes))

    assert run.status == "failed"
    login = NodeRun.objects.get(run=run, node_id="login")
    assert (login.error["error_type"], login.error["rule"], login.error["header"]) == (
        "InvalidHeader", "header_value", "X-Password")
    assert not remote.hits("/echo/login")
    seen = json.dumps([login.error, list(Event.objects.filter(run=run).values("data"))]) + engine["worker"].log.read_text(
        errors="replace")
    for char in ("ö", "\\xf6", "\\u00f6"):
        assert char not in seen, char


def test_a_secret_encrypted_with_a_key_no_longer_configured_fails_the_node_saying_so(engine, api, user, remote):
    """After a key was dropped before ``aob_rotate_secrets`` re-encrypted everything, a node using a
    secret under it failed as ``InvalidToken: InvalidToken``: nothing a person could act on."""
    from cryptography.fernet import Fernet

    Secret.objects.create(owner=user, name="LEGACY", ciphertext=Fernet(Fernet.generate_key()).encrypt(b"old-token").decode())
    nodes = [http("call", f"{remote.base}/echo/legacy", headers={"X-Api-Key": "$secrets.LEGACY"})]

    run = finish(start(api, nodes))

    assert run.status == "failed"
    error = NodeRun.objects.get(run=run, node_id="call").error
    assert (error["error_type"], error["secret"], error["transient"]) == ("SecretUnreadable", "LEGACY", False)
    assert "AOB_SECRETS_KEYS" in error["message"] and "aob_rotate_secrets" in error["message"]
    assert not remote.hits("/echo/legacy")
