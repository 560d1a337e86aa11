"""``aob schedule``, ``aob hook``, ``aob secret`` and ``aob prune``: what starts runs, what they
may send, and how long they are kept."""

from __future__ import annotations

import re
from typing import Any

import click

from .client import segment
from .output import Failure, echo, more_after, short_time, table
from .session import Session, json_file_or_text, json_object, pass_session, warn_if_typed


@click.group()
def schedule() -> None:
    """Cron schedules of workflows (run by Celery beat)."""


@schedule.command("list")
@pass_session
def schedule_list(session: Session) -> None:
    """Your schedules."""
    items = session.client.get("schedules")
    session.output.emit(items, lambda d: table(
        [(s["id"], s["tag"], s["cron"], s["timezone"], s["catch_up"], "on" if s["enabled"] else "off", s["name"])
         for s in d], ["ID", "TAG", "CRON", "TZ", "CATCH-UP", "ENABLED", "NAME"]))


@schedule.command("add")
@click.argument("tag")
@click.argument("cron")
@click.option("--timezone", "tz", default="UTC", show_default=True, help="IANA name, e.g. Europe/Paris.")
@click.option("--inputs", default=None, help="JSON object, or a path to a JSON file.")
@click.option("--catch-up", type=click.Choice(["skip", "run_once"]), default="skip", show_default=True,
              help="What a firing missed while beat was down does.")
@click.option("--version", "version", type=int, default=None, help="Pin a version (seq); default: the latest.")
@click.option("--name", default="")
@pass_session
def schedule_add(session: Session, tag: str, cron: str, tz: str, inputs: str | None, catch_up: str,
                 version: int | None, name: str) -> None:
    """Run TAG on CRON (five fields: minute hour day month weekday)."""
    body: dict[str, Any] = {"tag": tag, "cron": cron, "timezone": tz, "catch_up": catch_up, "name": name}
    if inputs is not None:
        body["inputs"] = json_object(json_file_or_text(inputs, "--inputs"), "--inputs")
    if version is not None:
        body["version"] = version
    answer = session.client.post("schedules", body)
    session.output.emit(answer, lambda d: echo(f"schedule {d['id']}: {d['tag']} at '{d['cron']}' "
                                                     f"({d['timezone']}, catch-up {d['catch_up']})"))


@schedule.command("enable")
@click.argument("schedule_id", type=int)
@click.option("--off", is_flag=True, help="Disable instead.")
@pass_session
def schedule_enable(session: Session, schedule_id: int, off: bool) -> None:
    """Enable (or with --off disable) a schedule."""
    answer = session.client.patch(f"schedules/{schedule_id}", {"enabled": not off})
    session.output.emit(answer, lambda d: echo(f"schedule {d['id']} {'enabled' if d['enabled'] else 'disabled'}"))


@schedule.command("remove")
@click.argument("schedule_id", type=int)
@pass_session
def schedule_remove(session: Session, schedule_id: int) -> None:
    """Remove a schedule (its firings go with it); its workflow stays."""
    session.client.delete(f"schedules/{schedule_id}")
    session.output.emit({"removed": schedule_id}, lambda d: echo(f"schedule {schedule_id} removed"))


@schedule.command("firings")
@click.argument("schedule_id", type=int)
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0, help="Firings to skip (newest first).")
@pass_session
def schedule_firings(session: Session, schedule_id: int, limit: int, offset: int) -> None:
    """A schedule's firings, newest first: when, and the run each started."""
    page = session.client.get(f"schedules/{schedule_id}/firings", limit=limit, offset=offset)

    def pretty(d: dict[str, Any]) -> None:
        table([(short_time(f["fire_time"]), f["outcome"], f["run_id"] or "-", f["deliveries"]) for f in d["results"]],
              ["DUE", "OUTCOME", "RUN", "SENT"])
        more_after(d, offset)

    session.output.emit(page, pretty)


@click.group()
def hook() -> None:
    """Webhook triggers: POST /api/v1/hooks/{id}, signed with the hook's secret."""


@hook.command("list")
@pass_session
def hook_list(session: Session) -> None:
    """Your webhooks: id, workflow tag, whether on, last delivery and the URL to send deliveries to."""
    items = session.client.get("hooks")
    session.output.emit(items, lambda d: table(
        [(h["id"], h["tag"], "on" if h["enabled"] else "off", short_time(h["last_delivery_at"]) or "-", h["url"])
         for h in d], ["ID", "TAG", "ENABLED", "LAST DELIVERY", "URL"]))


@hook.command("add")
@click.argument("tag")
@click.option("--cel", default=None, help="Map the body to inputs with a CEL expression over body and headers.")
@click.option("--template", default=None, help="Map the body with a JSON template ($inputs.<path> reads an object body; "
              "any other body is $inputs.body).")
@click.option("--name", default="")
@pass_session
def hook_add(session: Session, tag: str, cel: str | None, template: str | None, name: str) -> None:
    """A new hook for TAG; its signing secret is printed this once."""
    if cel and template:
        raise click.UsageError("give --cel or --template, not both")
    mapping = {"cel": cel} if cel else {"template": json_file_or_text(template, "--template")} if template else None
    answer = session.client.post("hooks", {"tag": tag, "name": name, "mapping": mapping})
    session.output.emit(answer, lambda d: echo(
        f"hook {d['id']} for {d['tag']}\nurl:    {d['url']}\nsecret: {d['secret']}  (shown once)"))


