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


@checks.register("aob")
def allowlist_check(app_configs: Any = None, **_: Any) -> list[checks.CheckMessage]:
    """Every AOB_HTTP_ALLOWLIST entry parses: one that does not (a URL where a host goes) would fail each
    outbound request, and each save of a workflow that names its host, only once it is reached."""
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    from workers.http.ssrf import parse_allow_entry

    problems: list[checks.CheckMessage] = []
    for raw in settings.AOB_HTTP_ALLOWLIST:
        try:
            parse_allow_entry(raw)
        except ImproperlyConfigured as exc:
            problems.append(checks.Error(str(exc), hint="a host (*.example.com allowed), an address or a network, "
                                         "each with :port if it is not 80 or 443", id="workers.E004"))
    return problems
