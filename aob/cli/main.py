"""``aob``: the root command, its global options, and the account commands.

Every command parses its arguments, makes one or two calls to the REST API, and prints the
answer; errors print the API's ``message`` and exit 1.
"""

from __future__ import annotations

import click

from . import config
from .approvals import approvals, approve, reject
from .output import MODES, PRETTY, Failure, Output, echo
from .patches import patch
from .runs import logs, run
from .session import Session, pass_session, warn_if_typed
from .triggers import hook, prune, schedule, secret
from .workflows import workflow

DEFAULT_API_URL = "http://127.0.0.1:8000"


class Cli(click.Group):
    """An answer of the wrong shape (another service on the port, a proxy's own JSON) is an error
    naming the server, not a traceback from the command that read it; the same error before any
    answer was read is the CLI's own, and raised as it is."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (KeyError, TypeError, IndexError, AttributeError) as exc:
            session = ctx.obj if isinstance(ctx.obj, Session) else None
            if session is None or not session.answered:
                raise
            raise Failure(f"{session.api_url} did not answer as the AOB API does ({type(exc).__name__}: "
                          f"{str(exc)[:200]}): is --api-url (AOB_API_URL) an AOB server?") from exc


@click.group(cls=Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--api-url", envvar="AOB_API_URL", default=DEFAULT_API_URL, show_default=True, metavar="URL",
              help="Where the AOB server is (env AOB_API_URL).")
@click.option("--output", "-o", "output_mode", type=click.Choice(MODES), default=PRETTY, show_default=True,
              help="pretty for people; json prints the API's answers as they are.")
@click.option("--token", envvar="AOB_TOKEN", default=None, metavar="TOKEN",
              help="Use this API token instead of the one `aob login` stored (env AOB_TOKEN).")
@click.option("--allow-http", envvar="AOB_ALLOW_HTTP", is_flag=True, default=False,
              help="Send the token (or login's password) over plain http to another machine: only on a "
                   "network you trust (env AOB_ALLOW_HTTP).")
@click.version_option("0.1.0", prog_name="aob")
@click.pass_context
def cli(ctx: click.Context, api_url: str, output_mode: str, token: str | None, allow_http: bool) -> None:
    """Work with AOB workflows, runs, approvals and patches through its API."""
    warn_if_typed(ctx, "token", "AOB_TOKEN or `aob login`")
    session = Session(api_url=config.normalize_url(api_url), output=Output(output_mode), token_override=token,
                      allow_http=allow_http)
    ctx.obj = session
    ctx.call_on_close(session.close)


@cli.command()
@click.option("--username", "-u", prompt=True, help="Prompted for when not given.")
@click.option("--password", "-p", prompt=True, hide_input=True, help="Prompted for (hidden) when not given.")
@pass_session
def login(session: Session, username: str, password: str) -> None:
    """Get an API token and keep it in your config dir (mode 0600), for this API URL only."""
    warn_if_typed(click.get_current_context(), "password", "the prompt (leave --password out)")
    answer = session.login_client().post("auth/token", {"username": username, "password": password})
    path = config.credentials_save(api_url=session.api_url, token=answer["token"], username=answer["username"])
    session.output.emit({"username": answer["username"], "api_url": session.api_url, "config": str(path)},
                        lambda d: echo(f"logged in to {d['api_url']} as {d['username']}"))


@cli.command()
@click.option("--revoke", is_flag=True,
              help="Also revoke the token on the server: every client that holds it (other machines, scripts) "
                   "is logged out; the next `aob login` makes a new one.")
@pass_session
def logout(session: Session, revoke: bool) -> None:
    """Forget the token stored for this API URL (with --revoke, revoke it on the server first)."""
    revoked = False
    if revoke:
        if not session.token:
            raise Failure(f"no token to revoke for {session.api_url}: log in, or set AOB_TOKEN")
        session.client.delete("auth/token")  # an error (an invalid token, no server) stops here: nothing forgotten
        revoked = True
    forgotten = config.credentials_forget(api_url=session.api_url)
    session.output.emit({"api_url": session.api_url, "logged_out": forgotten, "revoked": revoked},
                        lambda d: echo(("token revoked; " if revoked else "")
                                       + (f"logged out of {d['api_url']}" if forgotten
                                          else f"was not logged in to {d['api_url']}")))


@cli.command()
@pass_session
def whoami(session: Session) -> None:
    """Who the API says the token belongs to."""
    me = session.client.get("auth/me")
    session.output.emit(me, lambda d: echo(
        f"{d['username']}{' (staff)' if d.get('is_staff') else ''} at {session.api_url}{_kept(d.get('storage'))}"))


def _kept(storage: dict | None) -> str:
    """What the user's runs keep, against the bound (AOB_OWNER_STORAGE_BYTES), as whoami shows it."""
    if not storage:
        return ""
    stored, limit = storage["stored_bytes"], storage["limit_bytes"]
    return f"; runs keep {_size(stored)}" + (f" of {_size(limit)}" if limit else "")


def _size(size: float) -> str:
    if size < 1024:
        return f"{int(size)} bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        size /= 1024
        if size < 1024 or unit == "TiB":
            break
    return f"{size:.1f} {unit}"

for command in (workflow, run, logs, approvals, approve, reject, patch, schedule, hook, secret, prune):
    cli.add_command(command)


if __name__ == "__main__":
    cli(prog_name="aob")
