"""``{% run_family run %}``: the parent and the children of a run, for the run page."""

from __future__ import annotations

from typing import Any

from django import template

register = template.Library()


@register.inclusion_tag("subflows/run_family.html")
def run_family(run: Any) -> dict[str, Any]:
    from subflows.models import SubRun

    parent = SubRun.objects.filter(child_run=run).select_related("parent_node_run").first()
    children = list(SubRun.objects.filter(parent_run=run).select_related("child_run", "parent_node_run")
                    .order_by("created_at"))
    return {"parent": parent, "children": children}
