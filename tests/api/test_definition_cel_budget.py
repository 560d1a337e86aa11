"""A definition's CEL sources share one compile budget (``AOB_MAX_DEFINITION_CEL_BYTES``), counted
over distinct sources on the ground that a repeated one is answered by the per-process compile
cache. ``functools.lru_cache`` keeps no exception, so a source that fails to compile is parsed
again at every repeat."""

from __future__ import annotations

from typing import Any

import cel

from tests.api.test_definition_races import _costly_expression
from workflows.definition import expressions
from workflows.definition.validation import validate


def test_a_repeated_invalid_source_is_not_compiled_past_the_definition_s_budget(settings: Any, monkeypatch: Any) -> None:
    """245 nodes, each the same 3.9 KiB source with a syntax error at its very end (one 1 MiB body):
    counted once (3.9 KiB of the 128 KiB budget), but each repeat is lexed and parsed again by the
    binding, about 1 MiB of CEL (1.3 s of a web thread here, where the budget's 128 KiB is what a
    request may compile). The binding's compile is counted, not replaced."""
    source = _costly_expression(4242) + " &&"
    parsed: list[int] = []
    real = cel.compile

    def counted(text: str) -> Any:
        parsed.append(len(text.encode()))
        return real(text)

    monkeypatch.setattr(expressions.cel, "compile", counted)
    expressions._compile.cache_clear()
    definition = {"nodes": [{"id": f"n{i}", "type": "transform", "config": {"expression": source}}
                            for i in range(245)], "edges": []}

    report = validate(definition)

    assert not report.valid
    assert sum(parsed) <= settings.AOB_MAX_DEFINITION_CEL_BYTES, (
        f"{len(parsed)} compiles of {sum(parsed)} bytes for one definition; its budget is "
        f"{settings.AOB_MAX_DEFINITION_CEL_BYTES}")
