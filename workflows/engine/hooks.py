"""Run-level hooks: the engine tells the node-type registry when a run ends, so it never imports
the apps that own the types (and counts the end: ``aob_runs_finished_total``).

``run_ending`` runs inside the transaction that ends the run. For ``run_finished`` there is one
call site per way a run ends (the full decision, the plain end step, cancel, a poison's fail:
``poison._fail``). The hooks run after the commit that ended the run, each in its own
transactions, so a hook never extends the run's lock or its transaction; a process that dies in
between leaves the work to the hook's own backstop (``subflows.sweep`` for sub-workflows)."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from aob_project.metrics import RUNS_FINISHED
from workflows import registry

logger = logging.getLogger(__name__)


def run_ending(run_id: Any, status: str, now: Any) -> None:
    """In the transaction that ends a run: each type's ``on_run_ending`` settles rows that wait on the
    run (``hitl``'s pending approvals), so they end with it or not at all."""
    for hook in registry.run_ending_hooks():
        hook(str(run_id), str(status), now)


def run_finished(run_id: Any, status: str) -> None:
    transaction.on_commit(RUNS_FINISHED.labels(str(status)).inc)
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
