"""``aob run`` and ``aob logs``: starting, following, steering and reading runs."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import click

from .client import ApiError, segment
from .output import Failure, dumps, duration_text, echo, listed, printable, short_time, table
from .session import (
    Session,
    definition_of,
    finite,
    idempotency_key_check,
    json_file_or_text,
    json_object,
    names_a_file,
    pass_session,
    read_json_file,
)
from .watch import FOLLOW_LOST, POLL_INTERVAL_S, events_all, run_follow

RUN_STATUSES = ("queued", "running", "waiting_for_approval", "completed", "failed", "cancelled")
WATCH_HELP = ("Then follow its events; exit 0 completed, 1 failed, 2 cancelled, 3 could not follow (unknown run, "
              "refused, or the server away past two minutes).")
# how long --watch waits, once the run completed, for a worker to store its metadata.output
OUTPUT_WAIT_S = 60.0


def _run_path(run_id: str, *rest: str) -> str:
    return "/".join(["runs", segment(run_id), *rest])


def _gate_hint(event: dict[str, Any]) -> str | None:
    """The exact commands that settle a gate the run now waits at."""
    data = event.get("data") or {}
    if event.get("type") == "approval_required":
        run_id, node_id = data.get("run_id") or "", event.get("node_id") or data.get("node_id") or ""
        who = ", ".join(data.get("approvers") or []) or "an approver"
        if data.get("nobody_can_decide"):  # no vote can settle it (approvals.services.nobody_can_decide)
            warning = data.get("warning") if data.get("warning") and "nobody" in data["warning"] else (
                f"nobody can decide the gate at {node_id} now: none of {who} can vote on it")
            return f"{warning}   (aob run cancel {run_id})"
        if data.get("cannot_be_approved"):
            said = data.get("warning")
            warning = said if said and "nobody" not in said else (
                f"fewer people could approve the gate at {node_id} than it needs: it can be rejected, never approved")
            return f"{warning}: aob reject {run_id} {node_id}   (or: aob run cancel {run_id})"
        return (f"waiting for {who} at {node_id}: aob approve {run_id} {node_id} --comment '…'"
                f"   (or: aob reject {run_id} {node_id})")
    if event.get("type") == "node_unserved":  # no running worker consumes its queue (the sweeper's word)
        return data.get("message")
    if event.get("type") == "node_held":  # its owner's slots of its type are taken (engine/admission.py)
        return (f"{event.get('node_id')} waits for a slot: its owner runs {data.get('limit')} nodes of its type "
                "at once (AOB_OWNER_MAX_RUNNING); it starts when one of them ends")
    if event.get("type") == "node_paused" and data.get("reason") == "budget":
        if data.get("above"):  # a run above the paused one, which its event does not name (``agents.budget``)
            return (f"paused on the budget of the run {data['above']} above this one (its budget's within_run names "
                    "the one above): aob run budget <that run> --max-cost-usd <usd>")
        whose = data.get("budget_run_id") or data.get("run_id") or "<run_id>"
        return f"paused on a run's budget: aob run budget {whose} --max-cost-usd <usd>"
    return None


def _gate_now(session: Session, run_id: str, event: dict[str, Any]) -> dict[str, Any]:
    """Whether a gate's ``approval_required`` event still says who can decide it: its approval as it
    is now (an approver deactivated since, a vote cast), from the API, which judges it by the same
    rule. One no longer pending is hinted as its event says (a watch replaying a run's history)."""
    approval_id = (event.get("data") or {}).get("approval_id")
    if event.get("type") != "approval_required" or approval_id is None:
        return {}
    try:
        now = session.client.get(f"approvals/{approval_id}")
    except Exception:  # noqa: BLE001 - the hint falls back to what the event said
        return {}
    if not isinstance(now, dict):
        return {}
    if now.get("status") != "pending":
        return {}
    return {key: now[key] for key in ("nobody_can_decide", "cannot_be_approved") if key in now}


def _follow(session: Session, run_id: str, after: int = 0, poll: bool = False) -> None:
    def on_event(event: dict[str, Any]) -> None:
        session.output.event(event)
        hint = _gate_hint({**event, "data": {"run_id": run_id, **(event.get("data") or {}), **_gate_now(session, run_id, event)}})
        if hint:  # to stderr under -o json, so the stream stays one JSON object a line; one line (it
            # holds others' words: an approver's name, a sweeper's message)
            echo(f"  → {printable(hint, lines=False)}", err=session.output.json)

    try:
        code = run_follow(client=session.client, run_id=run_id, after=after, on_event=on_event, use_ws=not poll)
    except ApiError as exc:  # could not follow: not the run's failure (1)
        exc.exit_code = FOLLOW_LOST
        raise
    if not session.output.json:
        try:
            _print_outcome(session, run_id)
        except ApiError as exc:  # the run's own exit code stands: only its output went unread
            echo(f"error: the run's output could not be read: {exc.message} (aob run status {run_id})", err=True)
    raise SystemExit(code)


def _print_outcome(session: Session, run_id: str) -> None:
    run = session.client.get(_run_path(run_id))
    deadline = time.monotonic() + OUTPUT_WAIT_S
    while run.get("output_pending") and time.monotonic() < deadline:  # a worker computes metadata.output
        time.sleep(POLL_INTERVAL_S)
        run = session.client.get(_run_path(run_id))
    echo(f"{run['status']} in {duration_text(run.get('duration_ms'))}")
    if run.get("output_pending"):
        echo(f"output: still being computed (aob run status {run_id})")
    elif run.get("output_error"):
        echo(f"output error: {_error_text(run['output_error'])}")
    elif run["status"] == "completed":
        echo(f"output: {dumps(run.get('output'))}")


def _error_text(error: Any) -> str:
    """A node's or run's error: ``{"message", "error_type", ...}``, or older plain text; on one line
    (it quotes the outside world: a provider's or a remote server's message)."""
    if isinstance(error, dict):
        where = f" (node {error['node_id']})" if error.get("node_id") else ""
        return printable(f"{error.get('message') or error.get('error_type') or error}{where}", lines=False)
    return "" if error is None else printable(str(error), lines=False)


def _started_text(d: dict[str, Any]) -> str:
    tag = f" ({d['tag']})" if d.get("tag") else ""
    replay = f", a replay of {d['replay_of']}" if d.get("replay_of") else ""
    return f"run {d['run_id']} {d['status']}{tag}{replay}"


def _started(session: Session, answer: dict[str, Any], watch: bool) -> None:
    """The new run; with ``watch``, the first line of a stream, then its events."""
    if not watch:
        session.output.emit(answer, lambda d: echo(_started_text(d)))
        return
    session.output.line(answer, _started_text(answer))
    _follow(session, str(answer["run_id"]))


@click.group()
def run() -> None:
    """Workflow runs."""


@run.command("start")
@click.argument("target", metavar="TAG|FILE.json")
@click.option("--inputs", "-i", default=None, metavar="FILE|JSON", help="The run's inputs: a JSON file or JSON text.")
@click.option("--watch", "-w", is_flag=True, help=WATCH_HELP)
@click.option("--idempotency-key", default=None, metavar="KEY", callback=idempotency_key_check,
              help="Sent as the Idempotency-Key header (default: a new UUID per invocation); the same key and "
              "inputs within 24 h return the run already started instead of a second one.")
@pass_session
def run_start(session: Session, target: str, inputs: str | None, watch: bool, idempotency_key: str | None) -> None:
    """Run a saved workflow (TAG), or the definition in FILE.json without saving it."""
    body: dict[str, Any] = {"inputs": json_object(json_file_or_text(inputs, "--inputs"), "--inputs")
                            if inputs is not None else {}}  # "" (an unset "$INPUTS") is an error, not {}
    # a path naming no file (a typo) is read as one, to say so: sent as a tag it was refused by the tag's rule
    if names_a_file(target) or Path(target).name != target or target.lower().endswith(".json"):
        body["workflow"] = definition_of(read_json_file(target, "workflow file"), "the workflow file")
    else:
        body["tag"] = target
    _started(session, session.client.post_once("runs", body, idempotency_key=idempotency_key or str(uuid.uuid4())), watch)


@run.command("watch")
@click.argument("run_id")
@click.option("--after", type=click.IntRange(0), default=0, help="Skip the events up to this seq.")
@click.option("--poll", is_flag=True, help="Poll the REST API instead of opening a WebSocket.")
@pass_session
def run_watch(session: Session, run_id: str, after: int, poll: bool) -> None:
    """Print RUN_ID's events as they happen; exit 0 completed, 1 failed, 2 cancelled, 3 could not
    follow (unknown run, refused, or the server away past two minutes)."""
    _follow(session, run_id, after, poll)


@run.command("status")
@click.argument("run_id")
@pass_session
def run_status(session: Session, run_id: str) -> None:
    """A run and each of its nodes."""
    details = session.client.get(_run_path(run_id, "details"))

    def pretty(d: dict[str, Any]) -> None:
        r = d["run"]
        echo(f"run {r['run_id']}  {r['status']}  {r['tag'] or '(no tag)'}")
        echo(f"created {short_time(r['created_at'])}  finished {short_time(r['finished_at']) or '-'}  "
                   f"duration {duration_text(r.get('duration_ms'))}")
        if r.get("replay_of"):
            echo(f"replay of {r['replay_of']} from {r['replay_from_node']}")
        if r.get("error"):
            echo(f"error: {_error_text(r['error'])}")
        if r.get("output_pending"):
            echo("output: being computed")
        elif r.get("output_error"):
            echo(f"output error: {_error_text(r['output_error'])}")
        elif r["status"] == "completed":
            echo(f"output: {dumps(r.get('output'))}")
        echo("")
        # One error shown once: the node whose failure failed the run has it on the line above.
        failed_node = (r.get("error") or {}).get("node_id") if isinstance(r.get("error"), dict) else None
        # a node that waits says for what (the server's words), where a failed one says why
        table([(n["node_id"], n["type"], n["status"], n["attempts"], duration_text(n["execution_time_ms"], ""),
                "(above)" if n["node_id"] == failed_node and n["error"] else _error_text(n["error"])
                or (f"waiting for {n['waiting_for']}" if n.get("waiting_for") else ""))
               for n in d["nodes"]], ["NODE", "TYPE", "STATUS", "ATTEMPTS", "TIME", "ERROR / WAITING FOR"])
        count = d.get("patches_count", len(d["patches"]))
        echo("")
        if count:
            echo(f"{count} patch(es): `aob patch list {r['run_id']}`")
        # what a patch to it is written against: aob patch propose --base-artifact-id
        echo(f"definition {r['current_artifact_id']}")

    session.output.emit(details, pretty)


@run.command("list")
@click.option("--status", type=click.Choice(RUN_STATUSES), default=None)
@click.option("--workflow", "--tag", "workflow", default=None, help="Only this workflow's runs (its tag).")
@click.option("--since", "--created-after", "since", default=None, metavar="ISO-TIME",
              help="Created at or after, e.g. 2026-12-01 or 2026-12-01T10:00Z (the API's created_after).")
@click.option("--until", "--created-before", "until", default=None, metavar="ISO-TIME",
              help="Created before (the API's created_before).")
@click.option("--owner", default=None, help="Staff: another user's runs.")
@click.option("--search", "-q", default=None, help="Text in the run's inputs or error.")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--cursor", default=None, help="The next page: the cursor the previous page printed.")
@pass_session
def run_list(session: Session, status: str | None, workflow: str | None, since: str | None, until: str | None,
             owner: str | None, search: str | None, limit: int, cursor: str | None) -> None:
    """Your runs, newest first (keyset pages: --cursor continues where a page ended)."""
    page = session.client.get("runs", status=status, workflow=workflow, created_after=since,
                              created_before=until, owner=owner, q=search, limit=limit, cursor=cursor)

    def pretty(d: dict[str, Any]) -> None:
        table([(r["run_id"], r["status"], r["tag"] or "-", short_time(r["created_at"]),
                duration_text(r.get("duration_ms")), listed(r.get("error"), width=60, text=_error_text))
               for r in d["results"]],
              ["RUN", "STATUS", "WORKFLOW", "CREATED", "DURATION", "ERROR"])
        if d.get("next"):
            next_cursor = parse_qs(urlsplit(d["next"]).query).get("cursor", [""])[0]
            echo(f"(more: --cursor {next_cursor})")

    session.output.emit(page, pretty)


@run.command("cancel")
@click.argument("run_id")
@pass_session
def run_cancel(session: Session, run_id: str) -> None:
    """Cancel a run: nothing new starts, waiting approvals are withdrawn."""
    answer = session.client.post(_run_path(run_id, "cancel"))
    session.output.emit(answer, lambda d: echo(f"run {d['run_id']} {d['status']}"))


DELETE_TRIES = 20  # requests of AOB_PRUNE_REQUEST_S each (10 s) for one run's rows, or that delete nothing
FINISHED_STATUSES = ("completed", "failed", "cancelled")


@run.command("delete")
@click.argument("run_ids", nargs=-1, metavar="[RUN_ID]...")
@click.option("--workflow", default=None, help="Instead of ids: the finished runs of this workflow (tag).")
@click.option("--status", type=click.Choice(FINISHED_STATUSES), default=None, help="... of this finished status.")
@click.option("--created-after", default=None, help="... created at or after (ISO 8601).")
@click.option("--created-before", default=None, help="... created before (ISO 8601).")
@click.option("--dry-run", is_flag=True, help="With the filters: count what would be deleted, delete nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before deleting.")
@pass_session
def run_delete(session: Session, run_ids: tuple[str, ...], workflow: str | None, status: str | None,
               created_after: str | None, created_before: str | None, dry_run: bool, yes: bool) -> None:
    """Delete finished runs of yours with everything that is their own: what your runs keep
    (AOB_OWNER_STORAGE_BYTES) goes down by what they kept. Name runs by id, or choose them with the
    runs list's filters (all of yours: --created-before with the time now; asked, the count comes
    first). Each id is deleted on its own: one that cannot be is said, the rest go on, and the exit
    status is 1."""
    filters = {k: v for k, v in (("workflow", workflow), ("status", status), ("created_after", created_after),
                                 ("created_before", created_before)) if v is not None}
    if bool(run_ids) == bool(filters):
        raise click.UsageError("name runs by id, or choose them with --workflow, --status, --created-after or "
                               "--created-before (not both)")
    if dry_run and not filters:
        raise click.UsageError("--dry-run counts what the filters choose: name no ids with it")
    if filters and (dry_run or not yes):
        preview = session.client.post("runs/delete", {**filters, "dry_run": True})
        if dry_run or not preview["would_delete"]:  # nothing to ask about: said, and done
            session.output.emit(preview, lambda d: echo(_counted(d)))
            return
        click.confirm(f"{_counted(preview)}. Delete them, their node runs, events and approvals?",
                      abort=True, err=True)
    elif not yes:
        click.confirm(f"Delete {_runs(len(set(run_ids)))}, their node runs, events and approvals?",
                      abort=True, err=True)
    if filters:
        _delete_matching(session, filters)
        return
    ids = list(dict.fromkeys(run_ids))
    if len(ids) == 1:  # one run: its answer, or its error, as every command gives one
        _delete_one(session, ids[0])
        session.output.emit({"run_id": ids[0], "deleted": True}, lambda d: echo(f"deleted run {d['run_id']}"))
        return
    failed = 0
    for run_id in ids:
        try:
            _delete_one(session, run_id)
        except click.ClickException as exc:
            failed += 1
            session.output.line({"run_id": run_id, "deleted": False, "error": exc.message},
                                f"not deleted run {run_id}: {exc.message}")
        else:
            session.output.line({"run_id": run_id, "deleted": True}, f"deleted run {run_id}")
    if failed:
        raise Failure(f"{failed} of {len(ids)} runs were not deleted")


def _runs(n: int) -> str:
    return f"{n} run" + ("" if n == 1 else "s")


def _counted(preview: dict[str, Any]) -> str:
    """A delete's dry run in words: ``at_least`` names a count that stopped at the server's cap."""
    def more(name: str) -> str:
        return "at least " if name in preview["at_least"] else ""
    text = f"{more('would_delete')}{_runs(preview['would_delete'])} would be deleted"
    if preview["kept"]:
        text += f"; {more('kept')}{preview['kept']} stay, as an unfinished run reads each"
    return text


def _delete_one(session: Session, run_id: str) -> None:
    for _ in range(DELETE_TRIES):
        if session.client.post(_run_path(run_id, "delete")) is None:  # 204; a 202 is a request whose time ran out
            return
    raise Failure(f"run {run_id} is still being deleted: run the command again to go on")


def _delete_matching(session: Session, filters: dict[str, str]) -> None:
    deleted, idle = 0, 0
    while True:
        answer = session.client.post("runs/delete", filters)
        deleted += answer["deleted"]
        if answer["finished"]:
            break
        idle = idle + 1 if not answer["deleted"] else 0  # each request goes on where the last ended
        if idle >= DELETE_TRIES:
            raise Failure(f"deleted {deleted} runs; the rest are still being deleted: run the "
                          "command again to go on")
    kept = answer.get("kept") or 0
    session.output.emit({"deleted": deleted, "kept": kept}, lambda d: echo(
        f"deleted {deleted} run{'' if deleted == 1 else 's'}" + (f"; {kept} stay, as an unfinished run reads each (a parent waiting for its "
                                     "outcome, a replay of it)" if kept else "")))


@run.command("budget")
@click.argument("run_id")
@click.option("--max-cost-usd", type=click.FloatRange(0), default=None, callback=finite,
              help="The run's new cost ceiling in USD.")
@click.option("--max-tokens", type=click.IntRange(0), default=None, help="The run's new token ceiling.")
@pass_session
def run_budget(session: Session, run_id: str, max_cost_usd: float | None, max_tokens: int | None) -> None:
    """Raise a run's LLM spend ceilings; agent nodes paused on them resume where they stopped."""
    if max_cost_usd is None and max_tokens is None:
        raise click.UsageError("give --max-cost-usd, --max-tokens or both")
    body = {k: v for k, v in (("max_cost_usd", max_cost_usd), ("max_tokens", max_tokens)) if v is not None}
    answer = session.client.post(_run_path(run_id, "budget"), body)
    session.output.emit(answer, lambda d: echo(
        f"run {d['run_id']} {d['status']}: budget {_ceilings(d['budget'])} "
        f"(spent ${d['usage'].get('cost_usd', 0)}, {d['usage'].get('tokens', 0)} tokens)"))


def _ceilings(budget: dict[str, Any]) -> str:
    """A run's ceilings as the API gives them; a sub-workflow's unset ones are its parent's."""
    cost, tokens = budget.get("max_cost_usd"), budget.get("max_tokens")
    above = f" within run {budget['within_run']}" if budget.get("within_run") else ""
    return (f"${cost}" if cost is not None else "no cost ceiling of its own") + ", " + (
        f"{tokens} tokens" if tokens is not None else "no token ceiling of its own") + above


@run.command("replay")
@click.argument("run_id")
@click.argument("node_id")
@click.option("--watch", "-w", is_flag=True, help=WATCH_HELP)
@click.option("--reuse-llm", is_flag=True,
              help="Agent nodes reuse the recorded model responses while the conversation matches (no call, no cost).")
@click.option("--idempotency-key", default=None, metavar="KEY", callback=idempotency_key_check,
              help="Sent as the Idempotency-Key header (default: a new UUID per invocation); the same key within "
              "24 h returns the replay already started instead of a second one.")
@pass_session
def run_replay(session: Session, run_id: str, node_id: str, watch: bool, reuse_llm: bool,
               idempotency_key: str | None) -> None:
    """A new run of RUN_ID's definition that runs NODE_ID and what follows it again, reusing the
    other completed nodes' outputs."""
    body = {"reuse_llm": True} if reuse_llm else {}
    _started(session, session.client.post_once(_run_path(run_id, "nodes", segment(node_id), "replay"), body,
                                           idempotency_key=idempotency_key or str(uuid.uuid4())), watch)


@click.command("logs")
@click.argument("run_id")
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the run ends (as `run watch`).")
@click.option("--after", type=click.IntRange(0), default=0, help="Skip the events up to this seq.")
@pass_session
def logs(session: Session, run_id: str, follow: bool, after: int) -> None:
    """A run's events, one line each."""
    if follow:
        _follow(session, run_id, after)
    session.output.emit_list(events_all(session.client, run_id, after), session.output.event)
