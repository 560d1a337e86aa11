"""``aob workflow``: saved definitions behind a tag, their versions, validation and design-time patches."""

from __future__ import annotations

from typing import Any

import click

from .client import segment
from .output import dumps, echo, listed, more_after, short_time, table
from .session import (
    Session,
    definition_of,
    json_object,
    operations_from,
    pass_session,
    read_json_file,
    shown_version,
)

SCOPES = ("user", "global", "all")


def _tag_path(tag: str, *rest: str) -> str:
    return "/".join(["workflows", segment(tag), *rest])


def _warnings(answer: dict[str, Any]) -> None:
    for problem in answer.get("warnings") or []:
        echo(f"warning: {problem.get('path') or '/'}: {problem.get('message')} ({problem.get('rule')})", err=True)


@click.group()
def workflow() -> None:
    """Saved workflow definitions."""


@workflow.command("list")
@click.option("--scope", type=click.Choice(SCOPES), default="user", show_default=True)
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0)
@click.option("--search", "-q", default=None, help="Text in the tag, name or description.")
@pass_session
def workflow_list(session: Session, scope: str, limit: int, offset: int, search: str | None) -> None:
    """The workflows you can see, with their last run."""
    page = session.client.get("workflows", scope=scope, limit=limit, offset=offset, q=search)

    def pretty(d: dict[str, Any]) -> None:
        rows = [(w["tag"], w["version"], w["nodes_count"], w["edges_count"], w["owner"], short_time(w["updated_at"]),
                 (w.get("last_run") or {}).get("status", "-"),
                 listed(w.get("description") or w.get("name"), width=50))
                for w in d["results"]]
        table(rows, ["TAG", "VERSION", "NODES", "EDGES", "OWNER", "UPDATED", "LAST RUN", "DESCRIPTION"])
        more_after(d, offset)

    session.output.emit(page, pretty)


@workflow.command("show")
@click.argument("tag")
@click.option("--version", "seq", type=click.IntRange(0), default=None, help="An earlier version (see `versions`).")
@pass_session
def workflow_show(session: Session, tag: str, seq: int | None) -> None:
    """A workflow's current (or an earlier) definition."""
    if seq is None:
        answer = session.client.get(_tag_path(tag), materialize="true")
    else:
        answer = session.client.get(_tag_path(tag, "versions", str(seq)), materialize="true")

    def pretty(d: dict[str, Any]) -> None:
        version = d.get("version", d.get("seq"))
        echo(f"{d['tag']}  version {version}  {d['artifact_id']}")
        if "owner" in d:
            echo(f"owner {d['owner']}, {d['nodes_count']} nodes, {d['edges_count']} edges, "
                       f"updated {short_time(d['updated_at'])}")
        else:
            echo(f"created {short_time(d['created_at'])}  {d.get('description') or ''}".rstrip())
        echo(dumps(d.get("definition"), indent=2))

    session.output.emit(answer, pretty)


BASE_VERSION = click.option(
    "--base-version", type=click.IntRange(0), default=None,
    help="The version your change started from: refused, naming the current one, if another is current now.")


@workflow.command("create")
@click.argument("tag")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--description", "-d", default="", help="Why this version exists.")
@BASE_VERSION
@click.option("--force", is_flag=True, help="Save over whatever version is current (no --base-version check).")
@pass_session
def workflow_create(session: Session, tag: str, file: str, description: str, base_version: int | None,
                    force: bool) -> None:
    """Save the definition in FILE under TAG (a new version when it differs from the current one).

    FILE is a definition, or what `aob -o json workflow show TAG` printed: then its version is the
    base version, and the save is refused if someone saved another since (--force saves over it)."""
    if force and base_version is not None:
        raise click.UsageError("--force and --base-version contradict each other: give one")
    content = json_object(read_json_file(file, "workflow file"), "the workflow file")
    definition = content
    shown = shown_version(content)
    if shown is not None:
        definition = content["definition"]
        if content["tag"] == tag and base_version is None and not force:
            base_version = shown
    body: dict[str, Any] = {"tag_name": tag, "workflow": definition, "description": description}
    if base_version is not None:
        body["base_version"] = base_version
    answer = session.client.post("workflows", body)

    def pretty(d: dict[str, Any]) -> None:
        what = "saved" if d["created"] else "unchanged:"
        echo(f"{what} {d['tag']} version {d['version']} ({d['artifact_id']}, "
                   f"{d['nodes_count']} nodes, {d['edges_count']} edges)")
        _warnings(d)

    session.output.emit(answer, pretty)


@workflow.command("validate")
@click.argument("file", type=click.Path(dir_okay=False))
@pass_session
def workflow_validate(session: Session, file: str) -> None:
    """Check the definition in FILE without saving it; exits 1 when it is invalid."""
    answer = session.client.post("workflows/validate", {"workflow": definition_of(read_json_file(file, "workflow file"),
                                                                                  "the workflow file")})

    def pretty(d: dict[str, Any]) -> None:
        if d["valid"]:
            echo(f"{file}: valid")
        else:
            echo(f"error: {file}: invalid", err=True)
        for problem in d["errors"]:
            echo(f"  {problem['path'] or '/'}: {problem['message']} ({problem['rule']})", err=True)
        _warnings(d)

    session.output.emit(answer, pretty)
    if not answer["valid"]:
        raise SystemExit(1)


@workflow.command("patch")
@click.argument("tag")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--description", "-d", default=None, help="Why (default: the file's \"description\", if any).")
@BASE_VERSION
@pass_session
def workflow_patch(session: Session, tag: str, file: str, description: str | None, base_version: int | None) -> None:
    """Apply the RFC 6902 operations in FILE to TAG's current definition: a new version."""
    operations, from_file = operations_from(read_json_file(file, "patch file"), "the patch file")
    body: dict[str, Any] = {"operations": operations, "description": description or from_file or ""}
    if base_version is not None:
        body["base_version"] = base_version
    answer = session.client.patch(_tag_path(tag, "patch"), body)

    def pretty(d: dict[str, Any]) -> None:
        echo(f"patched {d['tag']}: version {d['version']} ({d['artifact_id']})")
        _warnings(d)

    session.output.emit(answer, pretty)


@workflow.command("versions")
@click.argument("tag")
@pass_session
def workflow_versions(session: Session, tag: str) -> None:
    """Every version of TAG, oldest first."""
    answer = session.client.get(_tag_path(tag, "versions"))
    session.output.emit(answer, lambda d: table(
        [(v["seq"], v["artifact_id"], short_time(v["created_at"]), listed(v["description"])) for v in d],
        ["SEQ", "ARTIFACT", "CREATED", "DESCRIPTION"]))


@workflow.command("delete")
@click.argument("tag")
@click.option("--force", is_flag=True, help="Also delete the schedules and hooks that start TAG (without it, a "
              "tag in use is refused, naming them).")
@click.confirmation_option("--yes", "-y", prompt="Delete this workflow and its versions?")
@pass_session
def workflow_delete(session: Session, tag: str, force: bool) -> None:
    """Delete TAG and its versions (runs keep the definitions they ran)."""
    session.client.delete(_tag_path(tag), params={"force": "true"} if force else None)
    session.output.emit({"tag": tag, "deleted": True}, lambda d: echo(f"deleted {tag}"))
