"""The apps depend downwards only: no import circle between them, in any module, inside functions
included (an import dodged into a function body is still an import).

The contracts live in pyproject.toml ([tool.importlinter]); this test runs them, and checks the
app-level graph for a circle directly, so a contract loosened by mistake still cannot hide one."""

from __future__ import annotations

import os
from pathlib import Path

import grimp
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]
APPS = ["workflows", "workers", "approvals", "agents", "subflows", "triggers", "retention"]


def test_the_import_contracts_hold(capsys) -> None:
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        code = lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True)
    finally:
        os.chdir(cwd)
    assert code == 0, capsys.readouterr().out


def _app_edges() -> dict[str, set[str]]:
    graph = grimp.build_graph(*APPS, cache_dir=None)
    edges: dict[str, set[str]] = {app: set() for app in APPS}
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            source, target = module.split(".")[0], imported.split(".")[0]
            if source != target:
                edges[source].add(target)
    return edges


def _circle(edges: dict[str, set[str]]) -> list[str] | None:
    """A circle in the graph, as the path that closes it, or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circle_between_the_apps() -> None:
    edges = _app_edges()
    assert _circle(edges) is None, f"import circle: {' -> '.join(_circle(edges))}"
    # the direction, as docs/ARCHITECTURE.md draws it
    assert "workers" in edges["approvals"] and "workflows" in edges["workers"]
    assert not edges["workflows"], edges["workflows"]


def test_the_circle_finder_finds_one() -> None:
    assert _circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _circle({"a": {"b"}, "b": set()}) is None
