"""Run-level hooks: the engine tells the node-type registry when a run has finished.

One call site per way a run ends (the full decision, the plain end step, cancel). The hooks run
after the commit that ended the run, each in its own transactions, so a hook never extends the
run's lock or its transaction; a process that dies in between leaves the work to the hook's own
backstop (``subflows.sweep`` for sub-workflows)."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from workers import registry

logger = logging.getLogger(__name__)


def run_finished(run_id: Any, status: str) -> None:
    hooks = registry.run_finished_hooks()
    if not hooks:
        return

    def call() -> None:
        for hook in hooks:
            try:
                hook(str(run_id), str(status))
            except Exception:  # a hook's failure must not undo the run's end; its sweep retries
                logger.exception("run.finished_hook_failed", extra={"run_id": str(run_id)})

    transaction.on_commit(call)
