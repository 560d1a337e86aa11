"""The agent loop: call the model, run the tools it asks for in order, feed the results back,
until it answers without tools or the rounds run out. A refused patch is a tool result, so the
model can correct itself within ``max_tool_rounds``.

Every response and tool result is journaled as it happens (``agents.journal``): an attempt that
resumes, after its worker died or after a budget pause, replays them and calls neither the model
nor the tools again for what is already recorded. Every call first reserves its worst case from
the run's budget (``agents.budget``); when the run's ceiling would be passed the node waits for
its owner instead of failing.
"""

from __future__ import annotations

import json
import logging
import re
import time
from itertools import islice
from typing import Any

import openai
from django.conf import settings
from django.contrib.auth.models import User
from jsonschema import Draft202012Validator

from agents import budget, llm, prompt, view
from agents.exceptions import BudgetPaused, BudgetUnraisable, SecurityError
from agents.journal import Journal, call_from
from agents.nodetypes import effective_model, effective_tool_rounds, effective_tools
from agents.tools import TOOLS, AgentState, schemas
from aob import jsontext
from aob_project.exceptions import AobError
from workers.http import idempotency
from workflows.engine import heartbeat, owners
from workflows.engine.execution import WAITING, park
from workflows.engine.outputs import OUTPUT_MAX_DEPTH, depth_within, strict_json
from workflows.limits import unstorable
from workflows.models import Event, Run
from workflows.registry import NodeContext

logger = logging.getLogger(__name__)


def _usage_totals(calls: list[llm.Call]) -> dict[str, Any]:
    return {"calls": len(calls), "prompt_tokens": sum(c.prompt_tokens for c in calls),
            "completion_tokens": sum(c.completion_tokens for c in calls),
            "cached_tokens": sum(c.cached_tokens for c in calls),
            "cost_usd": round(sum(c.cost_usd for c in calls), 8)}


# How deep a tool call's arguments and result may nest: the node's output keeps each three levels
# down (``tool_calls``, the call, ``arguments``/``result``), and an output past ``OUTPUT_MAX_DEPTH``
# fails the node (a page 300 deep, or a model's arguments, ended the agent after its calls were made).
TOOL_DATA_MAX_DEPTH = OUTPUT_MAX_DEPTH - 3


class _TooDeep(ValueError):
    pass


def _run_tool(state: AgentState, name: str, raw_args: str) -> Any:
    tool = TOOLS.get(name)
    if tool is None or name not in state.tools:
        return {"status": "error", "error": "unknown_tool", "message": f"tool {name!r} is not available"}
    try:
        args = _loads(raw_args)
    except _TooDeep as exc:
        return {"status": "error", "error": "invalid_arguments", "rule": "max_depth", "limit": TOOL_DATA_MAX_DEPTH,
                "message": str(exc)}
    except jsontext.DuplicateKey as exc:  # which of the two the model meant is not known
        return {"status": "error", "error": "invalid_arguments", "rule": exc.rule, "path": exc.path,
                "message": str(exc)[:500]}
    except (ValueError, TypeError, RecursionError) as exc:  # nested past the parser's depth, or not text at all
        return {"status": "error", "error": "invalid_arguments", "message": f"arguments are not JSON: {exc}"[:500]}
    if not isinstance(args, dict):
        return {"status": "error", "error": "invalid_arguments", "message": "arguments must be a JSON object"}
    problem = unstorable(args, int64=False)  # a lone surrogate or a NUL: no request or journal could carry it
    if problem is not None:
        return {"status": "error", "error": "invalid_arguments", "rule": problem.rule, "path": problem.path,
                "message": f"{problem.path}: {problem.message}"[:500]}
    # the first of a model's mistakes by path, from the first few read (a list of 50,000 wrong items is not all read)
    problem = next(iter(sorted(islice(Draft202012Validator(tool.parameters).iter_errors(args), 20),
                               key=lambda e: list(e.path))), None)
    if problem is not None:  # the schema is only advice to the model: hold it to it
        where = "/" + "/".join(str(p) for p in problem.absolute_path)
        return {"status": "error", "error": "invalid_arguments", "message": f"{where}: {problem.message}"}
    try:
        return tool.run(state, args)
    except owners.OwnerInactive:  # found before a pipeline step: the node fails, as before a tool call
        raise
    except RecursionError:  # a remote's answer nested past what a tool's own walk of it (masking) takes
        return _too_deep(name)
    except AobError as exc:  # the rule, where the error names one (a refused host, an SSRF rule)
        rule = exc.extra.get("rule") if isinstance(exc.extra, dict) else None
        return _sent({"status": "error", "error": exc.code, "message": exc.message,
                      **({"rule": rule} if isinstance(rule, str) else {})}, name, exc.extra)


