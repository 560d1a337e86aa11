"""``--output pretty`` for people, ``--output json`` for scripts: the API's answer, unchanged.

Streams (``run watch``, ``run start --watch``, ``logs --follow``) print one JSON object a line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import click

PRETTY = "pretty"
JSON = "json"
MODES = (PRETTY, JSON)


def dumps(data: Any, *, indent: int | None = None) -> str:
    return json.dumps(data, indent=indent, ensure_ascii=False, sort_keys=False, default=str)


class Output:
    def __init__(self, mode: str) -> None:
        self.mode = mode

    @property
    def json(self) -> bool:
        return self.mode == JSON

    def emit(self, data: Any, pretty: Callable[[Any], None] | None = None) -> None:
        """The answer as JSON, or as ``pretty`` draws it (default: indented JSON)."""
        if self.json or pretty is None:
            click.echo(dumps(data, indent=2))
        else:
            pretty(data)

    def emit_list(self, items: Iterable[Any], pretty: Callable[[Any], None]) -> None:
        """A list printed as it is read: as ``emit`` prints it whole (the same JSON text, item by
        item), or each item as ``pretty`` draws it; a long one is never held whole."""
        if not self.json:
            for item in items:
                pretty(item)
            return
        opened = False
        for item in items:  # json.dumps(items, indent=2): each item two spaces in, on its own lines
            click.echo(("[\n  " if not opened else ",\n  ") + dumps(item, indent=2).replace("\n", "\n  "), nl=False)
            opened = True
        click.echo("\n]" if opened else "[]")

    def line(self, data: Any, text: str) -> None:
        """One item of a stream."""
        click.echo(dumps(data) if self.json else text)

    def event(self, event: dict[str, Any]) -> None:
        self.line(event, event_line(event))


def event_line(event: dict[str, Any]) -> str:
    at = str(event.get("created_at") or "")
    clock = at[11:23] if len(at) >= 19 else at
    data = event.get("data")
    tail = f"  {dumps(data)}" if data else ""
    return f"{event.get('seq', ''):>4}  {clock:<12}  {event.get('type', ''):<18}  {event.get('node_id') or '-':<16}{tail}"


def table(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> None:
    """Columns as wide as their widest cell."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def duration_text(ms: Any, missing: str = "-") -> str:
    """``1234`` → ``1.234 s``; under a second in ms."""
    if not isinstance(ms, int):
        return missing
    return f"{ms} ms" if ms < 1000 else f"{ms / 1000:.3f} s"


def short_time(value: Any) -> str:
    """``2026-11-24T01:41:05.123456Z`` → ``2026-11-24 01:41:05``."""
    return str(value or "")[:19].replace("T", " ")
