"""``{% run_family run %}``: the parent and the children of a run, for the run page."""

from __future__ import annotations

from typing import Any

from django import template

register = template.Library()


@register.inclusion_tag("subflows/run_family.html", takes_context=True)
def run_family(context: Any, run: Any) -> dict[str, Any]:
    from subflows.selectors import CHILDREN_SHOWN, run_family

    parent, children = run_family(run=run, user=context["request"].user)
    shown = list(children[:CHILDREN_SHOWN])
    more = children.count() - len(shown) if len(shown) == CHILDREN_SHOWN else 0
    return {"parent": parent, "children": shown, "more": more}