def _result(state: AgentState, name: str, raw_args: str) -> Any:
    """A tool's result as JSON, within ``AOB_AGENT_TOOL_RESULT_MAX_BYTES``: a larger one is replaced
    by an error telling the model to narrow it, so no result past the bound is kept, journaled or
    sent back to the model."""
    made = _run_tool(state, name, raw_args)
    text = json.dumps(made, default=str)
    size, cap = len(text.encode()), settings.AOB_AGENT_TOOL_RESULT_MAX_BYTES
    if size > cap:
        return _sent({"status": "error", "error": "result_too_large", "bytes": size, "limit": cap,
                      "message": f"the result is {size} bytes; a tool result may be at most {cap} "
                                 f"(AOB_AGENT_TOOL_RESULT_MAX_BYTES): ask for less ({_less(name)})"},
                     name, made)
    result = json.loads(text)
    problem = unstorable(result, int64=False)  # a remote's NaN or NUL: the journal could not keep it
    if problem is not None:
        return _sent({"status": "error", "error": "result_not_storable", "rule": problem.rule,
                      "path": problem.path, "message": f"the result cannot be kept: {problem.path}: {problem.message}"},
                     name, made)
    if not depth_within(result, TOOL_DATA_MAX_DEPTH):
        return _sent(_too_deep(name), name, made)
    return result


def _too_deep(name: str) -> dict[str, Any]:
    return {"status": "error", "error": "result_too_deep", "rule": "max_depth", "limit": TOOL_DATA_MAX_DEPTH,
            "message": f"the result nests deeper than {TOOL_DATA_MAX_DEPTH} levels, which a node's output cannot "
                       f"keep: ask for less of it ({_less(name)})"}


def _less(name: str) -> str:
    """How a tool asks for less."""
    if name == "execute_pipeline":
        return "table_filter, table_select, top_k"
    if name == "openapi_action":
        return "another operation, or parameters that select less"
    return "a narrower request"


# How many of a call's sent requests an error in place of its result names (the rest are counted).
SENT_NAMED = 20


def _sent(error: dict[str, Any], name: str, made: Any) -> dict[str, Any]:
    """``error`` in place of a tool call whose requests went out, saying so: each one's status code,
    and not to send it again. Told only of an error, a model calls again, with a new
    Idempotency-Key, and the remote applies it twice. ``made`` is what the call made: its result,
    or its refusal's ``extra`` (``execute_pipeline``'s steps done before a later one failed; the
    client's ``sent`` for a request that went out and then failed, unanswered or past the cap)."""
    if not isinstance(made, dict):
        return error
    lost = made.get("sent") is True  # workers.http.client: sent, then failed; whether it took effect is unknown
    unknown = "may have taken effect (outcome unknown)"
    if name == "openapi_action" and "body" in made and isinstance(made.get("status_code"), int):  # its answer
        facts: dict[str, Any] = {"status_code": made["status_code"]}
        said = f"the request was sent and answered {made['status_code']}"
    elif name == "openapi_action" and lost:
        facts, said = {}, f"the request was sent and {unknown}"
    elif name == "execute_pipeline" and (isinstance(made.get("pipeline_steps"), list) or lost):
        done = made.get("pipeline_steps") or []
        steps = [{"step": i, "op": step["op"], "status_code": step.get("status_code")}
                 for i, step in enumerate(done) if isinstance(step, dict) and step.get("op") == "http_request"]
        if not steps and not lost:
            return error
        named = steps[:SENT_NAMED]
        said = ", ".join(f"step {s['step']} ({s['status_code']})" for s in named)
        said = f"sent and answered: {said}" if named else ""
        said += f" and {len(steps) - len(named)} more" if len(steps) > len(named) else ""
        if lost:  # the step that failed is the one after those done
            named = [*named, {"step": len(done), "op": "http_request", "status_code": None}]
            said += f"{'; ' if said else ''}step {len(done)} was sent and {unknown}"
        facts = {"pipeline_steps": named, "requests_sent": len(steps) + int(lost)}
    else:
        return error
    return {**error, "sent": True, **facts,
            "message": f"{error['message']}; {said}: a new call sends it again, as a new request, so do not "
                       "repeat one that changes anything"}


