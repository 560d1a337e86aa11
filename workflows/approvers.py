"""Approver names: one rule for whom a name asks. An approval lists names; each asks the group of
that name (its members), else the user of that name. A name that is a group's is the group's: a
user whose username is a group's name is not asked by it, so an account named ``finance`` cannot
decide for the group ``finance`` without being a member.

Every reading of names derives from here: ``approver_names`` and ``naming`` (a user to the names
that ask them, and to the approvals that list one: visibility, the inbox, ``is_approver``), and
``by_own_name`` (names to the users they ask: who could decide, who is told)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Group, User
from django.db.models import Exists, OuterRef, Q


def by_own_name() -> Q:
    """Users their username may ask: those whose username is no group's name."""
    return Q(~Exists(Group.objects.filter(name=OuterRef("username"))))


def approver_names(user: Any) -> list[str]:
    """The names an approval may list to ask this user: each of the user's groups, and the username
    unless a group has it. One query."""
    own = User.objects.filter(by_own_name(), pk=user.pk).values_list("username", flat=True)
    return list(user.groups.values_list("name", flat=True).union(own))


def naming(user: Any, field: str) -> Q:
    """Rows whose JSON list of approver names ``field`` holds one of ``approver_names(user)``: one
    lookup, so a user no name asks matches no row (an OR of a lookup per name would match every row)."""
    return Q(**{f"{field}__has_any_keys": approver_names(user)})
