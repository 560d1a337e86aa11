"""``{% run_family run %}``: the parent and the children of a run, for the run page."""

from __future__ import annotations

from typing import Any

from django import template

register = template.Library()


@register.inclusion_tag("subflows/run_family.html", takes_context=True)
def run_family(context: Any, run: Any) -> dict[str, Any]:
    from subflows.selectors import run_family

    parent, children = run_family(run=run, user=context["request"].user)
    return {"parent": parent, "children": children}
