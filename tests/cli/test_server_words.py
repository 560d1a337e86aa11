"""The CLI imports nothing of the server (it is installed alone, ``aob``): the words it offers as
choices are written in it again. Each is pinned here to the server's one list, so a status or an
option added there fails this test, not a user's command line; the triggers page's catch-up
options likewise."""

from __future__ import annotations

import re
from pathlib import Path

import click

from aob.cli import approvals as cli_approvals
from aob.cli import runs as cli_runs
from aob.cli import triggers as cli_triggers
from approvals.models import Approval
from triggers.models import Schedule
from workflows.models import Run


def _choices(command: click.Command, option: str) -> list[str]:
    (param,) = [p for p in command.params if p.name == option]
    assert isinstance(param.type, click.Choice)
    return list(param.type.choices)


def test_the_cli_s_run_and_approval_statuses_are_the_server_s():
    assert list(cli_runs.RUN_STATUSES) == Run.Status.values
    assert list(cli_runs.FINISHED_STATUSES) == [str(s) for s in Run.FINISHED]
    assert [s for s in cli_approvals.APPROVAL_STATUSES if s != "all"] == Approval.Status.values


def test_a_schedule_s_catch_up_choices_are_the_model_s_in_the_cli_and_on_its_page():
    assert _choices(cli_triggers.schedule_add, "catch_up") == Schedule.CatchUp.values
    page = (Path(__file__).resolve().parents[2] / "triggers/templates/triggers/triggers.html").read_text()
    select = re.search(r'<select id="catch-up">(.*?)</select>', page, re.S)
    assert select is not None
    assert re.findall(r'<option value="([^"]+)"', select.group(1)) == Schedule.CatchUp.values


def test_the_cli_s_secret_name_rule_is_the_server_s():
    from vault.names import NAME

    assert cli_triggers.SECRET_NAME.pattern == rf"^{NAME}\Z"


def test_the_cli_takes_the_idempotency_keys_the_server_takes():
    """The CLI judges a key before sending it: the same keys pass both, so a script's key the
    server would refuse fails on the command line, and one it takes is never refused there."""
    from aob.cli.session import idempotency_key_check
    from aob_project.exceptions import ValidationFailed
    from workflows.services import idempotency

    def server_takes(key: str) -> bool:
        try:
            idempotency.start_key(header=key, endpoint="start", body={})
        except ValidationFailed:
            return False
        return True

    def cli_takes(key: str) -> bool:
        try:
            idempotency_key_check(None, None, key)  # type: ignore[arg-type]
        except click.BadParameter:
            return False
        return True

    limit = idempotency.MAX_LENGTH
    keys = ["", " ", "  \t", "k", " k ", "deploy-42", "a b", "x" * limit, "x" * (limit + 1),
            " " + "x" * limit + " ", "é", "key\x00", "key\n1", "\x7f", "~!@#$%^&*()"]
    assert {k: cli_takes(k) for k in keys} == {k: server_takes(k) for k in keys}
    assert cli_takes("x" * limit) and not cli_takes("x" * (limit + 1))
