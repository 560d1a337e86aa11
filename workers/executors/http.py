"""``http``: one request through the SSRF-safe client (workers/http)."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from aob_project.exceptions import AobError
from workers.executors.outbound import LITERAL_ORIGIN, literal_url_problems, templated_url
from workers.http import idempotency
from workers.http.exceptions import DNSResolutionFailed, HTTPRequestError
from workflows.definition.references import TEMPLATE, resolve
from workflows.engine.execution import LOST, NOT_TRIED, SENT_AGAIN, answered
from workflows.engine.outputs import OUTPUT_MAX_DEPTH, depth_within
from workflows.registry import NodeContext, NodeFailed, Repeats, executor

CONFIG_SCHEMA = {
    "type": "object",
    "required": ["url"],
    "properties": {
        "url": {"type": "string", "minLength": 1},
        "method": {"type": "string", "enum": ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD",
                                              "get", "post", "put", "patch", "delete", "head"]},
        "headers": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}},
        "query": {"type": "object"},
        "payload": {"type": ["object", "array", "string"]},
        "timeout_ms": {"type": "integer", "minimum": 1, "maximum": 600000,
                       "description": "the request's deadline; the operator's AOB_HTTP_TIMEOUT_S caps it"},
        "fail_on_status": {"type": "boolean"},
        "max_response_bytes": {"type": "integer", "minimum": 1},
        # The header that carries the node's idempotency key (workers/http/idempotency.py); null or
        # false sends none.
        "idempotency_header": {"anyOf": [{"type": "string", "minLength": 1, "maxLength": 100},
                                         {"enum": [None, False]}]},
        # After a worker died mid-request: send again (same key) or fail as OutcomeUnknown.
        "on_lost": {"enum": ["repeat", "fail"]},
    },
    "additionalProperties": False,
}

logger = logging.getLogger(__name__)


def check_config(config: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Literal headers are judged at save; templated values again by the client when they are final."""
    from vault.references import has_reference
    from workers.http import header_problem

    problems = []
    url = config.get("url")
    if has_reference(url):
        problems.append(("/url", "secret_in_url", "a URL may not refer to $secrets (it is logged and kept in outputs); "
                         "put the secret in query or headers"))
    elif (isinstance(url, str) and "$" in url and not LITERAL_ORIGIN.match(url)
          and has_reference([config.get(k) for k in SECRET_FIELDS])):
        problems.append(("/url", "secret_destination", "a node that sends $secrets names its host as written: "
                         "scheme://host[:port] then /, ? or # before any reference (a host an input, an upstream "
                         "output or an agent chooses could be anyone's)"))
    key_header = config.get("idempotency_header")
    key_problem = header_problem(key_header) if isinstance(key_header, str) and "$" not in key_header else None
    if key_problem is not None:
        problems.append(("/idempotency_header", *key_problem))
    headers = config.get("headers")
    for name, value in (headers.items() if isinstance(headers, dict) else []):
        problem = header_problem(name, value if isinstance(value, str) and "$" not in value else "")
        if problem is not None:
            problems.append((f"/headers/{_escape(name)}", *problem))
    return problems


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _text_values(mapping: dict[str, Any] | None) -> dict[str, str]:
    """Header and query values as text; a value that resolved to nothing is left out, not sent as "null"."""
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in (mapping or {}).items() if v is not None}


def _repeats(config: dict[str, Any]) -> Repeats:
    """Whether this request is sent again when its outcome is unknown (a lost worker, a timeout
    once sent, a 5xx), whether a status fails it for the node's retry, and what the remote knows a
    repeat by: its method and the header its key goes in (``registry.repeats``)."""
    method = str(config.get("method", "GET")).upper()
    key_header = config.get("idempotency_header", idempotency.HEADER) or None
    return Repeats((idempotency.repeats_when_lost(method, config.get("on_lost"), bool(key_header)),
                    bool(config.get("fail_on_status"))), (method, str(key_header).lower() if key_header else None))


def _limits(config: dict[str, Any]) -> dict[str, int | None]:
    """The bounds a person sets on a request, lower tighter (``registry.limits``): its deadline and
    the answer's size, as the config says them (absent: the operator's ceiling)."""
    # read as the client reads them: the schema's integer takes 1000.0 too
    return {f"config.{name}": int(value) if isinstance(value := config.get(name), int | float)
            and not isinstance(value, bool) and math.isfinite(value) else None
            for name in ("timeout_ms", "max_response_bytes")}


@executor("http", config_schema=CONFIG_SCHEMA, check=check_config, check_outbound=literal_url_problems,
          repeats=_repeats, limits=_limits, answers_outside=True, sends=idempotency.REQUEST_FIELDS,
          description="Calls a URL (SSRF-safe) and outputs {status, status_code, headers, body, duration_ms, url, "
          "method}; 4xx/5xx complete unless fail_on_status (then 408/425/429 and a 503 with Retry-After, and "
          "500/502/503/504 where a repeat is safe, are retried by the node's retry, no sooner than the answer's "
          "Retry-After).")
