"""A run's family as one user may see it: for ``GET /runs/{id}/family`` and the run page alike."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from workflows.selectors import runs_visible

from .models import SubRun

# Children answered at once: the run page shows this many and says how many more there are, the
# API answers a page of ``?limit=`` (this many by default, at most 1,000) with their total and the
# next page's link. Every child was listed, up to AOB_MAX_NODE_RUNS_PER_RUN (10,000): 0.6 s and
# 890 kB for one API answer, 2 s and 1.4 MB for one run page (a red-team helper's measurement).
CHILDREN_SHOWN = 100


def run_family(*, run: Any, user: Any) -> tuple[SubRun | None, QuerySet[SubRun]]:
    """The link to ``run``'s parent and the links to its children, each only if ``user`` may see that
    run (``runs_visible``: one asked to approve in a child run sees that run, not its parent's). The
    children are a query, oldest first, for the caller to take a bounded page of."""
    visible = runs_visible(user=user).values("pk")
    parent = (SubRun.objects.filter(child_run=run, parent_run__in=visible)
              .select_related("parent_run", "parent_node_run").only(*RELATIVE, "parent_run__status").first())
    children = (SubRun.objects.filter(parent_run=run, child_run__in=visible)
                .select_related("child_run", "parent_node_run").only(*RELATIVE, "child_run__status")
                .order_by("created_at", "pk"))
    return parent, children


# What a relative is answered with: its run's id and status, and the parent's workflow node. Only
# these are read: a child's inputs (16 MiB) and the workflow node's input, output (32 MiB) and
# attempt log were read for each of up to AOB_MAX_NODE_RUNS_PER_RUN children (2,000 children of
# 50 kB values: 0.9 s and some 300 MB for one answer; a red-team helper's measurement).
RELATIVE = ("parent_run", "child_run", "parent_node_run", "created_at", "parent_node_run__node_id")
