from __future__ import annotations

from django.conf import settings
from django.db import models


class AgentTurn(models.Model):
    """The journal of an agent node run: its prompt, each model response (written before the
    response's tool calls run) and each tool result (written after it ran). An attempt that resumes,
    after a crash or a budget pause, replays the journal instead of calling the model or the tools
    again; ``(node_run, turn, kind, index)`` is unique, so a repeated write is a no-op."""

    class Kind(models.TextChoices):
        PROMPT = "prompt"
        RESPONSE = "response"
        TOOL = "tool"

    node_run = models.ForeignKey("workflows.NodeRun", on_delete=models.CASCADE, related_name="agent_turns")
    turn = models.PositiveIntegerField()
    kind = models.CharField(max_length=10, choices=Kind.choices)
    index = models.PositiveIntegerField(default=0)
    content = models.JSONField()
    attempt = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["node_run", "turn", "kind", "index"],
                                               name="agent_turn_unique")]
        ordering = ["node_run_id", "turn", "kind", "index"]

    def __str__(self) -> str:
        return f"{self.node_run_id} turn {self.turn} {self.kind}#{self.index}"


class OwnerSpend(models.Model):
    """One owner's LLM spend on one UTC day, and what calls in flight have reserved of it."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    cost_usd = models.FloatField(default=0.0)
    # {node_run_id: worst-case cost} of calls in flight; a node run holds at most one at a time.
    reserved = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["owner", "day"], name="owner_spend_day_unique")]

    def __str__(self) -> str:
        return f"{self.owner_id} on {self.day}: ${self.cost_usd:.4f}"
