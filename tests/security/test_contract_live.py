"""The API contract, checked from outside: schemathesis's CLI against uvicorn serving the app on
the test database, with the session's real workers, every check (``--checks all``) and every
phase (examples, coverage, fuzzing, stateful), and zero failures. The OpenAPI links let the
stateful phase walk from a new workflow to its versions and runs, from a run to its patches and
timeline, and from the approvals list to deciding one; the HAR report shows that it did.

The only configuration is ``tests/security/schemathesis.toml``: the operations whose bodies obey
rules a JSON Schema cannot say may answer a schema-valid body with 400, and ``DELETE /auth/token``
(which would revoke the run's own token) is not run. Examples per operation are
bounded (``EXAMPLES``) to keep ``make test`` short."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from tests.conftest import wait_for_run
from tests.support.stack import start_web
from workflows.services.definitions import workflow_save
from workflows.services.runs import run_start

ROOT = Path(settings.BASE_DIR)
CONFIG = ROOT / "tests" / "security" / "schemathesis.toml"
ST = str(Path(sys.executable).with_name("st"))
EXAMPLES = 4


def definition(name: str) -> dict[str, Any]:
    return json.loads((ROOT / "examples" / f"{name}.json").read_text())


@pytest.fixture
def live(engine: Any, stack_env: dict[str, str]) -> Any:
    proc = start_web(dict(stack_env), "contract-uvicorn")
    yield proc.url, proc
    proc.stop()


@pytest.mark.system
@pytest.mark.timeout(900)
def test_schemathesis_all_checks_all_phases_find_nothing(live: Any, make_user: Any, tmp_path: Path) -> None:
    url, server = live
    user = make_user("contract")
    for name in ("hello-chain", "approval", "greet"):
        workflow_save(owner=user, tag=name, definition=definition(name), description="example")
    waiting = run_start(owner=user, definition=definition("approval"), inputs={"amount": 1, "customer": "Ada"})
    wait_for_run(waiting.pk, statuses={"waiting_for_approval"})
    har = tmp_path / "contract.har"

    done = subprocess.run(
        [ST, "--config-file", str(CONFIG), "run", f"{url}/api/v1/schema/?format=json", "--checks", "all",
         "--phases", "examples,coverage,fuzzing,stateful", "-H", f"Authorization: Token {user.auth_token.key}",
         "--max-examples", str(EXAMPLES), "--generation-deterministic", "--workers", "1", "--no-color",
         "--report", "har", "--report-har-path", str(har), "--request-timeout", "30"],
        cwd=tmp_path, capture_output=True, text=True, timeout=840, stdin=subprocess.DEVNULL)  # its cache stays there

    out = done.stdout + done.stderr
    summary = out[out.find("SUMMARY"):] if "SUMMARY" in out else out[-4000:]
    assert done.returncode == 0, f"schemathesis found problems:\n{out[-12000:]}\n--- server log ---\n{server.tail(60)}"
    for phase in ("Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in summary, summary
    paths = {entry["request"]["url"].split("?")[0] for entry in json.loads(har.read_text())["log"]["entries"]}
    reached = {"versions": any("/versions/" in p for p in paths), "patches": any(p.endswith("/patches") for p in paths),
               "approvals": any("/approvals/" in p and p.split("/approvals/")[1][:1].isdigit() for p in paths),
               "timeline": any(p.endswith("/timeline") for p in paths)}
    assert all(reached.values()), reached
