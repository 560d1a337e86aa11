"""``aob approvals``, ``aob approve``, ``aob reject``: the inbox and deciding."""

from __future__ import annotations

from typing import Any

import click

from .client import segment
from .output import echo, more_after, short_time, table
from .session import Session, json_file_or_text, pass_session

APPROVAL_STATUSES = ("pending", "approved", "rejected", "expired", "cancelled", "all")


@click.group(invoke_without_command=True)
@click.pass_context
def approvals(ctx: click.Context) -> None:
    """Approvals: `aob approvals list`."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(approvals_list)


@approvals.command("list")
@click.option("--status", type=click.Choice(APPROVAL_STATUSES), default="pending", show_default=True,
              help="pending: the ones you can decide now.")
@click.option("--run", "run_id", default=None, help="Only this run's.")
@click.option("--asked-by", default=None, help="Only those of this user's runs (username).")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0)
@pass_session
def approvals_list(session: Session, status: str, run_id: str | None, asked_by: str | None, limit: int,
                   offset: int) -> None:
    """Approvals waiting for you, the askers in turn (or with --status, any you can see)."""
    page = session.client.get("approvals", status=None if status == "all" else status, run=run_id,
                              asked_by=asked_by, limit=limit, offset=offset)

    def pretty(d: dict[str, Any]) -> None:
        table([(a["id"], a["run_id"], a["node_id"], a.get("asked_by", ""), a["status"],
                short_time(a["deadline"]) or "-", a["message"])
               for a in d["results"]], ["ID", "RUN", "NODE", "ASKER", "STATUS", "DEADLINE", "MESSAGE"])
        more_after(d, offset)

    session.output.emit(page, pretty)


def _decide(session: Session, target: tuple[str, ...], approve: bool, comment: str, data: str | None) -> None:
    form = json_file_or_text(data, "--data") if data is not None else None
    if len(target) == 1:
        if not target[0].isdigit():
            raise click.UsageError("give an approval id, or a run id and a node id")
        answer = session.client.post(f"approvals/{segment(target[0])}/decide",
                                     {"approve": approve, "comment": comment, "data": form})
    elif len(target) == 2:
        answer = session.client.post("approvals", {"run_id": target[0], "node_id": target[1], "approved": approve,
                                                   "comment": comment, "data": form})
    else:
        raise click.UsageError("give an approval id, or a run id and a node id")

    def pretty(d: dict[str, Any]) -> None:
        verb = "approved" if approve else "rejected"
        echo(f"{verb} approval {d['id']} (run {d['run_id']}, node {d['node_id']}): now {d['status']}")

    session.output.emit(answer, pretty)


def _decide_command(approve: bool) -> click.Command:
    verb = "approve" if approve else "reject"

    @click.command(verb)
    @click.argument("target", nargs=-1, required=True, metavar="APPROVAL_ID | RUN_ID NODE_ID")
    @click.option("--comment", "-m", default="", help="Kept with the decision.")
    @click.option("--data", default=None, metavar="FILE|JSON", help="The approval's form answer.")
    @pass_session
    def decide(session: Session, target: tuple[str, ...], comment: str, data: str | None) -> None:
        _decide(session, target, approve, comment, data)

    decide.help = f"{verb.capitalize()} an approval, by its id or by the run and node it holds."
    return decide


approve = _decide_command(True)
reject = _decide_command(False)