def _next_result(state: AgentState, name: str, raw_args: str, index: int, kept: int) -> Any:
    """The result of a message's ``index``-th tool call, run only within the bounds of one message
    (``AOB_AGENT_MAX_TOOL_CALLS_PER_TURN``) and of the node run (``AOB_AGENT_TOOL_RESULTS_MAX_BYTES``
    kept so far)."""
    if index >= settings.AOB_AGENT_MAX_TOOL_CALLS_PER_TURN:
        return _too_many(index)
    limit = settings.AOB_AGENT_TOOL_RESULTS_MAX_BYTES
    if kept >= limit:
        return {"status": "error", "error": "tool_results_spent", "bytes": kept, "limit": limit,
                "message": f"not run: this node's tool results already hold {kept} bytes, and a node keeps at "
                           f"most {limit} (AOB_AGENT_TOOL_RESULTS_MAX_BYTES); answer with what you have"}
    return _result(state, name, raw_args)


def _too_many(index: int) -> dict[str, Any]:
    limit = settings.AOB_AGENT_MAX_TOOL_CALLS_PER_TURN
    return {"status": "error", "error": "too_many_tool_calls", "limit": limit,
            "message": f"tool call {index} not run: one message runs at most {limit} tool calls "
                       "(AOB_AGENT_MAX_TOOL_CALLS_PER_TURN); ask for the rest in the next message"}


