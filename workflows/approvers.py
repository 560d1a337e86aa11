"""Approver names: one rule for whom a name asks. An approval lists names; each asks the group of
that name (its members), else the user of that name. A name that is a group's is the group's: a
user whose username is a group's name is not asked by it, so an account named ``finance`` cannot
decide for the group ``finance`` without being a member.

Every reading of names derives from here: ``approver_names`` and ``naming`` (a user to the names
that ask them, and to the approvals that list one: visibility, the inbox, ``is_approver``), and
``by_own_name`` (names to the users they ask: who could decide, who is told). New clashes are
refused where users and groups are named (the admin's forms, ``manage.py aob_create_user``) by
``validate_username`` and ``validate_group_name``; a clash made before stays, read by this rule,
and an approval naming one says so (``names_of_both``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib.auth.models import Group, User
from django.core.exceptions import ValidationError
from django.db.models import Exists, OuterRef, Q

RULE = "a name is a user's or a group's, never both: approvers are names, and a name that is a group's is the group's"


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


def names_of_both(names: Iterable[str]) -> list[str]:
    """Of ``names``, those that are a user's and a group's (made before clashes were refused): each
    asks the group only. One query."""
    return sorted(User.objects.filter(username__in=set(names)).exclude(by_own_name())
                  .values_list("username", flat=True))


def validate_username(value: str) -> None:
    """Refuse a username that is a group's name (a new user, or a rename)."""
    if Group.objects.filter(name=value).exists():
        raise ValidationError("username “%(value)s” is a group's name: a user may not take it (%(rule)s)",
                              code="name_of_a_group", params={"value": value, "rule": RULE})


def validate_group_name(value: str) -> None:
    """Refuse a group name that is a user's username (a new group, or a rename)."""
    if User.objects.filter(username=value).exists():
        raise ValidationError("group name “%(value)s” is a user's username: a group may not take it (%(rule)s)",
                              code="name_of_a_user", params={"value": value, "rule": RULE})
