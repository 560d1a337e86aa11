"""System checks (``manage.py check``, and every Celery worker at start): what the operator
registered for ``openapi_action`` (``AOB_OPENAPI_SPECS``)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks

from agents.tools.openapi import registration_problem


@checks.register("aob")
def openapi_specs_check(app_configs: Any = None, **_: Any) -> list[checks.CheckMessage]:
    specs = settings.AOB_OPENAPI_SPECS
    if not isinstance(specs, dict):
        return [checks.Error("AOB_OPENAPI_SPECS is a JSON object: {name: {spec, base_url}}", id="agents.E001")]
    return [checks.Error(f"AOB_OPENAPI_SPECS[{name!r}]: {problem}", id="agents.E001")
            for name, registered in sorted(specs.items())
            if (problem := registration_problem(registered)) is not None]
