"""A run's inputs where the engine reads them: each executor's claim and each full decision.

A run's inputs are up to ``AOB_MAX_RUN_INPUTS_BYTES`` (16 MiB) and never change once it is stored.
Read whole by every claim and every decision, a run with 16 MiB of small values cost each of them
about a quarter of a second (the database sending them, Python parsing them), the decisions under
the run's lock on the coordinator every user shares: a hundred times a usual decision, for every
node of that run. So inputs up to ``SMALL_BYTES`` (by ``Run.inputs_bytes``, measured at the start)
travel with the statement that reads the run, as before, and larger ones are read once in a process
and kept there (``AOB_RUN_INPUTS_KEPT_BYTES`` of their stored size at most, the least recently used
leaving first). The value kept is shared by every node of the run in that process: read-only.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any

from django.conf import settings
from django.db.models import Case, F, JSONField, Value, When

from aob_project.metrics import RUN_INPUTS_READ
from workflows.models import Run

SMALL_BYTES = 64 * 1024

# The inputs when small, else NULL: in a statement that reads the run (``r``), for ``of``.
HEAD_SQL = f"CASE WHEN r.inputs_bytes <= {SMALL_BYTES} THEN r.inputs END"
# The same for the ORM (``locked_run``), as the annotation ``inputs_head``.
HEAD = Case(When(inputs_bytes__lte=SMALL_BYTES, then=F("inputs")), default=Value(None), output_field=JSONField())

_lock = threading.Lock()
_kept: OrderedDict[str, tuple[int, dict[str, Any]]] = OrderedDict()  # run id → (stored size, inputs)
_kept_size = 0
_pid = os.getpid()


def of(run_id: Any, head: Any) -> dict[str, Any]:
    """The inputs of ``run_id``: ``head`` when the statement brought them (small ones), else the
    ones this process keeps, else read now (and kept when they fit)."""
    if head is not None:
        return head
    key = str(run_id)
    found = kept(key)
    if found is not None:
        return found
    inputs, size = Run.objects.filter(pk=key).values_list("inputs", "inputs_bytes").get()
    RUN_INPUTS_READ.inc()
    _keep(key, size, inputs)
    return inputs


def of_run(run: Run) -> dict[str, Any]:
    """The inputs of a run row: those read with it; ``of`` its ``inputs_head`` when it was read as
    the engine reads it (``coordinator.locked_run``); else read now and not kept (a web process's
    decision after a patch or a budget's raise: no process but the engine's keeps inputs)."""
    if "inputs" not in run.get_deferred_fields():
        return run.inputs
    if hasattr(run, "inputs_head"):
        return of(run.pk, run.inputs_head)
    return run.inputs  # the deferred field, read by itself


def kept(key: str) -> dict[str, Any] | None:
    """The inputs this process keeps for the run ``key``, marked as just used; None if not kept."""
    global _kept_size, _pid
    with _lock:
        if _pid != os.getpid():  # a forked child starts with nothing of its parent's
            _kept.clear()
            _kept_size, _pid = 0, os.getpid()
        entry = _kept.get(key)
        if entry is None:
            return None
        _kept.move_to_end(key)
        return entry[1]


def _keep(key: str, size: int, inputs: dict[str, Any]) -> None:
    global _kept_size
    limit = settings.AOB_RUN_INPUTS_KEPT_BYTES
    if size > limit:
        return
    with _lock:
        if key in _kept:
            return
        while _kept and _kept_size + size > limit:
            _, (gone, _inputs) = _kept.popitem(last=False)
            _kept_size -= gone
        _kept[key] = (size, inputs)
        _kept_size += size
