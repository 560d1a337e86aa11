"""``--output pretty`` for people, ``--output json`` for scripts: the API's answer, unchanged.

Streams (``run watch``, ``run start --watch``, ``logs --follow``) print one JSON object a line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import click

from aob.text import shown

PRETTY = "pretty"
JSON = "json"
MODES = (PRETTY, JSON)


# Text from the server is often someone else's (a gate's message from a run's inputs, an agent's
# patch description): a terminal must get it as text, never as controls. C0 controls but the line
# break and the tab, DEL and C1 controls are written escaped (ESC, BEL and CSI were enough to set an
# approver's clipboard through OSC 52, and a line break in a cell drew a forged row of the inbox).
# So are Unicode's bidirectional controls and the characters that draw nothing (aob.text: a
# right-to-left override shows the text after it reversed, so a message could show a word its bytes
# do not hold; tag characters spell text a model reads and a person does not see). Unicode's line and
# paragraph separators too, in JSON as well: a reader that splits lines as Unicode does (Python's
# str.splitlines) cut an object of a one-object-a-line stream in two.
_SEPARATORS = {c: f"\\u{c:04x}" for c in (0x2028, 0x2029)}
_CONTROLS = {**{c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0)) if c not in (0x09, 0x0A)}, **_SEPARATORS}
_IN_A_CELL = {**_CONTROLS, 0x09: "\\t", 0x0A: "\\n"}
_ESCAPED_IN_JSON = {**{c: f"\\u{c:04x}" for c in range(0x7F, 0xA0)}, **_SEPARATORS}  # json.dumps escapes C0 itself


def printable(text: str, *, lines: bool = True) -> str:
    """``text`` with its controls escaped; ``lines``: its line breaks kept (else escaped too)."""
    return shown(text).translate(_CONTROLS if lines else _IN_A_CELL)


def echo(message: Any = "", **kwargs: Any) -> None:
    """``click.echo`` of text that may hold the server's strings: printable."""
    click.echo(printable(message) if isinstance(message, str) else message, **kwargs)


def quote(label: str, text: str) -> None:
    """Someone else's words (an agent's patch description) on lines of their own, under ``label``
    and each after ``  | ``: its line breaks kept, it cannot draw a line that looks like AOB's."""
    echo(label)
    for line in text.split("\n"):
        echo(f"  | {printable(line, lines=False)}")


class Failure(click.ClickException):
    """A command that could not do what it was asked: ``error: <why>`` on stderr and exit 1, as the
    API's errors print (Click's own ``Error:`` is for its usage errors)."""

    def show(self, file: Any = None) -> None:
        echo(f"error: {self.format_message()}", err=True)


def dumps(data: Any, *, indent: int | None = None) -> str:
    # the escapes are JSON's own: a script reads the same value
    return shown(json.dumps(data, indent=indent, ensure_ascii=False, sort_keys=False, default=str)).translate(_ESCAPED_IN_JSON)


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
    line = f"{event.get('seq', ''):>4}  {clock:<12}  {event.get('type', ''):<18}  {event.get('node_id') or '-':<16}{tail}"
    return printable(line, lines=False)


def table(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> None:
    """Columns as wide as their widest cell."""
    cells = [[str(h) for h in headers]] + [["" if c is None else printable(str(c), lines=False) for c in row]
                                           for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())  # escaped above


def listed(value: Any, *, width: int | None = None, text: Callable[[Any], str] = str) -> str:
    """A text a list answers (a workflow's name or description, a version's or a patch's
    description, a run's error) for a cell: ``text(value)``, cut to ``width``. Past the answer's
    byte budget (AOB_DETAILS_MAX_BYTES) the server sends ``{"truncated": true, "bytes", "href"}``
    instead, which the item answers whole: said so, whole (where to read it is the point of it);
    sliced as text it stopped ``workflow list`` with a TypeError, printed as a dict elsewhere."""
    if isinstance(value, dict) and value.get("truncated") is True:
        return f"(too long to list: {value.get('bytes')} bytes, see {value.get('href')})"
    return "" if value is None else text(value)[:width]


def more_after(page: dict[str, Any], offset: int) -> None:
    """Under an offset-paged list with more after it, how many of how many it showed and the
    ``--offset`` that shows the next ones."""
    if page.get("next"):
        shown = len(page.get("results") or [])
        echo(f"({shown} of {page.get('count', '?')}; --offset {offset + shown} for more)")


def duration_text(ms: Any, missing: str = "-") -> str:
    """``1234`` → ``1.234 s``; under a second in ms."""
    if not isinstance(ms, int):
        return missing
    return f"{ms} ms" if ms < 1000 else f"{ms / 1000:.3f} s"


def short_time(value: Any) -> str:
    """``2026-11-24T01:41:05.123456Z`` → ``2026-11-24 01:41:05``."""
    return str(value or "")[:19].replace("T", " ")
