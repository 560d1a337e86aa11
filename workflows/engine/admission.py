"""Fair shares of the workers between owners: at most ``AOB_OWNER_MAX_RUNNING`` node runs of one
type run for one owner at once.

The queues are first in, first out, and shared: one owner's fan-out of slow calls would fill a
type's workers and every other owner's nodes of that type would wait behind all of it. So the
executor's claim (``execution.CLAIM``) counts the owner's running node runs of the type first; at
the limit it does not take the node run but holds it: it stays ``queued``, with ``wait_reason``
``slot`` and ``held_for`` its owner, and its message is done. The next node run of that owner and
type to stop running releases the oldest one held (``execution.COMPLETE`` in its own statement,
``release`` on the other ways out), which is published again; the sweeper releases what no finish
did (a slot freed by a cancel or a lapsed lease, a crash between the two, the limit raised).

Another owner's message then waits behind the held ones' messages only as long as it takes to
hold them (one statement each), not as long as running them. The count is read in the claim's
statement: claims of one owner's node runs in the same instant, on different runs, may each see a
free slot, so the limit may be passed by the claims racing (at most the workers of the type).
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from workflows.models import NodeRun

from .coordinator import graph
from .dispatch import Dispatch, publish_after_commit

logger = logging.getLogger(__name__)

HELD = "slot"  # the ``wait_reason`` of a node run held for a slot

# Whether the owner already runs as many node runs of the type as the limit allows, for a claim's
# node run (``due``: its id, type and owner). Counts at most the limit.
AT_LIMIT = """
SELECT 1 FROM due WHERE %(slots)s > 0 AND %(slots)s <= (
    SELECT count(*) FROM (
        SELECT 1 FROM workflows_noderun busy JOIN workflows_run mine ON mine.id = busy.run_id
         WHERE busy.status = 'running' AND busy.node_type = due.node_type AND mine.owner_id = due.owner_id
         LIMIT %(slots)s) AS counted)""".strip()


# The oldest node run held for a slot of an owner and type, released if ``{when}`` (SQL) holds: it
# is queued as any other, its message sent again by the caller (``dispatch_of``). Skips one another
# release is taking. ``execution.COMPLETE`` runs it as part of its own statement (``released``).
RELEASE = """
UPDATE workflows_noderun held SET wait_reason = '', held_for = NULL, dispatched_at = %(now)s
  FROM workflows_run r
 WHERE held.id = (SELECT n.id FROM workflows_noderun n
                   WHERE n.status = 'queued' AND n.wait_reason = 'slot' AND n.held_for = %(owner_id)s
                     AND n.node_type = %(node_type)s
                   ORDER BY n.queued_at, n.id LIMIT 1 FOR UPDATE OF n SKIP LOCKED)
   AND r.id = held.run_id AND {when}
RETURNING held.id, held.node_id, held.node_type, held.run_id, r.current_artifact_id"""


def released(when: str = "true") -> str:
    return RELEASE.replace("{when}", when)


RELEASED_ANY = released()


def slots() -> int:
    return settings.AOB_OWNER_MAX_RUNNING


def dispatch_of(row: tuple[Any, ...]) -> Dispatch:
    """The message of a released node run (a row of ``RELEASE``)."""
    node_run_id, node_id, node_type, run_id, artifact_id = row
    node = graph(artifact_id).nodes.get(node_id)
    return Dispatch(node_run_id, node_id, node_type, str(run_id), node.timeout_ms if node else None)


def release(owner_id: int, node_type: str, count: int = 1) -> int:
    """Release up to ``count`` node runs held for this owner's slots of ``node_type``, in the
    caller's transaction, and publish them after its commit. How many were released."""
    rows = []
    with connection.cursor() as cursor:
        for _ in range(count):
            cursor.execute(RELEASED_ANY, {"now": timezone.now(), "owner_id": owner_id, "node_type": node_type})
            row = cursor.fetchone()
            if row is None:
                break
            rows.append(row)
    publish_after_commit(dispatch_of(row) for row in rows)
    return len(rows)


def running(owner_id: int, node_type: str) -> int:
    return NodeRun.objects.filter(status=NodeRun.Status.RUNNING, node_type=node_type, run__owner_id=owner_id).count()


def release_unreleased(stale: Any, live: list[str], most: int = 500) -> int:
    """The sweeper's part: node runs held past ``stale`` whose owner has a free slot of their type
    now (a slot freed without a release: a cancel, a lapsed lease, a worker that died between its
    finish and the release; or the limit raised or turned off). The oldest go first."""
    pairs = (NodeRun.objects.filter(status=NodeRun.Status.QUEUED, wait_reason=HELD, dispatched_at__lt=stale,
                                    run__status__in=live)
             .values_list("held_for", "node_type").distinct()[:100])
    released = 0
    for owner_id, node_type in pairs:
        free = most if slots() == 0 else slots() - running(owner_id, node_type)
        if free > 0 and released < most:
            released += release(owner_id, node_type, min(free, most - released))
    if released:
        logger.info("admission.released", extra={"released": released})
    return released
