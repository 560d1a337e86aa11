"""``execute_pipeline``: fetch (through the SSRF-safe client) and reshape tabular data."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings

from agents.exceptions import ToolError
from aob_project.exceptions import AobError
from workers.http import idempotency, request

from .base import AgentState

DESCRIPTION = ("Run data steps in order: http_request {url, method?, headers?, payload?} loads JSON; "
               "table_sort {by, descending?} (or {field, order: asc|desc}); "
               "table_filter {field, operator (== != > >= < <= contains), value}; "
               "table_select {fields}; top_k {k}. Optional initial `data` (a list of objects). "
               "A field a step does not know is an error.")

OPS_NAMES = ("==", "!=", ">", ">=", "<", "<=", "contains")

# The fields each step takes ("op" aside). ``field`` and ``order`` on table_sort are the original
# system's names for ``by`` and ``descending``.
STEP_FIELDS = {
    "http_request": {"url", "method", "headers", "payload"},
    "table_sort": {"by", "descending", "field", "order"},
    "table_filter": {"field", "operator", "value"},
    "table_select": {"fields"},
    "top_k": {"k"},
}

PARAMETERS = {
    "type": "object",
    "properties": {
        "data": {"type": "array", "items": {"type": "object"}},
        "steps": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "op": {"type": "string", "enum": list(STEP_FIELDS)},
                    "url": {"type": "string"}, "method": {"type": "string"}, "headers": {"type": "object"},
                    "payload": {}, "by": {"type": "string"}, "descending": {"type": "boolean"},
                    "order": {"type": "string", "enum": ["asc", "desc", "ascending", "descending"]},
                    "field": {"type": "string"}, "operator": {"type": "string", "enum": list(OPS_NAMES)}, "value": {},
                    "fields": {"type": "array", "items": {"type": "string"}},
                    "k": {"type": "integer", "minimum": 0},
                },
                "required": ["op"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["steps"],
}

OPS = {
    "==": lambda a, b: a == b, "!=": lambda a, b: a != b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, "contains": lambda a, b: b in a,
}


def _rows(data: Any, step: str) -> list[dict[str, Any]]:
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ToolError(f"{step} needs a list of objects; the data is {type(data).__name__}")
    return data


def run(state: AgentState, args: dict[str, Any]) -> dict[str, Any]:
    """The steps' result. A step refused carries the steps done before it (``pipeline_steps``): an
    ``http_request`` among them was sent, which the model is told (``agents.loop._sent``)."""
    done: list[dict[str, Any]] = []
    try:
        return _run(state, args, done)
    except AobError as exc:
        if done:
            exc.extra = {**exc.extra, "pipeline_steps": done}
        raise


def _run(state: AgentState, args: dict[str, Any], done: list[dict[str, Any]]) -> dict[str, Any]:
    data: Any = args.get("data")
    # what the rows at hand came from: the model's data, then each fetch in place of the one before
    # (a sum let fetches a later step threw away raise table_select's bound by 10 MiB each)
    fetched = len(json.dumps(data, default=str)) if data is not None else 0
    for i, step in enumerate(args.get("steps") or []):
        op = step.get("op")
        unknown = sorted(set(step) - {"op"} - STEP_FIELDS.get(op, set()))
        if op in STEP_FIELDS and unknown:
            raise ToolError(f"step {i} ({op}): unknown field(s) {', '.join(unknown)}; "
                            f"{op} takes {', '.join(sorted(STEP_FIELDS[op]))}", extra={"step": i, "fields": unknown})
        if op == "http_request":
            if not isinstance(step.get("url"), str):
                raise ToolError(f"step {i}: http_request needs a url")
            # one tool call, many requests: a run cancelled or an owner deactivated while a step was
            # in flight sends no later one (steps are not journaled: a resumed attempt sends each again)
            state.before_acting("sends no further pipeline step")
            payload = step.get("payload")
            # one key per step of this tool call of this turn: a resumed attempt repeats it with the same key
            key = idempotency.effect_key(state.ctx, "tool", state.call_key, i)
            result = request(method=str(step.get("method", "GET")).upper(), url=step["url"],
                             headers=idempotency.with_key({str(k): str(v) for k, v in (step.get("headers") or {}).items()},
                                                          idempotency.HEADER, key),
                             json=payload if isinstance(payload, dict | list) else None,
                             content=payload if isinstance(payload, str) else None)
            data = result.json_body if result.json_body is not None else result.text
            fetched = len(result.body_bytes)
            done.append({"op": op, "status_code": result.status_code})
        elif op == "table_sort":
            rows = _rows(data, op)
            by = step.get("by", step.get("field"))
            descending = step.get("descending", str(step.get("order", "asc")).lower().startswith("desc"))
            try:
                data = sorted(rows, key=lambda r: (r.get(by) is None, r.get(by)), reverse=bool(descending))
            except TypeError as exc:
                raise ToolError(f"step {i}: cannot sort by {by!r}: {exc}") from exc
            done.append({"op": op, "by": by, "rows": len(data)})
        elif op == "table_filter":
            rows = _rows(data, op)
            compare = OPS.get(step.get("operator") or "==")
            field, value = step.get("field"), step.get("value")
            if compare is None:
                raise ToolError(f"step {i}: unknown operator {step.get('operator')!r}; use one of {sorted(OPS)}")
            kept = []
            for row in rows:
                try:
                    if field in row and compare(row[field], value):
                        kept.append(row)
                except TypeError:
                    continue
            data = kept
            done.append({"op": op, "field": field, "rows": len(data)})
        elif op == "table_select":
            fields = step.get("fields") or []
            rows = _rows(data, op)
            # each row becomes an object of every field, named: a few small rows times many fields
            # would build far more than was fetched, so a select may make at most what its rows came
            # from (or a tool result's bound), measured before it is built; the last step's result
            # is bounded as every tool result is
            least = len(rows) * sum(len(str(f)) + 8 for f in fields)
            allowed = max(fetched, settings.AOB_AGENT_TOOL_RESULT_MAX_BYTES)
            if least > allowed:
                raise ToolError(f"step {i}: table_select would make at least {least} bytes ({len(rows)} rows × "
                                f"{len(fields)} fields), more than the {allowed} bytes the steps were given: "
                                "filter or top_k first, or select fewer fields", extra={"step": i, "limit": allowed})
            data = [{f: r.get(f) for f in fields} for r in rows]
            done.append({"op": op, "fields": fields})
        elif op == "top_k":
            k = int(step.get("k", 0))
            data = _rows(data, op)[:k] if isinstance(data, list) else data
            done.append({"op": op, "k": k})
        else:
            raise ToolError(f"step {i}: unknown op {op!r}")
    return {"status": "success", "data": data, "pipeline_steps": done}
