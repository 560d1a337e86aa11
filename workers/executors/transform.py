"""``transform``: an output computed from run inputs and upstream outputs, without I/O.

Either ``expression`` (CEL over ``inputs``, ``nodes`` — upstream outputs by node id — and
``iteration``) or ``template`` (any JSON whose ``$nodes…``, ``$inputs…`` and ``${…}`` references
are resolved). Pure: the coordinator evaluates it in the decision that reaches it (the same
function, ``workflows/engine/pure.py``) unless ``dispatch`` is ``"queue"``."""

from __future__ import annotations

from typing import Any

from workflows.definition.expressions import ExpressionError, evaluate
from workflows.registry import NodeContext, NodeFailed, executor

CONFIG_SCHEMA = {
    "type": "object",
    "properties": {
        "expression": {"type": "string", "minLength": 1},
        "template": {},
        # "queue": always run on a worker (wf.tasks.transform); "decision" (the default): in the
        # coordinator's decision when its budget allows.
        "dispatch": {"enum": ["decision", "queue"]},
    },
    "oneOf": [{"required": ["expression"]}, {"required": ["template"]}],
    "additionalProperties": False,
}


@executor("transform", config_schema=CONFIG_SCHEMA, pure=True, raw_keys=frozenset({"expression"}),
          description="Computes its output from a CEL `expression` over `inputs`, `nodes` (upstream outputs) "
          "and `iteration`, or from a JSON `template` with $nodes/$inputs references.")
def run_transform(ctx: NodeContext) -> Any:
    if "expression" in ctx.raw_config:
        try:
            return evaluate(ctx.raw_config["expression"],
                            {"inputs": ctx.inputs, "nodes": ctx.outputs, "iteration": ctx.iteration})
        except ExpressionError as exc:
            raise NodeFailed(f"transform expression failed: {exc}", code="ExpressionError") from exc
    return ctx.config["template"]
