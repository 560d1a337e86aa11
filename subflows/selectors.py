"""A run's family as one user may see it: for ``GET /runs/{id}/family`` and the run page alike."""

from __future__ import annotations

from typing import Any

from workflows.selectors import runs_visible

from .models import SubRun


def run_family(*, run: Any, user: Any) -> tuple[SubRun | None, list[SubRun]]:
    """The link to ``run``'s parent and the links to its children, each only if ``user`` may see that
    run (``runs_visible``: one asked to approve in a child run sees that run, not its parent's)."""
    visible = runs_visible(user=user).values("pk")
    parent = (SubRun.objects.filter(child_run=run, parent_run__in=visible)
              .select_related("parent_run", "parent_node_run").first())
    children = list(SubRun.objects.filter(parent_run=run, child_run__in=visible)
                    .select_related("child_run", "parent_node_run").order_by("created_at"))
    return parent, children
