"""Approver names: one rule for whom a name asks. An approval lists names; each asks the group of
that name (its members), else the user of that name. A name that is a group's is the group's: a
user whose username is a group's name is not asked by it, so an account named ``finance`` cannot
decide for the group ``finance`` without being a member.

Every reading of names derives from here: ``approver_names`` and ``naming`` (a user to the names
that ask them, and to the approvals that list one: visibility, the inbox, ``is_approver``), and
``by_own_name`` (names to the users they ask: who could decide, who is told). New clashes are
refused wherever users and groups are named, by ``validate_username`` and ``validate_group_name``:
the admin's forms and ``manage.py aob_create_user`` say it early, and every save of a new or changed
name is judged by them (``name_left``, ``pre_save``: Django's ``createsuperuser`` took a group's name,
or one another had left); a clash made before stays, read by this rule,
and an approval naming one says so (``names_of_both``). A name its holder left (renamed or
deleted: ``LeftName``, kept by ``name_left``) is given to no one else, since approvals name people
by it.

The live inbox follows names too: a change to an approval (asked, decided, voided, escalated, ended
with its run) nudges the Channels group of each name it lists (``inbox_group``), and a user's
``ws/events/`` socket is in the group of each of ``approver_names(user)``, so the nudge reaches
exactly those the approval asks, by this rule, without resolving a group's members."""

from __future__ import annotations

import hashlib
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


def inbox_group(name: str) -> str:
    """The Channels group of an approver name (``approver_names``): a name may hold any character
    and 150 of them, a group's name is ASCII and under 100, so it is named by a digest."""
    return "inbox." + hashlib.sha256(name.encode()).hexdigest()[:40]


def naming(user: Any, field: str) -> Q:
    """Rows whose JSON list of approver names ``field`` holds one of ``approver_names(user)``: one
    lookup, so a user no name asks matches no row (an OR of a lookup per name would match every row)."""
    return Q(**{f"{field}__has_any_keys": approver_names(user)})


def names_of_both(names: Iterable[str]) -> list[str]:
    """Of ``names``, those that are a user's and a group's (made before clashes were refused): each
    asks the group only. One query."""
    return sorted(User.objects.filter(username__in=set(names)).exclude(by_own_name())
                  .values_list("username", flat=True))


LEFT = "approvals, and who may read their runs, name people by it, so it is given to no one else"


def validate_username(value: str, *, user_id: int | None = None) -> None:
    """Refuse a username that is a group's name, or one another user or a group left (a new user,
    or a rename of ``user_id``, who may take back a name of their own)."""
    if Group.objects.filter(name=value).exists():
        raise ValidationError("username “%(value)s” is a group's name: a user may not take it (%(rule)s)",
                              code="name_of_a_group", params={"value": value, "rule": RULE})
    _refuse_left(value, user_id=user_id, group_id=None)


def validate_group_name(value: str, *, group_id: int | None = None) -> None:
    """Refuse a group name that is a user's username, or one a user or another group left (a new
    group, or a rename of ``group_id``)."""
    if User.objects.filter(username=value).exists():
        raise ValidationError("group name “%(value)s” is a user's username: a group may not take it (%(rule)s)",
                              code="name_of_a_user", params={"value": value, "rule": RULE})
    _refuse_left(value, user_id=None, group_id=group_id)


def _refuse_left(value: str, *, user_id: int | None, group_id: int | None) -> None:
    from workflows.models import LeftName

    left = LeftName.objects.filter(name=value).first()
    if left is None or (user_id is not None and left.user_id == user_id) or (
            group_id is not None and left.group_id == group_id):
        return
    raise ValidationError("“%(value)s” was another's name: %(rule)s", code="name_left",
                          params={"value": value, "rule": LEFT})


def name_left(sender: Any, instance: Any, **kwargs: Any) -> None:
    """Before a user or group is saved (``pre_save``), judge a new name or a changed one (raises
    ``ValidationError``), and keep the name a rename leaves; keep a deleted one's (``post_delete``)."""
    from workflows.models import LeftName

    is_user = isinstance(instance, User)
    field, holder = ("username", "user_id") if is_user else ("name", "group_id")
    fields = kwargs.get("update_fields")
    if fields is not None and field not in fields:  # a login's last_login: no read
        return
    name = getattr(instance, field)
    if kwargs.get("signal_name") == "deleted":
        old = name
    else:
        old = None if instance.pk is None else (
            type(instance).objects.filter(pk=instance.pk).values_list(field, flat=True).first())
        if old == name:
            return
        if is_user:
            validate_username(name, user_id=instance.pk)
        else:
            validate_group_name(name, group_id=instance.pk)
        if old is None:  # a new row (or one saved with a key of its own)
            return
    LeftName.objects.get_or_create(name=old, defaults={holder: instance.pk})
