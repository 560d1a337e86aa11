"""Who may see and decide which approval."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.db import connection
from django.db.models import Exists, F, OuterRef, Prefetch, Q, QuerySet, Window
from django.db.models.expressions import RawSQL
from django.db.models.functions import RowNumber

from approvals.exceptions import AmbiguousNode, ApprovalNotFound
from approvals.models import Approval, Decision, Delivery
from workflows.answers import Page, json_size, left_out
from workflows.approvers import approver_names, by_own_name, naming  # the one rule for whom a name asks
from workflows.models import Run, RunPatch
from workflows.selectors import fill_within, measured, owners_in_turn


def _named(field: str, names: Iterable[str]) -> Q:
    """``field`` is one of ``names``, sent as one JSON text: a page of approvals may list 100,000
    names (1,000 gates of 100), and one parameter each passed PostgreSQL's 65,535 (a 503); as an
    array parameter psycopg quoted each element by a pattern (1 s for a page)."""
    return Q(**{f"{field}__in": RawSQL("SELECT jsonb_array_elements_text(%s::jsonb)", (json.dumps(sorted(names)),))})


def names_that_reach_someone(names: list[str] | set[str]) -> set[str]:
    """Of approver ``names``, those that ask someone who could decide now: a group's with an active
    member, or an active user's that is no group's (``is_approver``'s rule, and signing in needs an
    active user). Two queries, for one approval or a page of them."""
    names = set(names)
    if not names:
        return set()
    users = User.objects.filter(by_own_name(), _named("username", names), is_active=True).values_list("username",
                                                                                                    flat=True)
    groups = Group.objects.filter(_named("name", names), user__is_active=True).values_list("name", flat=True).distinct()
    return set(users) | set(groups)


def who_could_approve(approval: Approval) -> int:
    """How many approvals ``approval`` could reach (the run's owner not counted, when
    ``allow_self_approval`` is false): those cast and not voided, and one for each active person
    asked who has not voted, up to its ``required_approvals``: fewer, and a vote can reject it but
    none can approve it. ``who_could_approve_each`` of one."""
    return who_could_approve_each([approval])[0][0]


def who_could_approve_each(approvals: list[Approval], reaching: set[str] | None = None) -> list[tuple[int, int]]:
    """For each of ``approvals``, in order: ``who_could_approve``, and how many active people asked
    could still vote, a four-eyes gate's owner included, who may reject it (none: nobody can decide
    it). Three or four queries for any number: the votes
    counted, the active users their names ask (``by_own_name``), each group's active members up to
    what any of them could need (the owner and those who voted may be among them), then the owners
    of the runs that may not approve their own. ``reaching``: the names known to reach someone
    (``names_that_reach_someone``), the only ones that can ask anybody: the rest are not sent."""
    names = {n for a in approvals for n in a.approvers or []}
    if reaching is not None:
        names &= reaching
    if not names:
        return [(0, 0)] * len(approvals)
    voted: dict[int, set[int]] = {}
    cast: dict[int, int] = {}
    for approval_id, user_id, approve in Decision.objects.counting().filter(
            approval__in=[a.pk for a in approvals]).values_list("approval_id", "user_id", "approve"):
        voted.setdefault(approval_id, set()).add(user_id)
        cast[approval_id] = cast.get(approval_id, 0) + int(approve)
    enough = 2 * max(a.required_approvals for a in approvals) + 1
    members = (User.groups.through.objects.filter(_named("group__name", names), user__is_active=True)
               .annotate(turn=Window(RowNumber(), partition_by=[F("group_id")], order_by=[F("user_id").asc()]))
               .filter(turn__lte=enough).values_list("group__name", "user_id"))  # type: ignore[misc]
    users = User.objects.filter(by_own_name(), _named("username", names), is_active=True).values_list("username", "pk")
    asks: dict[str, set[int]] = {}
    for name, pk in [*users, *members]:
        asks.setdefault(name, set()).add(pk)
    four_eyes = {a.run_id for a in approvals if not a.allow_self_approval}
    # by the run id's text: an approval made from ids (the hitl executor's) holds it as a str
    owners = ({str(pk): owner for pk, owner in Run.objects.filter(pk__in=four_eyes).values_list("pk", "owner_id")}
              if four_eyes else {})
    out = []
    for approval in approvals:
        voters = set().union(*(asks.get(n, set()) for n in approval.approvers or [])) - voted.get(approval.pk, set())
        approvers = voters - {owners.get(str(approval.run_id))}  # a four-eyes gate's owner may only reject
        out.append((min(cast.get(approval.pk, 0) + len(approvers), approval.required_approvals), len(voters)))
    return out


def _needs_counting(approval: Approval) -> bool:
    """Whether one person reached is not enough to know it can be approved."""
    return approval.required_approvals > 1 or not approval.allow_self_approval


def fill_decidable(approvals: list[Approval]) -> list[Approval]:
    """Each approval with ``nobody_can_decide`` (pending, and no active person asked can vote on it: a
    name mistyped, an approver deactivated or a group emptied since it was asked, or every one left
    has voted) and ``cannot_be_approved`` (pending, and fewer approvals could be reached than it
    needs: four-eyes with the owner as the only approver, two approvals asked of one person; votes
    cast count, their voters' later deactivation aside). Its run then waits on a decision nobody can
    make, or only a rejection: the answer says so. Two queries for a page, and three or four more
    when one of them needs more than its one approver to be approved."""
    pending = [a for a in approvals if a.status == Approval.Status.PENDING]
    reached = names_that_reach_someone({n for a in pending for n in a.approvers or []})
    unreached = {a.pk for a in pending if not reached & set(a.approvers or [])}
    # how many could approve each, and could still vote, where that was counted
    counted = [a for a in pending if a.pk not in unreached and _needs_counting(a)]
    could = dict(zip([a.pk for a in counted], who_could_approve_each(counted, reached), strict=True)) if counted else {}
    for approval in approvals:
        able, left = could.get(approval.pk, (None, None))
        nobody = approval.pk in unreached or left == 0
        approval.nobody_can_decide = nobody  # type: ignore[attr-defined]
        approval.could_approve = 0 if approval.pk in unreached else able  # type: ignore[attr-defined]
        approval.cannot_be_approved = nobody or (  # type: ignore[attr-defined]
            able is not None and able < approval.required_approvals)
    return approvals


def is_approver(approval: Approval, user: User) -> bool:
    names = set(approver_names(user))
    return bool(names & set(approval.approvers))


# What an approval reads of its run: its owner and its definition (four-eyes, the decision's
# events, the digest of the gated action), never its inputs (up to AOB_MAX_RUN_INPUTS_BYTES, a
# choice of the run's owner, not of who reads the approval) nor its errors: every query of
# approvals that selects the run defers these.
RUN_UNREAD = ("run__inputs", "run__error", "run__output_error")


def approvals_decidable(*, user: User) -> QuerySet[Approval]:
    """Pending approvals this user may decide now: not those their vote, cast and counted, already
    decides (a second vote is ``already_decided``)."""
    voted = Decision.objects.counting().filter(approval=OuterRef("pk"), user=user)
    return (Approval.objects.filter(status=Approval.Status.PENDING).filter(naming(user, "approvers"))
            .exclude(Exists(voted))
            .select_related("run").defer(*RUN_UNREAD).prefetch_related(_PATCH).annotate(asked_by=ASKED_BY)
            .order_by("deadline", "created_at"))


# Who asks: the username of the approval's run's owner (``asked_by`` of an approval's answer).
ASKED_BY = F("run__owner__username")

# A patch approval's answer says what became of its patch (applied, or refused and why), not its operations.
_PATCH = Prefetch("patch", queryset=RunPatch.objects.only("id", "seq", "status", "reason"))


def seen_by(user: User, via: str = "") -> Q:
    """Approvals of the user's own runs, and the ones the user is (or was) asked to decide; ``via``:
    the lookup from a row to its approval (``approval__``), for the rows under an approval."""
    return Q(**{f"{via}run__owner": user}) | naming(user, f"{via}approvers")


def approvals_visible(*, user: User) -> QuerySet[Approval]:
    """Approvals of the user's own runs, and the ones the user is (or was) asked to decide."""
    return (Approval.objects.filter(seen_by(user)).select_related("run")
            .defer(*RUN_UNREAD).prefetch_related(_PATCH).annotate(asked_by=ASKED_BY).distinct())


def approval_get(*, user: User, approval_id: object) -> Approval:
    try:
        return approvals_visible(user=user).prefetch_related(_COUNTED).get(pk=int(str(approval_id)))
    except (Approval.DoesNotExist, ValueError, OverflowError):
        raise ApprovalNotFound("approval not found") from None


def approvals_listed(*, user: User, status: str | None = None, run: Run | None = None,
                     asked_by: str | None = None) -> QuerySet[Approval]:
    """The inbox: pending ones the user may decide, the runs' owners in turn (each one's soonest
    deadline first: ``in_turns``), else every visible one (newest first), narrowed to ``status``,
    ``run`` and the runs' owner ``asked_by``. Anyone may name anyone as an approver: in deadline
    order alone, one run of 200 gates with near deadlines filled a person's first page, and the
    gates their colleagues asked, with none or a later one, were on no page the inbox showed."""
    if status == Approval.Status.PENDING:
        qs = approvals_decidable(user=user)
    else:
        qs = approvals_visible(user=user).order_by("-created_at")
        if status:
            qs = qs.filter(status=status)
    if run is not None:
        qs = qs.filter(run=run)
    if asked_by is not None:
        qs = qs.filter(run__owner__username=asked_by)
    if status == Approval.Status.PENDING:
        qs = in_turns(qs, "deadline")
    # each heavy value is measured in the database and read only if it fits (``fill_page``)
    return measured(measured(measured(qs, "message"), "form"), "context").prefetch_related(
        _DECISIONS, _LATEST_DELIVERIES)


# An approval's answer lists the votes that count (``Decision.objects.counting``): one a patch voided
# was listed too, and the inbox and the run page counted it ("1 of 2 approvals" that one more vote
# would not approve). The run's approval_voided event says votes lapsed; the admin shows them.
_COUNTED = Prefetch("decisions", queryset=Decision.objects.counting())
_DECISIONS = Prefetch("decisions", queryset=measured(measured(Decision.objects.counting(), "comment"), "data"))
# A list shows each approval's latest notifications (the approval's own answer shows all of them, up
# to the run's AOB_MAX_NOTIFICATIONS_PER_RUN, each error up to 2,000 characters).
LISTED_DELIVERIES = 5
_LATEST_DELIVERIES = Prefetch("deliveries", to_attr="latest_deliveries",
                              queryset=Delivery.objects.order_by("-created_at", "-id")[:LISTED_DELIVERIES])


def fill_page(approvals: list[Approval]) -> list[Approval]:
    """A page of ``approvals_listed`` with its values read while they fit one answer's budget
    (``AOB_DETAILS_MAX_BYTES``): the messages (what each asks), the approvers and whom it escalates to,
    the forms, the contexts, the latest notifications, then the decisions' comments and data; past it
    each is a marker linking to the approval, which answers it whole (``workflows.selectors.fill_within``;
    the approvers and notifications, read with the page, are measured here). Who can decide each
    (``fill_decidable``) is judged first, from the approvers whole. The instances are for answering,
    never for saving."""
    fill_decidable(approvals)
    page = Page(settings.AOB_DETAILS_MAX_BYTES)
    fill_within(approvals, "message", lambda approval: _href(approval.pk), page=page)
    for approval in approvals:
        for field in ("approvers", "escalate_to"):
            _within(approval, field, getattr(approval, field), page)
    for field in ("form", "context"):
        fill_within(approvals, field, lambda approval: _href(approval.pk), page=page)
    for approval in approvals:
        latest = sorted(approval.latest_deliveries, key=lambda d: (d.created_at, d.pk))  # type: ignore[attr-defined]
        _within(approval, "deliveries_shown", latest, page,
                size=json_size([[d.recipient, d.error] for d in latest]) + DELIVERY_FIELDS_BYTES * len(latest))
    decisions = [decision for approval in approvals for decision in approval.decisions.all()]
    for field in ("comment", "data"):
        fill_within(decisions, field, lambda decision: _href(decision.approval_id), page=page)
    return approvals


DELIVERY_FIELDS_BYTES = 250  # a notification's answer besides its recipient and error (names, times)


def _within(approval: Approval, field: str, value: object, page: Page, size: int | None = None) -> None:
    size = json_size(value) if size is None else size
    setattr(approval, field, value if page.fits(size) else left_out(size, _href(approval.pk)))


def _href(approval_id: int) -> str:
    return f"/api/v1/approvals/{approval_id}"


# Pending approvals of one node an ambiguous answer names (a loop's gate waits once a pass).
AMBIGUOUS_NAMED = 20


def approval_for_node(*, user: User, run: Run, node_id: str) -> Approval:
    """The visible approval of a run's node (the compatible way to name one): the one pending, else
    the newest (whose decision then says it is settled). A gate in a loop's body asks once a pass,
    and several may wait at once: naming the node is then ``ambiguous``, refused with their ids,
    never one of them picked for the person (the newest was, which may not be the one they read)."""
    theirs = approvals_visible(user=user).filter(run=run, node_id=node_id, kind=Approval.Kind.NODE)
    pending = list(theirs.filter(status=Approval.Status.PENDING).order_by("created_at", "pk")
                   .values_list("pk", flat=True)[:AMBIGUOUS_NAMED + 1])
    if len(pending) > 1:
        ids = pending[:AMBIGUOUS_NAMED]
        more = (f" and more (GET /api/v1/approvals?run={run.pk}&status=pending lists them)"
                if len(pending) > AMBIGUOUS_NAMED else "")
        raise AmbiguousNode(f"node {node_id!r} of run {run.pk} has {'more than ' if more else ''}{len(ids)} pending "
                            f"approvals (one a pass of its loop): {', '.join(map(str, ids))}{more}; decide one by its "
                            "id (POST /api/v1/approvals/{id}/decide)",
                            extra={"field": "node_id", "rule": "one_pending", "approval_ids": ids})
    approval = theirs.filter(pk=pending[0]).first() if pending else theirs.order_by("-created_at").first()
    if approval is None:
        raise ApprovalNotFound(f"no approval of node {node_id!r} in run {run.pk} that you can see (is it a gate, and "
                               "has it asked?)", extra={"field": "node_id"})
    return approval


def clock() -> datetime:
    """The database's time (``clock_timestamp()``): approvals' deadlines and reminders are set and
    judged by this one clock, as leases are, never a host's. The hosts' clocks may disagree: before,
    a deadline set on a worker's clock was judged on the web's and on beat's, and on a web host two
    minutes ahead a decision a minute before the deadline was refused and ``on_timeout`` applied."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        return cursor.fetchone()[0]


DUE_BATCH = 500  # what one beat tick takes of the due approvals (expiries, reminders); the rest next tick


def due_in_turns(due: QuerySet[Approval], when: str, batch: int = DUE_BATCH) -> QuerySet[Approval]:
    """At most ``batch`` of ``due``, in turns (``in_turns``): one owner's thousands of due gates
    cannot hold back another's, due earlier, for the whole of a beat task on the maintenance queue."""
    return in_turns(due, when)[:batch]


def in_turns(approvals: QuerySet[Approval], when: str) -> QuerySet[Approval]:
    """``approvals`` with their runs' owners in turn (each owner's first, then each one's second,
    ...), each owner's earliest ``when`` first (none: last), then by age."""
    return owners_in_turn(approvals, owner="run__owner_id",
                          order=[F(when).asc(nulls_last=True), F("created_at").asc(), F("pk").asc()])
