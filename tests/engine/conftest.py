"""Engine tests: the fault-injection hooks are live in this process too, since run_start (called
through the API in-process) publishes a run's entry nodes from here."""

from __future__ import annotations

import pytest

from workflows.engine import testhooks


@pytest.fixture(autouse=True)
def live_test_hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(testhooks, "ENABLED", True)
