"""The executor registry: node types, the code that runs them, and the config each accepts.

``@executor("http")`` registers a function that turns a resolved config into an output.
Types the coordinator evaluates itself (``conditional``, ``loop``) register with ``inline=True``
and no function. A type in neither is accepted with a warning and skipped at run time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class NodeContext:
    run_id: str
    node_run_id: int
    node_id: str
    node_type: str
    iteration: int
    attempt: int
    config: dict[str, Any]
    raw_config: dict[str, Any]
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    timeout_s: float | None
    owner_id: int
    definition: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExecutorSpec:
    node_type: str
    run: Callable[[NodeContext], Any] | None
    config_schema: dict[str, Any]
    description: str
    inline: bool = False
    resolve_config: bool = True
    # Rules a JSON Schema cannot say: (JSON Pointer under the config, rule, message) per problem.
    check: Callable[[dict[str, Any]], list[tuple[str, str, str]]] | None = None
    # Called after commit whenever any run has finished (run id, its status): a type whose nodes
    # wait on other runs (``workflow``) resumes or cancels them here. See workflows.engine.hooks.
    on_run_finished: Callable[[str, str], None] | None = None


EXECUTORS: dict[str, ExecutorSpec] = {}


def executor(node_type: str, *, config_schema: dict[str, Any] | None = None, description: str = "",
             resolve_config: bool = True, check: Callable[[dict[str, Any]], list[tuple[str, str, str]]] | None = None,
             on_run_finished: Callable[[str, str], None] | None = None,
             ) -> Callable[[Callable[[NodeContext], Any]], Callable[[NodeContext], Any]]:
    def register(fn: Callable[[NodeContext], Any]) -> Callable[[NodeContext], Any]:
        EXECUTORS[node_type] = ExecutorSpec(node_type, fn,
                                            config_schema or {"type": "object", "additionalProperties": False},
                                            description or (fn.__doc__ or "").strip(), resolve_config=resolve_config,
                                            check=check, on_run_finished=on_run_finished)
        return fn

    return register


def inline_type(node_type: str, *, config_schema: dict[str, Any], description: str) -> None:
    EXECUTORS[node_type] = ExecutorSpec(node_type, None, config_schema, description, inline=True)


def get(node_type: str) -> ExecutorSpec | None:
    _load()
    return EXECUTORS.get(node_type)


def run_finished_hooks() -> list[Callable[[str, str], None]]:
    _load()
    return [spec.on_run_finished for spec in EXECUTORS.values() if spec.on_run_finished is not None]


def catalogue() -> dict[str, ExecutorSpec]:
    _load()
    return dict(EXECUTORS)


_loaded = False


def _load() -> None:
    """Import every executor module once, so the registry is complete in any process."""
    global _loaded
    if not _loaded:
        _loaded = True
        import workers.executors  # noqa: F401
