from __future__ import annotations

from django.db import models


class SubRun(models.Model):
    """A child run started by a ``workflow`` node: the parent's node run waits (``wait_reason``
    ``workflow``) until the child ends, and takes its outcome."""

    parent_run = models.ForeignKey("workflows.Run", on_delete=models.CASCADE, related_name="+")
    parent_node_run = models.OneToOneField("workflows.NodeRun", on_delete=models.CASCADE, related_name="+")
    child_run = models.OneToOneField("workflows.Run", on_delete=models.CASCADE, related_name="parent_link")
    depth = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    settled_at = models.DateTimeField(null=True, blank=True)
    # The node's own ``timeout_ms`` from the child's start: past it the wait ends, the node fails
    # (``SubWorkflowTimeout``) and the child is cancelled (``subflows_sweep``). None: no timeout_ms.
    deadline = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["parent_run"], name="subrun_parent"),
                   models.Index(fields=["deadline"], name="subrun_deadline",
                                condition=models.Q(settled_at__isnull=True, deadline__isnull=False))]

    def __str__(self) -> str:
        return f"{self.parent_run_id} → {self.child_run_id}"
