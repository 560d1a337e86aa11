"""``shout``: the example node type of docs/ARCHITECTURE.md ("Writing a node type").

Its output is its resolved ``text`` in capitals, repeated ``times`` times; it runs on its own queue,
``wf.tasks.shout``, on any worker that serves it."""

from __future__ import annotations

from typing import Any

from workflows.registry import NodeContext, NodeFailed, executor

CONFIG_SCHEMA = {
    "type": "object",
    "required": ["text"],
    "properties": {"text": {"type": "string", "maxLength": 1000},
                   "times": {"type": "integer", "minimum": 1, "maximum": 10}},
    "additionalProperties": False,
}


def check_config(config: dict[str, Any]) -> list[tuple[str, str, str]]:
    """What a schema cannot say, judged at save (a reference is judged when it resolves)."""
    text = config.get("text")
    if isinstance(text, str) and "$" not in text and not text.strip():
        return [("/text", "nothing_to_shout", "text has nothing to shout")]
    return []


@executor("shout", config_schema=CONFIG_SCHEMA, check=check_config,
          description="Outputs {shout, worker}: its text in capitals, `times` times (a test-only example type).")
def run_shout(ctx: NodeContext) -> dict[str, Any]:
    import os
    import socket

    text = ctx.config["text"]
    if not isinstance(text, str):
        raise NodeFailed("text did not resolve to a string", code="NotText")
    return {"shout": " ".join([text.upper()] * ctx.config.get("times", 1)),
            "worker": f"{socket.gethostname()}:{os.getpid()}"}
