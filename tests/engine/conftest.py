"""Engine tests: the fault-injection hooks (``tests.support.faults``) are live in this process too,
since run_start (called through the API in-process) publishes a run's entry nodes from here."""

from __future__ import annotations

import pytest

from tests.support import faults


@pytest.fixture(autouse=True)
def live_test_hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    faults.patch(monkeypatch)
