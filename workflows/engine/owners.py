"""A run acts as its owner: it sends their secrets, spends their LLM budget and asks their approvers.
No run starts as a deactivated owner (``services.runs.run_start``), and nothing of a running one
starts once they are deactivated either: the executor's claim reads whether the owner is active
(``execution.CLAIM``, in its one statement; a decision's lock of the run, for the steps it evaluates
itself), the one preparation of a node refuses it (``execution.prepared``), every model call's
reservation reads it again (``agents.budget.reserve``), and so does every tool call an agent has
not yet made (``agents.loop.run_agent``: an answer received after the owner left runs none of its
calls), so an agent already at work stops before its next call or request.

Why fail rather than carry on: a run is changed by its owner alone (``run_owner_check``, staff
included), and a deactivated owner can no longer sign in, so nobody could cancel what the run went
on to do; the admin refuses to delete a user who owns runs and says to deactivate them instead.
The node fails saying why (not transient: a retry would meet the same owner), which fails the run
as any failed node does. Re-activated, the owner replays it."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User

from aob_project.exceptions import AobError


class OwnerInactive(AobError):
    code = "owner_inactive"

    @classmethod
    def of(cls, owner_id: Any, what: str) -> OwnerInactive:
        """The error for ``owner_id``'s run, ``what`` saying what does not happen."""
        name = User.objects.filter(pk=owner_id).values_list("username", flat=True).first() or f"user {owner_id}"
        return cls(f"{name!r} is deactivated: {what} as them. Only the run's owner may cancel or replay it; "
                   "re-activated, they can replay it", extra={"rule": "owner_active", "owner": name, "transient": False})


def owner_active(owner_id: Any) -> bool:
    return User.objects.filter(pk=owner_id, is_active=True).exists()
