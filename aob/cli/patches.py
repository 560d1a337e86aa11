"""``aob patch``: changes to a running workflow's definition, proposed and reviewed."""

from __future__ import annotations

import uuid
from typing import Any

import click

from .client import segment
from .output import dumps, echo, listed, more_after, printable, quote, short_time, table
from .session import Session, idempotency_key_check, operations_from, pass_session, read_json_file


def _patches_path(run_id: str, *rest: str) -> str:
    return "/".join(["runs", segment(run_id), "patches", *rest])


@click.group()
def patch() -> None:
    """Run patches (RFC 6902 operations on a running workflow)."""


@patch.command("list")
@click.argument("run_id")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0)
@pass_session
def patch_list(session: Session, run_id: str, limit: int, offset: int) -> None:
    """A run's patches, in the order they were proposed (`show` for one's operations)."""
    answer = session.client.get(_patches_path(run_id), limit=limit, offset=offset)

    def pretty(d: dict[str, Any]) -> None:
        rows = [(p["seq"], p["status"], p["op_count"], p["node_id"] or "-", short_time(p["created_at"]),
                 listed(p["description"])) for p in d["results"]]
        table(rows, ["SEQ", "STATUS", "OPS", "BY NODE", "CREATED", "DESCRIPTION"])
        more_after(d, offset)

    session.output.emit(answer, pretty)


def _pretty_patch(d: dict[str, Any]) -> None:
    echo(printable(f"patch {d['seq']} of run {d['run_id']}: {d['status']}"  # a reason may quote the operations
                   f"{' (' + d['reason'] + ')' if d.get('reason') else ''}", lines=False))
    echo(f"{d['before_artifact_id']} -> {d['artifact_id']}")
    if d.get("description"):
        quote("description (the proposer's words, not AOB's):", d["description"])
    echo(dumps(d["operations"], indent=2))


@patch.command("show")
@click.argument("run_id")
@click.argument("seq", type=click.IntRange(0))
@pass_session
def patch_show(session: Session, run_id: str, seq: int) -> None:
    """One patch and its operations."""
    session.output.emit(session.client.get(_patches_path(run_id, str(seq))), _pretty_patch)


@patch.command("propose")
@click.argument("run_id")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--description", "-d", default=None, help="Why (default: the file's \"description\", if any).")
@click.option("--idempotency-key", default=None, metavar="KEY", callback=idempotency_key_check,
              help="Sent as the Idempotency-Key header (default: a new UUID per invocation); the same key within "
                   "24 h answers the patch the first request made, never applies it twice.")
@click.option("--base-artifact-id", default=None, metavar="ARTIFACT_ID",
              help="The run's definition your operations were written against (its current_artifact_id, as "
                   "`aob run status` shows it; default: the file's \"base_artifact_id\", if any): refused, naming "
                   "the current one, if a patch changed it since. Without one the operations apply to whatever is "
                   "current, where /nodes/2 may be another node by then.")
@pass_session
def patch_propose(session: Session, run_id: str, file: str, description: str | None,
                  idempotency_key: str | None, base_artifact_id: str | None) -> None:
    """Propose the operations in FILE for RUN_ID: applied now, or held for approval by the run's policy."""
    content = read_json_file(file, "patch file")
    operations, from_file = operations_from(content, "the patch file")
    body: dict[str, Any] = {"operations": operations, "description": description or from_file or ""}
    base = base_artifact_id or (content.get("base_artifact_id") if isinstance(content, dict) else None)
    if base is not None:
        body["base_artifact_id"] = base  # the server judges it (a string, an artifact id), as it would in a body
    answer = session.client.post_once(_patches_path(run_id), body,
                                  idempotency_key=idempotency_key or str(uuid.uuid4()),
                                  what="the patch may have been applied: propose it")
    session.output.emit(answer, _pretty_patch)