@hook.command("rotate")
@click.argument("hook_id")
@click.option("--grace", type=click.IntRange(0), default=None, metavar="SECONDS",
              help="How long the old secret still signs (default and most: the server's AOB_HOOK_SECRET_GRACE_S, "
                   "24 h); 0 cuts it off now, for a secret that leaked.")
@pass_session
def hook_rotate(session: Session, hook_id: str, grace: int | None) -> None:
    """A new signing secret; the old one still signs for a grace period, so retries signed before land."""
    answer = session.client.post(f"hooks/{segment(hook_id)}/rotate", {} if grace is None else {"grace_s": grace})

    def pretty(d: dict[str, Any]) -> None:
        echo(f"secret: {d['secret']}  (shown once)")
        until = d.get("previous_secret_expires_at")
        echo(f"the previous secret still signs until {until}" if until
             else "the previous secret no longer signs")

    session.output.emit(answer, pretty)


@hook.command("deliveries")
@click.argument("hook_id")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0, help="Deliveries to skip (newest first).")
@pass_session
def hook_deliveries(session: Session, hook_id: str, limit: int, offset: int) -> None:
    """A hook's deliveries, newest first: the run each accepted one started, or why one was refused
    after its signature checked out (what its sender was told)."""
    page = session.client.get(f"hooks/{segment(hook_id)}/deliveries", limit=limit, offset=offset)

    def pretty(d: dict[str, Any]) -> None:
        table([(short_time(e["received_at"]), e["delivery_id"], e["outcome"], _delivery_text(e))
               for e in d["results"]], ["RECEIVED", "DELIVERY", "OUTCOME", "RUN / ERROR"])
        more_after(d, offset)

    session.output.emit(page, pretty)


def _delivery_text(entry: dict[str, Any]) -> str:
    error = entry.get("error")
    if error:
        return f"{error['status']} {error['code']}: {error['message']}"[:100]
    return entry.get("run_id") or "-"  # an accepted delivery whose run retention removed


@hook.command("remove")
@click.argument("hook_id")
@pass_session
def hook_remove(session: Session, hook_id: str) -> None:
    """Remove a webhook (its delivery log goes with it): its URL answers 404 from then on."""
    session.client.delete(f"hooks/{segment(hook_id)}")
    session.output.emit({"removed": hook_id}, lambda d: echo(f"hook {hook_id} removed"))


@click.group()
def secret() -> None:
    """Named secrets ($secrets.NAME in http nodes and agent auth); values are write-only."""


@secret.command("list")
@pass_session
def secret_list(session: Session) -> None:
    """Your secrets' names and when each was set (never a value)."""
    items = session.client.get("secrets")
    session.output.emit(items, lambda d: table([(s["name"], short_time(s["updated_at"])) for s in d],
                                               ["NAME", "UPDATED"]))


# a secret's name, as the server's (``vault.names.NAME``; pinned in tests/cli/test_server_words.py):
# judged before the value is asked for, which a name the URL refuses lost ("no such endpoint")
SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}\Z")


def _secret_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not SECRET_NAME.match(value):
        raise click.BadParameter(f"{value!r}: a secret's name is letters, digits and _, not starting with a digit, "
                                 "at most 64 (API_TOKEN)")
    return value


@secret.command("set")
@click.argument("name", callback=_secret_name)
@click.option("--value", prompt=True, hide_input=True,
              help="Prompted for (hidden) when not given; - reads it from standard input (one trailing newline dropped).")
@pass_session
def secret_set(session: Session, name: str, value: str) -> None:
    """Set NAME (the value is never shown again)."""
    if value == "-":
        try:
            value = click.get_text_stream("stdin").read().removesuffix("\n").removesuffix("\r")
        except UnicodeDecodeError as exc:
            raise Failure(f"the value on standard input is not UTF-8 text (byte {exc.start}); a "
                          "secret is text: encode binary values (base64)") from None
    else:
        warn_if_typed(click.get_current_context(), "value", "the prompt (leave --value out) or --value - with a pipe")
    answer = session.client.put(f"secrets/{segment(name)}", {"value": value})
    session.output.emit(answer, lambda d: echo(f"secret {d['name']} set"))


@secret.command("remove")
@click.argument("name")
@pass_session
def secret_remove(session: Session, name: str) -> None:
    """Remove NAME: a node that refers to it fails from then on (SecretMissing, naming it)."""
    session.client.delete(f"secrets/{segment(name)}")
    session.output.emit({"removed": name}, lambda d: echo(f"secret {name} removed"))


@click.command()
@click.option("--dry-run", is_flag=True, help="Count what would go; remove nothing.")
@pass_session
def prune(session: Session, dry_run: bool) -> None:
    """Remove finished runs past retention, unreferenced artifacts, old delivery ids (staff only)."""
    answer = session.client.post("prune", {"dry_run": dry_run})
    session.output.emit(answer, lambda d: _prune_text(d, dry_run))


def _prune_text(answer: dict, dry_run: bool) -> None:
    """The counts; a count that reached the dry run's cap reads, say, ``100000+``, and a prune that ran
    out of its request's time says the rest is left."""
    capped = set(answer.get("at_least", []))
    table([(k, f"{v}+" if k in capped else v) for k, v in answer.items() if k not in ("dry_run", "at_least", "finished")],
          ["WOULD GO" if dry_run else "REMOVED", "COUNT"])
    if answer.get("finished") is False:
        echo("more is past retention: run `aob prune` again, or leave it to the hourly prune")