def run_http(ctx: NodeContext) -> dict[str, Any]:
    from vault.references import SecretBox, has_reference

    ctx = _with_url(ctx)
    if not has_reference([ctx.raw_config.get(k) for k in SECRET_FIELDS]):
        return _run_http(ctx, ctx.config)
    # $secrets.NAME: the values are put in here, at send time, and masked out of what is kept.
    box = SecretBox(ctx.owner_id)
    with box.active():
        config = dict(ctx.config)
        try:
            for key in SECRET_FIELDS:
                if key in ctx.raw_config:
                    config[key] = box.render(ctx.raw_config[key], ctx.config.get(key), lambda text: resolve(
                        text, inputs=ctx.inputs, outputs=ctx.outputs))
        except NodeFailed as exc:  # a secret missing or unreadable: nothing was sent (``NodeRun.acted``)
            exc.extra.setdefault("sent", False)
            raise
        try:
            return box.mask(_run_http(ctx, config))
        except AobError as exc:
            raise box.masked(exc) from None


# Where an http node may refer to secrets; the URL may not (it is logged, and shown in outputs).
SECRET_FIELDS = ("headers", "query", "payload")


def _with_url(ctx: NodeContext) -> NodeContext:
    """The node's context with its URL as ``outbound.templated_url`` fills the author's ``${…}``: a
    value in the path is one segment, in the query one value, on every http node (an agent's answer
    or a run's input cannot move the request, and the owner's $secrets with it, to another path of
    the host). A URL that is one reference (``$inputs.url``) is that value, as resolved."""
    raw = ctx.raw_config.get("url")
    if not isinstance(raw, str) or not TEMPLATE.search(raw):
        return ctx
    try:
        url = templated_url(raw, lambda ref: resolve(ref, inputs=ctx.inputs, outputs=ctx.outputs), TEMPLATE)
    except ValueError as exc:
        raise NodeFailed(f"the url's {exc}: not sent", code="ConfigInvalid",
                         extra={"path": "/url", "rule": "url_value", "transient": False, "sent": False}) from None
    return dataclasses.replace(ctx, config={**ctx.config, "url": url})


def _run_http(ctx: NodeContext, config: dict[str, Any]) -> dict[str, Any]:
    method = str(config.get("method", "GET")).upper()
    payload = config.get("payload")
    timeout_ms = config.get("timeout_ms")
    key_header = config.get("idempotency_header", idempotency.HEADER) or None
    repeats = _repeats(config).flags[0]
    lost = _lost_before(ctx) if not repeats else None
    if lost is not None:
        raise _outcome_unknown(method, config, "the worker running the previous attempt stopped mid-request", lost)
    keyed = None
    if idempotency.decided_by_request(method, key_header):
        # the request as resolved (its $secrets as written) is kept first: what a replay compares its own with
        ctx, keyed = idempotency.decided_before_acting(ctx)
        if keyed is not None:  # which key a replay's request carried, and why, for a person to read
            logger.info("http.idempotency_key", extra={"key_run": keyed["run"], "why": keyed["why"]})
    try:
        return _sent(ctx, config, method, payload, timeout_ms, key_header, repeats)
    except AobError as exc:
        if keyed is not None:
            exc.extra["idempotency_key"] = keyed
        raise


def _sent(ctx: NodeContext, config: dict[str, Any], method: str, payload: Any, timeout_ms: int | None,
          key_header: str | None, repeats: bool) -> dict[str, Any]:
    try:
        result = _request(config, method, payload, timeout_ms, key_header, ctx)
    except (HTTPRequestError, DNSResolutionFailed) as exc:
        # a timeout or a dropped connection after the request went out (or a redirect to a name that
        # does not resolve, after an answer) is the same unknown as a lost worker: the node's retry
        # sent a POST without a key again, and the remote applied both
        if exc.transient and exc.extra.get("sent") and not repeats:
            raise _outcome_unknown(method, config, f"the request failed after it was sent ({exc.message})",
                                   ctx.attempt) from None
        raise
    except SoftTimeLimitExceeded:  # the node's timeout_ms, maybe mid-request
        if not repeats:
            raise _outcome_unknown(method, config, "the node's timeout_ms stopped it, maybe mid-request",
                                   ctx.attempt) from None
        raise
    answered()  # the node's timeout_ms from here on (its output made, masked, checked) sends nothing again
    return _output(config, method, key_header, repeats, result, ctx)


