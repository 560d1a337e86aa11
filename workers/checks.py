"""System checks (``manage.py check``, and every Celery worker at start): the node-type registry
must be whole before any process serves it."""

from __future__ import annotations

from typing import Any

from django.core import checks

from workflows import registry


@checks.register("aob")
def node_types_check(app_configs: Any = None, **_: Any) -> list[checks.CheckMessage]:
    try:
        types = registry.catalogue()
    except registry.RegistryError as exc:  # a duplicate registration, found while loading
        return [checks.Error(str(exc), id="workers.E001")]
    problems: list[checks.CheckMessage] = []
    for name, spec in sorted(types.items()):
        if spec.routed and not callable(spec.run):
            problems.append(checks.Error(
                f"node type {name!r} is routed to queue {spec.queue!r} but has no executor",
                hint="register it with @executor, or with inline=True if the coordinator evaluates it",
                id="workers.E002"))
        if spec.inline and spec.run is not None:
            problems.append(checks.Error(f"node type {name!r} is inline but has an executor: it would never run",
                                         id="workers.E003"))
    return problems
