"""``openapi_action``: call an operation, by ``operationId``, of an OpenAPI document registered in
settings (``AOB_OPENAPI_SPECS``), through the SSRF-safe client."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from django.conf import settings

from agents.exceptions import ToolError
from aob_project.exceptions import AobError
from vault.references import SecretBox
from workers.executors.outbound import DOT_SEGMENT, path_segment
from workers.http import idempotency, request
from workflows import egress
from workflows.definition.references import resolve

from .base import AgentState

DESCRIPTION = ("Call an operation of a registered OpenAPI API: {api, operation_id, parameters (path and query), "
               "body}. Returns the status code and the response body.")

PARAMETERS = {
    "type": "object",
    "properties": {
        "api": {"type": "string"},
        "operation_id": {"type": "string"},
        "parameters": {"type": "object"},
        "body": {},
    },
    "required": ["api", "operation_id"],
}

METHODS = ("get", "post", "put", "patch", "delete", "head")
PLACEHOLDER = re.compile(r"\{[^{}/]*\}")


@cache
def _load(source: str) -> dict[str, Any]:
    """The registered document, kept for the process's life once it has loaded. Only then: a
    failure raises, and ``functools.cache`` keeps no exception, so the next call fetches again
    (a 503 of the API's host was kept as the document, and every call answered "no operation"
    until the worker restarted). The document is the operator's registration, kept for every run
    the process serves: fetched outside the run's ``allowed_hosts`` (``workflows.egress``), which
    bound the API calls themselves, else it loaded or not by which run a worker first served."""
    if _remote(source):
        with egress.only(()):
            try:
                result = request(method="GET", url=source)
            except AobError as exc:  # the document's request went out, not the operation's (agents.loop._sent)
                exc.extra.pop("sent", None)
                raise
        if not result.ok:
            raise ToolError(f"the API's OpenAPI document could not be loaded: its host answered {result.status_code}; "
                            "try again later", extra={"status_code": result.status_code,
                                                      "transient": result.status_code in (408, 429)
                                                      or result.status_code >= 500})
        spec = result.json_body
    else:
        spec = json.loads(Path(source).read_text())
    if not isinstance(spec, dict) or not isinstance(spec.get("paths"), dict):
        raise ToolError("the API's OpenAPI document could not be loaded: it is not a JSON object with `paths`",
                        extra={"transient": False})
    return spec


def _operation(spec: dict[str, Any], operation_id: str) -> tuple[str, str, list[dict[str, Any]]]:
    """The operation's method, path template and parameters. What is not shaped as OpenAPI says
    (a document's host wrote it) is skipped while searching, and a tool error once it is used."""
    for path, item in spec["paths"].items():
        if not isinstance(item, dict):
            continue
        for method in METHODS:
            op = item.get(method)
            if isinstance(op, dict) and op.get("operationId") == operation_id:
                return method.upper(), path, _parameters(spec, item, op)
    raise ToolError(f"no operation {operation_id!r} in this API")


PARAMETER_REF = "#/components/parameters/"


def _parameters(spec: dict[str, Any], item: dict[str, Any], op: dict[str, Any]) -> list[dict[str, Any]]:
    """The path item's parameters, then the operation's in their place (same name and location), as
    OpenAPI declares them; each ``$ref`` to ``#/components/parameters/<name>`` is read one step (a
    reference to a reference is refused: no cycle to follow)."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for declared in (item.get("parameters"), op.get("parameters")):
        if declared is None:
            continue
        if not isinstance(declared, list):
            raise ToolError("the API's OpenAPI document lists parameters that are not an array")
        for parameter in declared:
            parameter = _followed(spec, parameter)
            merged[(parameter["name"], parameter["in"])] = parameter
    return list(merged.values())


def _followed(spec: dict[str, Any], parameter: Any) -> dict[str, Any]:
    if isinstance(parameter, dict) and isinstance(parameter.get("$ref"), str):
        ref = parameter["$ref"]
        components = spec.get("components")
        found = components.get("parameters") if isinstance(components, dict) else None
        parameter = (found.get(ref[len(PARAMETER_REF):]) if ref.startswith(PARAMETER_REF) and isinstance(found, dict)
                     else None)
        if not isinstance(parameter, dict) or "$ref" in parameter:
            raise ToolError(f"the API's OpenAPI document refers to parameter {ref[:200]!r}, which cannot be "
                            f"followed (only {PARAMETER_REF}<name>, one step)")
    if not (isinstance(parameter, dict) and isinstance(parameter.get("name"), str)
            and parameter.get("in") in ("path", "query", "header", "cookie")):
        raise ToolError("the API's OpenAPI document declares a parameter that is not an object with a name and "
                        "a location (in)")
    return parameter


def _remote(source: Any) -> bool:
    return isinstance(source, str) and source.startswith(("http://", "https://"))


def registration_problem(registered: Any) -> str | None:
    """What is wrong with one entry of ``AOB_OPENAPI_SPECS`` (a start-up check, ``agents.checks``),
    or None. A remote document needs a ``base_url``: the node's ``auth`` (``$secrets`` too) goes to
    where the API is, and without one the document's first server said where, so its host, or
    anyone on the way to an ``http://`` one, chose where the owner's credentials went."""
    if not isinstance(registered, dict) or not isinstance(registered.get("spec"), str):
        return "each API is an object with its document's path or URL in `spec`"
    base = registered.get("base_url")
    if base is not None and not _remote(base):
        return "`base_url` is the API's http:// or https:// URL"
    if base is None and _remote(registered["spec"]):
        return ("a remote document needs the API's `base_url`: the node's credentials are sent there, never "
                "where the document's servers say")
    return None


def _base(registered: dict[str, Any], spec: dict[str, Any]) -> str:
    """Where the API is: its ``base_url``, else (a document of the operator's own, on disk) its
    first server; a remote document's servers never decide (``registration_problem``)."""
    if registered.get("base_url") or _remote(registered.get("spec")):
        return str(registered.get("base_url") or "")
    servers = spec.get("servers")
    first = servers[0] if isinstance(servers, list) and servers else None
    url = first.get("url") if isinstance(first, dict) else None
    return url if isinstance(url, str) else ""


def _at_base(base: str, path: str) -> str:
    """The operation's URL: ``path`` under ``base``, never past it. A remote document's path is its
    host's words: ``.attacker.net/x`` joined to ``https://api.example.com`` named another host,
    ``:9999/x`` another port, and the node's ``auth`` went there; ``/../x`` (or ``%2e%2e``, which a
    server may decode) climbed out of the base URL's path, to what the same host serves beside it."""
    url = base.rstrip("/") + path
    if (not path.startswith("/") or path.startswith("//") or _origin(url) != _origin(base)
            or DOT_SEGMENT.search(unquote(path.split("?", 1)[0].split("#", 1)[0]))):
        raise ToolError(f"the API's OpenAPI document has a path {path[:200]!r} that leaves its base URL "
                        f"{base!r}: not sent", extra={"transient": False})
    return url


def _origin(url: str) -> tuple[str, str, int | None]:
    try:
        parts = urlsplit(url)
        return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port
    except ValueError:  # a port that is not one
        return "", "", None


def run(state: AgentState, args: dict[str, Any]) -> dict[str, Any]:

    registered = settings.AOB_OPENAPI_SPECS.get(str(args.get("api")))
    if not registered:
        raise ToolError(f"unknown api {args.get('api')!r}; registered: {sorted(settings.AOB_OPENAPI_SPECS)}")
    spec = _load(registered["spec"])
    method, path, declared = _operation(spec, str(args["operation_id"]))
    params = dict(args.get("parameters") or {})
    query: dict[str, str] = {}
    for p in declared:
        name, where = p.get("name"), p.get("in")
        if name not in params:
            if p.get("required"):
                raise ToolError(f"parameter {name!r} ({where}) is required")
            continue
        value = params.pop(name)
        value = value if isinstance(value, str) else json.dumps(value)  # true, not Python's True
        if where == "path":
            try:  # one segment, as an http node's ${…} in its URL's path (the one rule)
                segment = path_segment(value)
            except ValueError as exc:
                raise ToolError(f"path parameter {name!r} {exc}") from None
            path = path.replace("{" + name + "}", segment)
        elif where == "query":
            query[name] = value
    left = PLACEHOLDER.search(path)
    if left:  # a path parameter the document does not declare, or one not given: the template, unfilled
        raise ToolError(f"path parameter {left.group()!r} of this operation has no value")
    base = _base(registered, spec)
    url = _at_base(base, path)
    body = args.get("body")
    # The node's credentials for this API (``auth``), with $secrets.NAME put in only here, at send
    # time; the result the model reads (and the journal keeps) has them masked.
    ctx = state.ctx
    raw_auth = (ctx.raw_config.get("auth") or {}).get(str(args.get("api"))) or {}
    resolved_auth = (ctx.config.get("auth") or {}).get(str(args.get("api"))) or {}
    box = SecretBox(ctx.owner_id)
    with box.active():
        def text(fragment: str) -> Any:
            return resolve(fragment, inputs=ctx.inputs, outputs=ctx.outputs)

        headers = box.render(raw_auth.get("headers") or {}, resolved_auth.get("headers") or {}, text)
        query.update(box.render(raw_auth.get("query") or {}, resolved_auth.get("query") or {}, text))
        try:
            headers = idempotency.with_key(headers, idempotency.HEADER,
                                           idempotency.effect_key(ctx, "tool", state.call_key))
            result = request(method=method, url=url, params=query or None, headers=headers,
                             json=body if isinstance(body, dict | list) else None)
        except AobError as exc:
            raise box.masked(exc) from None
        return box.mask({"status": "success" if result.status_code < 400 else "error",
                         "status_code": result.status_code,
                         "body": result.json_body if result.json_body is not None else result.text})
