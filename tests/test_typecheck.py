"""mypy with django-stubs passes over the engine, the workers and approvals (the settings are in
pyproject.toml's ``[tool.mypy]``), so a type error there fails ``make test``.

mypy runs beside the suite: ``tests/conftest.py`` starts it once the session has collected this
test (``start``), and the test waits for its answer. It takes some 10 s of one core from a fresh
clone, which a suite in one process, waiting on its workers most of the time, leaves idle. In
several processes (``make test``'s pytest-xdist) the test starts it itself."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO

import pytest

ROOT = Path(__file__).resolve().parents[1]
_running: tuple[subprocess.Popen[bytes], IO[bytes]] | None = None


def start() -> None:
    """Start mypy in the background (once a session)."""
    global _running
    if _running is None:
        out = tempfile.TemporaryFile()
        _running = (subprocess.Popen([sys.executable, "-m", "mypy"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL), out)


def stop() -> None:
    """At the session's end: a mypy the session started and no test waited for is not left behind."""
    if _running is not None and _running[0].poll() is None:
        _running[0].kill()
        _running[0].wait()


@pytest.mark.timeout(600)
def test_mypy_finds_no_type_errors() -> None:
    start()  # already running, unless this test was collected alone
    assert _running is not None
    process, out = _running
    process.wait(timeout=590)
    out.seek(0)
    output = out.read().decode(errors="replace")

    assert process.returncode == 0, output[-8000:]
    assert "Success: no issues found" in output
