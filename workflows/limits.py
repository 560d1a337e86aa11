"""A value past its byte bound is refused one way wherever it is written (a run's inputs, a
schedule's inputs, a hook's mapping, an approver's form data): measured as the artifacts are
(``canonical_json`` in UTF-8), and refused naming the field, the rule, the limit and the size."""

from __future__ import annotations

from typing import Any

from aob_project.exceptions import AobError, ValidationFailed
from workflows.models import canonical_json, size_of


def refuse_past(value: Any, limit: int, *, field: str, error: type[AobError] = ValidationFailed,
                setting: str = "", code: str | None = None) -> None:
    """Raise ``error`` (400) when ``value`` is larger than ``limit`` bytes; ``setting`` names the
    operator's variable that sets the limit, when there is one."""
    size = size_of(canonical_json(value))
    if size > limit:
        raise error(f"{field} is {size} bytes; at most {limit}" + (f" ({setting})" if setting else ""), code=code,
                    extra={"field": field, "rule": "max_bytes", "limit": limit, "size": size})
