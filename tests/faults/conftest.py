"""The fault suite's plumbing: trials parametrized from their seeds, the lean subset of
``make test``, the figures written to .aob/faults.json and printed as a table."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import faults

from . import harness


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for argname, control in (("trial", False), ("control_trial", True)):
        if argname not in metafunc.fixturenames:
            continue
        test = metafunc.function.__name__
        trials = [harness.Trial(metafunc.module.FAULT, test, i, harness.seed_for(test, i), protected=not control)
                  for i in range(harness.trial_count(control))]
        metafunc.parametrize(argname, trials, ids=[f"seed{t.seed}" for t in trials])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    report = yield
    trial = getattr(item, "funcargs", {}).get("trial") or getattr(item, "funcargs", {}).get("control_trial")
    if report.failed and trial is not None:
        report.sections.append(("fault trial", str(trial)))
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A worker of a suite run in several processes (pytest-xdist) merges its figures into the file
    (its controller, which prints the table, ran no trial)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        harness.write_results()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    figures = harness.write_results()
    if figures:
        terminalreporter.write_sep("-", f"fault suite (also in {harness.results_path()})")
        for line in harness.table(figures):
            terminalreporter.write_line(line)


@pytest.fixture(autouse=True)
def live_test_hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fault injection (``tests.support.faults``) is live in this process too: run_start (called
    in-process through the API) publishes a run's entry nodes from here (a dropped publish)."""
    faults.patch(monkeypatch)