def _message(response: Any) -> dict[str, Any]:
    """The model's answer as the journal keeps it and the conversation goes on with it: ``jsonb``
    holds no NUL and no lone surrogate, which a model can be made to emit (the journal's write
    failed and the node with it, after the call was made and charged). In arguments each becomes its
    JSON escape, which means the same character inside a string (the call is then
    ``invalid_arguments``, as its arguments hold what no request or journal can carry); elsewhere
    U+FFFD, as in every stored output. A tool call that is no function call (the SDK models a
    ``custom`` one too, and validates no answer: ``function`` may be missing or None) is one the
    model is told is unknown (``_run_tool``); its ``AttributeError`` failed the node after the call
    was made, its usage unrecorded. Each is kept in a shape the provider takes back in the next
    turn's messages (``_tool_call``)."""
    message = response.choices[0].message
    out: dict[str, Any] = {"role": "assistant", "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = [_tool_call(c) for c in message.tool_calls]
    return strict_json(out, non_finite="null")


def _tool_call(call: Any) -> dict[str, Any]:
    """``call`` as the next turn sends it back: a ``custom`` one as it came, any other as a function
    call, its fields strings ("" for what is missing). OpenAI refuses a history whose tool call has
    a null ``function.name`` or ``arguments`` (400, expected a string): the node failed one call
    later, after both calls were charged."""
    custom = getattr(call, "custom", None)
    if getattr(call, "type", None) == "custom" and custom is not None:
        return {"id": _text(getattr(call, "id", None)), "type": "custom",
                "custom": {"name": _text(getattr(custom, "name", None)),
                           "input": _escaped(_text(getattr(custom, "input", None)))}}
    function = getattr(call, "function", None)
    return {"id": _text(getattr(call, "id", None)), "type": "function",
            "function": {"name": _text(getattr(function, "name", None)),
                         "arguments": _escaped(_text(getattr(function, "arguments", None)))}}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _called(call: dict[str, Any]) -> tuple[Any, Any]:
    """A journaled tool call's tool name and arguments: none but a function call's."""
    function = (call.get("function") or {}) if call.get("type") == "function" else {}
    return function.get("name"), function.get("arguments")


UNSTORABLE_CHARACTERS = re.compile(r"[\x00\ud800-\udfff]")


def _escaped(arguments: Any) -> Any:
    if not isinstance(arguments, str):
        return arguments
    return UNSTORABLE_CHARACTERS.sub(lambda m: f"\\u{ord(m.group()):04x}", arguments)


def run_agent(ctx: NodeContext) -> Any:
    config = ctx.config
    model = effective_model(config)
    llm.price(model)  # an unpriced model is refused before any call
    rounds = effective_tool_rounds(config)
    max_tokens = min(int(config.get("max_tokens") or settings.AOB_LLM_MAX_TOKENS), settings.AOB_LLM_MAX_TOKENS)
    journal = Journal(ctx.node_run_id, ctx.attempt)
    messages = list(journal.prompt or journal.record_prompt(_first_messages(ctx)))
    source, source_key_run = _replay_source(ctx)
    journal.reuse_from(source, messages)
    names = effective_tools(config)
    tools = schemas(names)
    state = AgentState(ctx=ctx, tools=names)
    calls: list[llm.Call] = []
    tool_calls: list[dict[str, Any]] = []
    kept = 0  # bytes of tool results this node run holds (journal, prompt, output)
    for turn in range(rounds + 1):
        record = journal.responses.get(turn)
        if record is None:
            heartbeat.ensure_held(ctx.node_run_id, ctx.attempt)  # cancelled or re-queued: no further model call
            record = journal.reused_response(turn)  # a replay with reuse_llm: no call while nothing differs
        if record is None:
            try:
                record = _call(ctx, journal, turn, model=model, messages=messages, tools=tools,
                               max_tokens=max_tokens)
            except BudgetPaused as exc:
                return _pause(ctx, exc)
        message = record["message"]
        calls.append(call_from(record["call"]))
        if not message.get("tool_calls"):
            return {"status": "success", "type": "text_response", "message": message.get("content") or "",
                    "tool_calls": tool_calls, "usage": _usage_totals(calls)}
        if len(calls) > rounds:
            break
        messages.append(message)
        for index, call_ in enumerate(message["tool_calls"]):
            name, arguments = _called(call_)
            result = journal.tools.get((turn, index))
            if result is None:
                # an answer may hold many calls, each a request as the owner with their secrets: a run
                # cancelled (or a node re-queued) or an owner deactivated while it was on its way starts
                # none, as no further model call would (a journaled one sends nothing)
                state.before_acting("makes no further tool call")
                if record.get("reused") and source_key_run and not ctx.goes_on:
                    # the source's answer reused: the call its unsettled node run made (or was making),
                    # the same request, goes on under its key, as a sibling going on does (kept first)
                    state.ctx = ctx = idempotency.going_on_under(ctx, source_key_run)
                state.proposal_key = f"{ctx.node_run_id}:{turn}:{index}"
                state.call_key = f"{turn}:{index}"
                result = journal.record_tool(turn, index, _next_result(state, name, arguments, index, kept))
            journal.compare_tool(turn, index, result)
            state.observe(name, result)
            tool_calls.append({"name": name, "arguments": _parsed(arguments), "result": result})
            content = json.dumps(result, default=str)
            kept += len(content.encode())  # journaled results count too: a resumed attempt counts the same
            messages.append({"role": "tool", "tool_call_id": call_["id"], "content": content})
    if state.spawn_limit_hit:
        raise SecurityError("the agent kept asking for more agent nodes than the run allows",
                            extra={"reason": "excessive_agent_nodes", "tool_calls": tool_calls[-3:]})
    last = tool_calls[-1]["result"] if tool_calls else None
    return {"status": "success", "type": "tool_result",
            "message": f"stopped after {len(calls)} model calls; last tool result attached",
            "tool_calls": tool_calls, "usage": _usage_totals(calls), "result": last}


def _replay_source(ctx: NodeContext) -> tuple[int | None, str]:
    """The node run whose recorded responses a replay with ``reuse_llm`` reuses, and the run whose
    key the tool calls of a reused response go on under ("": their own): the nearest run of the
    replay chain whose node run may have acted (``idempotency.last_acted``, the one walk an http or
    ``workflow`` node's request follows too): a replay in between that never ran the agent
    (cancelled before its claim) journaled nothing and sent nothing. That node run's key
    (``Run.key_run``) where it did not settle (``NodeRun.unsettled``: a call it made may have taken
    effect)."""
    from workflows.models import NodeRun

    if not Run.objects.filter(pk=ctx.run_id, reuse_llm=True, replay_of__isnull=False).exists():
        return None, ""
    found = idempotency.last_acted(ctx)
    if found is None:
        return None, ""
    run_id, origins, status, attempts, error, node_run_id = found
    unsettled = NodeRun.unsettled(status, attempts, error)
    return node_run_id, Run.key_run(run_id, origins, ctx.node_id, ctx.iteration) if unsettled else ""


def _first_messages(ctx: NodeContext) -> list[dict[str, Any]]:
    """The prompt shows the run's definition as an agent may read it (``agents.view``); the task is
    the node's own, whoever wrote it (a delegate's comes from the agent that delegated)."""
    return prompt.messages(definition=view.run_view(ctx.run_id).definition, node_id=ctx.node_id,
                           upstream=ctx.outputs, inputs=ctx.inputs, task=str(ctx.config.get("task", "")))


def _call(ctx: NodeContext, journal: Journal, turn: int, *, model: str, messages: list[dict[str, Any]],
          tools: list[dict[str, Any]], max_tokens: int) -> dict[str, Any]:
    """One model call: reserve its worst case, call, journal the response with its actual usage.
    What is transient (rate limits, 5xx, timeouts, connection errors) is tried again, up to
    ``AOB_LLM_MAX_RETRIES`` times with backoff, each try reserved anew: a try that failed but may
    have reached the provider (``llm.made``) is charged at its worst case, as the provider bills it,
    and one it refused or that never left is released. Every try of a turn carries the same
    ``Idempotency-Key``, so does a later attempt's."""
    key = idempotency.effect_key(ctx, "llm", turn)
    errors: list[str] = []
    delay = settings.AOB_LLM_RETRY_BACKOFF_S
    while True:
        reservation = budget.reserve(run_id=ctx.run_id, node_run_id=ctx.node_run_id, attempt=ctx.attempt,
                                     model=model, messages=messages, max_tokens=max_tokens,
                                     node_budget=ctx.config.get("budget"), tools=tools)
        try:
            response, call = llm.chat(model=model, messages=messages, tools=tools or None, max_tokens=max_tokens,
                                      prompt_bound=reservation.prompt_tokens, key=key)
        except BaseException as exc:
            if llm.made(exc):
                budget.charge_worst_case(reservation)
            else:
                budget.release(reservation)
            if not isinstance(exc, openai.APIError):
                raise
            if isinstance(exc, llm.TRANSIENT) and len(errors) < settings.AOB_LLM_MAX_RETRIES:
                errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
                time.sleep(delay)
                delay *= 2
                heartbeat.ensure_held(ctx.node_run_id, ctx.attempt)  # cancelled meanwhile: no further try
                continue
            raise AobError(f"LLM call failed: {exc}", code=type(exc).__name__,
                           extra={"retryable": isinstance(exc, llm.TRANSIENT), "transient": False}) from exc
        call.attempts, call.errors = len(errors) + 1, errors
        if call.usage_unknown:  # the provider's word that it used nothing, less, or more than it could, is not taken
            budget.at_worst_case(call, reservation).errors.append(budget.USAGE_UNKNOWN)
        return journal.record_response(turn, _message(response), call, reservation)


def _pause(ctx: NodeContext, exc: BudgetPaused) -> Any:
    """The run's budget cannot cover the next call: wait for the owner, or for room another call's
    release frees (``budget.wake``), holding no worker. An owner deactivated since the run started
    can raise nothing (``run_owner_check``), and nobody else may: where only a raise could make room
    (``budget.only_a_raise``), the node fails saying so instead of waiting for ever."""
    owner = User.objects.filter(pk=ctx.owner_id).values_list("username", "is_active").first()
    if owner is not None and not owner[1] and budget.only_a_raise(exc.extra):
        raise BudgetUnraisable(
            f"{owner[0]!r} is deactivated: nobody can raise the budget of {budget.paused_on(exc.extra)}, which "
            f"cannot cover the next model call (up to {exc.extra['next_call']['tokens']} tokens, "
            f"${exc.extra['next_call']['cost_usd']:.6f}), so this node does not wait for it",
            extra={**exc.extra, "rule": "owner_active", "owner": owner[0], "transient": False})
    parked = park(ctx, lambda: [(Event.Type.NODE_PAUSED, ctx.node_id, {
        "iteration": ctx.iteration, "reason": "budget", "message": exc.message, **exc.extra})], reason="budget")
    if parked:  # a release or a raise that came between the refusal and the park found nothing to wake
        budget.wake_later([str(ctx.run_id)], ctx.owner_id)
    return WAITING


def _parsed(raw: str) -> Any:
    try:
        return _loads(raw)
    except (ValueError, TypeError, RecursionError):
        return raw


def _loads(raw: str) -> Any:
    """A model's arguments as JSON, and only JSON: Python's parser takes ``NaN``, ``Infinity`` and
    ``1e999``, which the node's output (strict JSON: the node failed, ``NonJSONOutput``) and an
    outbound body (httpx raised ``ValueError``) cannot hold; nor nested past what the output keeps
    (``_TooDeep``: the call is refused and its arguments are kept as the text they came as)."""
    value = jsontext.loads(raw or "{}")
    if not depth_within(value, TOOL_DATA_MAX_DEPTH):
        raise _TooDeep(f"arguments nest deeper than {TOOL_DATA_MAX_DEPTH} levels, which a node's output cannot keep")
    return value


