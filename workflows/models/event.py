from __future__ import annotations

from django.db import models


class Event(models.Model):
    """Append-only, numbered per run; the UI draws from it and resumes from ``seq``."""

    class Type(models.TextChoices):
        WORKFLOW_STARTED = "workflow_started"
        NODE_STARTED = "node_started"
        NODE_COMPLETED = "node_completed"
        NODE_FAILED = "node_failed"
        NODE_SKIPPED = "node_skipped"
        NODE_RETRYING = "node_retrying"
        NODE_UNSERVED = "node_unserved"
        NODE_UNCLAIMED = "node_unclaimed"
        NODE_HELD = "node_held"
        SWEEP_FAILED = "sweep_failed"
        CONDITION_ERROR = "condition_error"
        APPROVAL_REQUIRED = "approval_required"
        APPROVAL_DECIDED = "approval_decided"
        APPROVAL_VOIDED = "approval_voided"
        NOTIFICATIONS_CAPPED = "notifications_capped"
        NODE_PAUSED = "node_paused"
        BUDGET_RAISED = "budget_raised"
        BUDGET_FREED = "budget_freed"
        PATCH_APPLIED = "patch_applied"
        PATCH_REJECTED = "patch_rejected"
        WORKFLOW_COMPLETED = "workflow_completed"
        OUTPUT_COMPUTED = "output_computed"
        WORKFLOW_FAILED = "workflow_failed"
        RUN_CANCELLED = "run_cancelled"
        SUBWORKFLOW_STARTED = "subworkflow_started"
        RUN_MOVED = "run_moved"  # the run waits (for people, a budget, a child run) or runs again

    # No index of its own for ``run``: ``event_run_seq_unique`` leads with it.
    run = models.ForeignKey("workflows.Run", on_delete=models.CASCADE, related_name="events", db_index=False)
    seq = models.PositiveIntegerField()
    type = models.CharField(max_length=32, choices=Type.choices)
    node_id = models.CharField(max_length=200, blank=True, default="")
    data = models.JSONField(default=dict)
    request_id = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="event_run_seq_unique")]
        ordering = ["run_id", "seq"]

    def __str__(self) -> str:
        return f"{self.run_id}#{self.seq} {self.type}"

    def as_dict(self) -> dict:
        return {
            "run_id": str(self.run_id),
            "seq": self.seq,
            "type": self.type,
            "node_id": self.node_id or None,
            "data": self.data,
            "request_id": self.request_id or None,
            "created_at": self.created_at.isoformat() if self.created_at else None,
        }
