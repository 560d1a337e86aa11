"""The journal of an agent node run (``AgentTurn``): what the model answered and what each tool
returned, written as it happens, so an attempt that resumes (after a worker died, or after a
budget pause) replays it instead of calling the model or the tools again."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction

from agents import budget
from agents.llm import Call
from agents.models import AgentTurn


class Journal:
    def __init__(self, node_run_id: int, attempt: int) -> None:
        self.node_run_id, self.attempt = node_run_id, attempt
        self.prompt: list[dict[str, Any]] | None = None
        self.responses: dict[int, dict[str, Any]] = {}
        self.tools: dict[tuple[int, int], Any] = {}
        self.source: dict[tuple[str, int, int], Any] = {}
        for turn, kind, index, content in (AgentTurn.objects.filter(node_run_id=node_run_id)
                                           .values_list("turn", "kind", "index", "content")):
            if kind == AgentTurn.Kind.PROMPT:
                self.prompt = content
            elif kind == AgentTurn.Kind.RESPONSE:
                self.responses[turn] = content
            else:
                self.tools[(turn, index)] = content

    @property
    def resumed(self) -> bool:
        return self.prompt is not None

    def reuse_from(self, source_node_run_id: int | None, prompt: list[dict[str, Any]]) -> None:
        """A replay with ``reuse_llm``: the source node run's recorded responses may stand in for
        model calls while this conversation is the source's (same prompt; every tool result so far
        the same). The first difference ends the reuse; from then on the model is called."""
        self.source = {}
        if source_node_run_id is None:
            return
        for turn, kind, index, content in (AgentTurn.objects.filter(node_run_id=source_node_run_id)
                                           .values_list("turn", "kind", "index", "content")):
            self.source[(kind, turn, index)] = content
        if self.source.get((AgentTurn.Kind.PROMPT, 0, 0)) != prompt:
            self.source = {}

    def reused_response(self, turn: int) -> dict[str, Any] | None:
        """The source's response for ``turn``, journaled as this node run's own with no usage
        (no call was made, nothing is spent); None when there is none to reuse."""
        source = self.source.get((AgentTurn.Kind.RESPONSE, turn, 0))
        if source is None:
            return None
        call = {**source["call"], "prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0, "cost_usd": 0.0,
                "latency_ms": 0, "attempts": 0, "errors": []}
        stored = self._write(turn, AgentTurn.Kind.RESPONSE, 0, {"message": source["message"], "call": call,
                                                                "reused": True})
        self.responses[turn] = stored
        return stored

    def compare_tool(self, turn: int, index: int, result: Any) -> None:
        """A tool result unlike the source's ends the reuse: the conversation has diverged."""
        if self.source and self.source.get((AgentTurn.Kind.TOOL, turn, index)) != result:
            self.source = {}

    def _write(self, turn: int, kind: str, index: int, content: Any) -> Any:
        """Write once; a row that is already there wins (what a lost attempt wrote stands)."""
        try:
            with transaction.atomic():
                AgentTurn.objects.create(node_run_id=self.node_run_id, turn=turn, kind=kind, index=index,
                                         content=content, attempt=self.attempt)
            return content
        except IntegrityError:
            return AgentTurn.objects.values_list("content", flat=True).get(
                node_run_id=self.node_run_id, turn=turn, kind=kind, index=index)

    def record_prompt(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.prompt = self._write(0, AgentTurn.Kind.PROMPT, 0, messages)
        return self.prompt

    def record_response(self, turn: int, message: dict[str, Any], call: Call,
                        reservation: budget.Reservation) -> dict[str, Any]:
        """The response and its usage in one transaction: the reservation is released to what the
        call cost, counted once. A call whose turn another attempt journaled first was made all the
        same: it is charged, and the conversation goes on with the journaled answer."""
        content = {"message": message, "call": call.as_dict()}
        with transaction.atomic():
            stored = self._write(turn, AgentTurn.Kind.RESPONSE, 0, content)
            budget.release(reservation, call)
        self.responses[turn] = stored
        return stored

    def record_tool(self, turn: int, index: int, result: Any) -> Any:
        self.tools[(turn, index)] = self._write(turn, AgentTurn.Kind.TOOL, index, result)
        return self.tools[(turn, index)]


def call_from(record: dict[str, Any]) -> Call:
    return Call(**{k: v for k, v in record.items() if k in Call.__dataclass_fields__})