def _output(config: dict[str, Any], method: str, key_header: str | None, repeats: bool, result: Any,
            ctx: NodeContext) -> dict[str, Any]:
    """The node's output from the answer, or the failure a status is where ``fail_on_status``."""
    # JSON the engine can store and every reader read back (outputs.OUTPUT_MAX_DEPTH), else its text
    parsed = result.json_body is not None and depth_within(result.json_body, OUTPUT_MAX_DEPTH - 1)
    body = result.json_body if parsed else result.text
    output = {
        "status": "success" if result.status_code < 400 else "error",
        "status_code": result.status_code,
        "headers": result.headers,
        "body": body,
        "duration_ms": result.duration_ms,
        "url": result.url,
        "method": method,
    }
    if config.get("fail_on_status") and result.status_code >= 400:
        # "not now" (429, a 503 with Retry-After, ...) is worth the node's retry, after the answer's
        # Retry-After; an unknown outcome (500, 502, 503, 504) only where a lost attempt would be sent again
        # after a redirect the status is its target's, and the request itself was answered (the
        # remote had it): sent again only where a lost one would be
        wait = idempotency.retry_after_seconds(result.headers)
        again = (idempotency.repeats_after(result.status_code, wait, method, config.get("on_lost"), bool(key_header))
                 and (repeats or not result.redirect_urls))
        via = f"{method} {config['url']} was redirected: " if result.redirect_urls else ""
        # ``answered``: the remote's own answer to this request says what came of it (a 4xx:
        # ``idempotency.outcome_answered``; not a redirect's target after the request was taken): a
        # replay sends it as new work, under a new key (``NodeRun.unsettled``), where a remote
        # keeping answers by key would answer the same failure again. Not any answer after an
        # earlier attempt whose outcome is unknown: the first may yet take effect
        answered = (idempotency.outcome_answered(result.status_code, bool(key_header)) and not result.redirect_urls
                    and not _unknown_before(ctx))
        raise NodeFailed(f"{via}{result.method} {result.url} answered {result.status_code}", code="HTTPStatusError",
                         extra={"status_code": result.status_code, "body": body if len(str(body)) < 2000 else None,
                                "transient": again, **({"retry_after_seconds": wait} if again and wait is not None
                                                       else {}), **({"answered": True} if answered else {})})
    return output


def _request(config: dict[str, Any], method: str, payload: Any, timeout_ms: int | None, key_header: str | None,
             ctx: NodeContext) -> Any:
    from workers.http.client import request

    return request(
        method=method,
        url=str(config["url"]),
        headers=idempotency.with_key(_text_values(config.get("headers")), key_header, idempotency.effect_key(ctx)),
        params=_text_values(config.get("query")) or None,
        # validated before resolution: a whole reference may resolve to a number or boolean
        json=payload if not isinstance(payload, str) else None,
        content=payload if isinstance(payload, str) else None,
        timeout_s=(timeout_ms / 1000) if timeout_ms else None,
        max_response_bytes=config.get("max_response_bytes"),
    )


def _outcome_unknown(method: str, config: dict[str, Any], why: str, attempt: int) -> NodeFailed:
    """The failure of a request this node does not send again (``idempotency.repeats_when_lost``)
    when whether it took effect is unknown: final, for a person to replay or skip."""
    return NodeFailed(f"{why}: whether {method} {config['url']} took effect is unknown, and this node does not "
                      "repeat it (on_lost: fail, or no idempotency key); replay or skip it",
                      code="OutcomeUnknown", extra={"transient": False, "attempt": attempt})


def _lost_before(ctx: NodeContext) -> int | None:
    """The attempt before this one when it was lost: claimed, and its worker died before it
    finished (the sweeper logged it ``lost``), claims given back unrun left out (``_tried_before``)."""
    tried = _tried_before(ctx)
    last = tried[-1] if tried else None
    if isinstance(last, dict) and last.get("status") == LOST:
        return last.get("attempt") if isinstance(last.get("attempt"), int) else ctx.attempt - 1
    return None


def _unknown_before(ctx: NodeContext) -> bool:
    """Whether an earlier attempt of this request left unknown whether it took effect: its worker
    lost, its timeout, a send cut off, a 5xx. Known are only an answer its remote gave to it
    (``answered``) and a failure before anything was sent (``sent``: false). A node run that goes
    on with another run's unsettled work under that run's key (``ctx.goes_on``: a replay's) repeats
    a request whose outcome is unknown there (``NodeRun.unsettled``), whatever its own log says."""
    return ctx.goes_on or any(not isinstance(past, dict) or past.get("status") not in NOT_TRIED and not (
        isinstance(error := past.get("error"), dict) and (error.get("answered") is True or error.get("sent") is False))
        for past in _tried_before(ctx))


def _tried_before(ctx: NodeContext) -> list[Any]:
    """This node run's earlier attempts as its log has them, less the claims given back unrun
    (``execution.send_again``: its timeout_ms patched while it was queued), which sent nothing."""
    if ctx.attempt <= 1:
        return []
    from workflows.models import NodeRun

    log = NodeRun.objects.filter(pk=ctx.node_run_id).values_list("attempt_log", flat=True).first() or []
    return [past for past in log if not (isinstance(past, dict) and past.get("status") == SENT_AGAIN)]
