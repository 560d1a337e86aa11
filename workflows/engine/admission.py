"""Fair shares of the workers between owners: at most ``AOB_OWNER_MAX_RUNNING`` node runs of one
type run for one owner at once.

The queues are first in, first out, and shared: one owner's fan-out of slow calls would fill a
type's workers and every other owner's nodes of that type would wait behind all of it. So the
executor's claim (``execution.claim``) takes the owner's slot lock for the type (``OWNER_SLOTS``,
an advisory lock: claims of one owner's node runs of one type queue on it, so each counts what the
one before committed), then in one statement counts the owner's running node runs of the type
(``RUNNING``); at the limit it does not take the node run but holds it: it stays ``queued``, with
``wait_reason`` ``slot`` and ``held_for`` its owner, its first hold appends ``node_held``, and its
message is done. A node run of that owner and type that stops running releases the oldest one held
(``release``: after ``execution.COMPLETE``, which says whether one waits; in ``fail`` and
``park``'s transactions, last), which is published again; the sweeper releases what no finish did
(``release_unreleased``: a slot freed by a cancel or a lapsed lease, a worker that died between its
finish and the release, the limit raised or turned off).

Another owner's message then waits behind the held ones' messages only as long as it takes to
hold them (one statement each), not as long as running them.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from . import poison
from .coordinator import graph
from .dispatch import Dispatch, publish_after_commit

logger = logging.getLogger(__name__)

HELD = "slot"  # the ``wait_reason`` of a node run held for a slot

# The owner's slot lock for the node run's type, taken before the claim's statement (``locks``).
OWNER_SLOTS = """
SELECT pg_advisory_xact_lock(r.owner_id, hashtext(n.node_type))
  FROM workflows_noderun n JOIN workflows_run r ON r.id = n.run_id WHERE n.id = %(id)s
"""

# How many node runs of type {node_type} owner {owner_id} runs (SQL expressions), counted up to {most}.
RUNNING = """(SELECT count(*) FROM (
        SELECT 1 FROM workflows_noderun busy JOIN workflows_run mine ON mine.id = busy.run_id
         WHERE busy.status = 'running' AND busy.node_type = {node_type} AND mine.owner_id = {owner_id}
         LIMIT {most}) AS counted)"""


def running_sql(node_type: str, owner_id: str, most: str) -> str:
    return RUNNING.replace("{node_type}", node_type).replace("{owner_id}", owner_id).replace("{most}", most)


# Whether the owner already runs as many node runs of the type as the limit allows, for a claim's
# node run (``due``: its id, type and owner).
AT_LIMIT = "SELECT 1 FROM due WHERE %(slots)s > 0 AND %(slots)s <= {running}".replace(
    "{running}", running_sql("due.node_type", "due.owner_id", "%(slots)s"))

# The oldest node run held for a slot of an owner and type, released: queued as any other, its
# message sent again by the caller (``dispatch_of``). Skips one another release is taking, and is
# the last lock its transaction takes (``locks``): it locks another run's node run, never waiting.
RELEASE = """
UPDATE workflows_noderun held SET wait_reason = '', held_for = NULL, dispatched_at = %(now)s
  FROM workflows_run r
 WHERE held.id = (SELECT n.id FROM workflows_noderun n
                   WHERE n.status = 'queued' AND n.wait_reason = 'slot' AND n.held_for = %(owner_id)s
                     AND n.node_type = %(node_type)s
                   ORDER BY n.queued_at, n.id LIMIT 1 FOR UPDATE OF n SKIP LOCKED)
   AND r.id = held.run_id
RETURNING held.id, held.node_id, held.node_type, held.run_id, r.current_artifact_id"""

# Whether a node run waits for a slot of this owner and type (no lock: ``execution.COMPLETE`` reads
# it in its own statement, and the release, if one waits, is a statement of its own after it).
WAITING = """EXISTS (SELECT 1 FROM workflows_noderun n
                 WHERE n.status = 'queued' AND n.wait_reason = 'slot' AND n.held_for = %(owner_id)s
                   AND n.node_type = %(node_type)s)"""


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
            cursor.execute(RELEASE, {"now": timezone.now(), "owner_id": owner_id, "node_type": node_type})
            row = cursor.fetchone()
            if row is None:
                break
            rows.append(row)
    publish_after_commit(dispatch_of(row) for row in rows)
    return len(rows)


# Owners and types with node runs held past ``%(stale)s`` and a free slot now, the longest held
# first, with how many slots are free (all held ones while the limit is off).
UNRELEASED = """
SELECT held.held_for, held.node_type,
       CASE WHEN %(slots)s = 0 THEN %(most)s ELSE %(slots)s - {running} END AS free
  FROM workflows_noderun held
 WHERE held.status = 'queued' AND held.wait_reason = 'slot' AND held.dispatched_at < %(stale)s
 GROUP BY held.held_for, held.node_type
HAVING %(slots)s = 0 OR {running} < %(slots)s
 ORDER BY min(held.dispatched_at)
 LIMIT 100
""".replace("{running}", running_sql("held.node_type", "held.held_for", "%(slots)s"))


def release_unreleased(stale: Any, most: int = 500) -> int:
    """The sweeper's part: node runs held past ``stale`` whose owner has a free slot of their type
    now (a slot freed without a release: a cancel, a lapsed lease, a worker that died between its
    finish and the release; or the limit raised or turned off), as many as are free, the oldest
    first. A released one is held again if its slot is taken meanwhile, not before it is stale again."""
    with connection.cursor() as cursor:
        cursor.execute(UNRELEASED, {"slots": slots(), "most": most, "stale": stale})
        pairs = cursor.fetchall()
    released = 0
    for owner_id, node_type, free in pairs:
        if released >= most:
            break
        with poison.sweep_row("release", owner_id=owner_id, node_type=node_type) as taken:  # one pair's trouble stops no other
            if not taken:
                continue  # its handling killed the process too often (poison.sweep_row)
            released += release(owner_id, node_type, min(free, most - released))
    if released:
        logger.info("admission.released", extra={"released": released})
    return released
